"""The lossyless compressor's code and its rate (Dubois et al. 2021, spec A.2) on feature vectors,
in plain PyTorch: the module that VIC, BINCE, the feature compressor (through the VISSL head
``entropy_bottleneck``), the compressor API and the banana example share.

On features ``x`` ``(N, in_dim)``::

    z = W x + c                      the encoder's last layer; z = x when in_dim == z_dim
    z_in = (z + b) * exp(s)          learned per-dimension affine map, s = 1 and b = 0 at init
    z_hat_in, bits = R(z_in)         :class:`~vissl_issl.maths.rate.Rate`, in bits per row
    z_hat = z_hat_in * exp(-s) - b

``s`` sets each dimension's quantisation step (``exp(-s)`` in z units; e^-1 at init, as in
lossyless). ``R`` adds uniform noise in training and rounds in evaluation, so ``z_hat`` is what
the receiver gets. Everything runs in fp32 with autocast off, so that :meth:`codes` outside
autocast (the coders) gives the codes the model was trained on.
"""

from typing import List, Tuple

import torch
from torch import Tensor, nn

from vissl_issl.maths.rate import FactorizedRate, HyperpriorRate

PRIORS = {"factorized": FactorizedRate, "hyperprior": HyperpriorRate}


class EntropyBottleneck(nn.Module):
    """``prior``: ``"factorized"`` (lossyless ``H_factorized``) or ``"hyperprior"`` (``H_hyper``)."""

    def __init__(self, in_dim: int, z_dim: int, prior: str = "factorized"):
        super().__init__()
        if not all(isinstance(d, int) and d > 0 for d in (in_dim, z_dim)):
            raise ValueError(f"EntropyBottleneck needs positive integer dims, got in_dim={in_dim}, z_dim={z_dim}")
        if prior not in PRIORS:
            raise ValueError(f"EntropyBottleneck prior must be one of {sorted(PRIORS)}, got prior={prior!r}")
        self.encoder = nn.Linear(in_dim, z_dim) if in_dim != z_dim else nn.Identity()
        self.log_scale = nn.Parameter(torch.ones(z_dim))
        self.shift = nn.Parameter(torch.zeros(z_dim))
        self.rate = PRIORS[prior](z_dim)

    @property
    def z_dim(self) -> int:
        return len(self.shift)

    def forward(self, features: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(N, in_dim)`` -> ``z_hat`` ``(N, D)``, ``z`` ``(N, D)``, ``bits`` ``(N,)``, fp32."""
        with torch.autocast(features.device.type, enabled=False):
            z = self.codes(features)
            z_hat_in, bits = self.rate(self._to_rate(z))
            return self._from_rate(z_hat_in), z, bits

    def aux_loss(self) -> Tensor:
        """CompressAI's quantile loss (:meth:`Rate.aux_loss`), fp32: trains only the ``quantiles``."""
        with torch.autocast(self.shift.device.type, enabled=False):
            return self.rate.aux_loss()

    def codes(self, features: Tensor) -> Tensor:
        """``(N, in_dim)`` -> ``z`` ``(N, D)``, fp32, before quantisation."""
        with torch.autocast(features.device.type, enabled=False):
            return self.encoder(features.float())

    @torch.no_grad()
    def compress(self, features: Tensor) -> List[bytes]:
        """``(N, in_dim)`` -> one record per row; needs :meth:`update` after the last training step."""
        return self.rate.compress(self._to_rate(self.codes(features)))

    @torch.no_grad()
    def decompress(self, records: List[bytes]) -> Tensor:
        """Records -> ``z_hat`` ``(N, D)``, fp32: exactly the evaluation forward's ``z_hat``."""
        return self._from_rate(self.rate.decompress(records))

    def update(self) -> None:
        """Builds the range coder's tables (:meth:`Rate.update`)."""
        self.rate.update()

    def _to_rate(self, z: Tensor) -> Tensor:
        return (z + self.shift) * torch.exp(self.log_scale)

    def _from_rate(self, z_hat_in: Tensor) -> Tensor:
        return z_hat_in * torch.exp(-self.log_scale) - self.shift
