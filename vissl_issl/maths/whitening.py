"""Batch whitening through a Cholesky factor (W-MSE's ``Whitening2d`` without running statistics)."""

import torch


def whiten(groups: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Whiten each group of samples: ``(G, n, e) -> (G, n, e)``, in fp32.

    Per group, with ``mu`` the mean and ``S = (1 / (n - 1)) sum_i (h_i - mu)(h_i - mu)^T``::

        S_eps = (1 - eps) S + eps I,   L = cholesky(S_eps),   z_i = L^-1 (h_i - mu)

    so the ``z`` of a group have identity (unbiased) covariance when ``eps = 0``. Gradients flow
    through ``mu``, ``S`` and the factorisation. Cholesky in half precision is unstable, hence fp32,
    autocast or not.
    """
    # VISSL computes the loss inside autocast, which would run the covariance product in half precision.
    with torch.autocast(device_type=groups.device.type, enabled=False):
        groups = groups.float()
        centered = groups - groups.mean(dim=1, keepdim=True)
        covariance = centered.transpose(1, 2) @ centered / (groups.shape[1] - 1)
        if eps:
            identity = torch.eye(groups.shape[2], device=groups.device)
            covariance = (1 - eps) * covariance + eps * identity
        factor = torch.linalg.cholesky(covariance)
        return torch.linalg.solve_triangular(factor, centered.transpose(1, 2), upper=False).transpose(1, 2)
