"""The von Mises-Fisher distribution on the unit sphere S^{d-1}, for C-SimCLR and C-BYOL.

Density, with ``nu = d/2 - 1`` and ``I_nu`` the modified Bessel function of the first kind::

    vMF(z; mu, kappa) = C_d(kappa) exp(kappa mu^T z),
    C_d(kappa) = kappa^nu / ((2 pi)^{d/2} I_nu(kappa)).

``log C_d`` comes from mpmath's arbitrary-precision ``besseli``: at the concentrations these losses
use (kappa up to 16384, d = 256) ``scipy.special.iv`` overflows and ``ive`` underflows for large d.

Sampler: Wood (1994) rejection sampling of ``w = mu^T z`` for the mean direction ``e_1``, a uniform
direction in the tangent space of ``e_1`` for the rest, then the Householder reflection that maps
``e_1`` onto ``mu``. The random draws do not depend on ``mu``, so the sample is differentiable with
respect to ``mu`` at fixed ``kappa`` (the reparameterisation the CEB losses rely on).

PyTorch core has no hyperspherical vMF: ``torch.distributions.VonMises`` is the 1-D circular one.
The CVR authors used TFP's ``tfd.VonMisesFisher``.
"""

import functools
import math
import numbers
from typing import Optional

import mpmath
import torch

# A private context, so that mpmath's global precision (which other code may change) does not
# matter; 30 digits leave ample margin for a float64 result.
_MP = mpmath.MPContext()
_MP.dps = 30
# Below mpmath's large-argument expansion, I_nu(kappa) is a power series that needs about kappa
# terms: more than mpmath's default cap (a few thousand) once d ~ 2048 and kappa ~ 1e4.
_MAX_SERIES_TERMS = 10**8


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
    return int(dim)


def _check_kappa(kappa: float) -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real) or not 0 < kappa < math.inf:
        raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
    return float(kappa)


@functools.lru_cache(maxsize=None)
def _log_bessel_i(nu: float, kappa: float) -> mpmath.mpf:
    return _MP.log(_MP.besseli(nu, kappa, maxterms=_MAX_SERIES_TERMS))


@functools.lru_cache(maxsize=None)
def _log_normalizer(dim: int, kappa: float) -> float:
    nu = dim / 2 - 1
    log_c = nu * _MP.log(kappa) - dim / 2 * _MP.log(2 * _MP.pi) - _log_bessel_i(nu, kappa)
    return float(log_c)


def log_normalizer(dim: int, kappa: float) -> float:
    """``log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)``.

    Accurate to float64 rounding (checked for d from 2 to 2048 and kappa from 1e-3 to 1e6). Cached
    per ``(dim, kappa)``; the first call for d ~ 2048 can take a fraction of a second.
    """
    return _log_normalizer(_check_dim(dim), _check_kappa(kappa))


@functools.lru_cache(maxsize=None)
def _mean_resultant_length(dim: int, kappa: float) -> float:
    nu = dim / 2 - 1
    return float(_MP.exp(_log_bessel_i(nu + 1, kappa) - _log_bessel_i(nu, kappa)))


def mean_resultant_length(dim: int, kappa: float) -> float:
    """``A_d(kappa) = E[mu^T z] = I_{d/2}(kappa) / I_{d/2-1}(kappa)`` for ``z ~ vMF(mu, kappa)``."""
    return _mean_resultant_length(_check_dim(dim), _check_kappa(kappa))


def _check_vectors(name: str, tensor: torch.Tensor) -> None:
    if tensor.dim() == 0 or tensor.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (..., d) with d >= 2, got {tuple(tensor.shape)}")


def log_prob(z: torch.Tensor, mu: torch.Tensor, kappa: float) -> torch.Tensor:
    """``log vMF(z; mu, kappa) = log C_d(kappa) + kappa <mu, z>``: ``(..., d), (..., d) -> (...)``.

    ``z`` and ``mu`` are unit vectors along the last dimension (not checked) and broadcast against
    each other. Half-precision inputs are computed in float32: both terms are of size ~kappa and
    largely cancel, and at kappa = 16384 bf16 rounding alone would cost ~kappa * 2^-8 = 64 nats.
    """
    _check_vectors("z", z)
    _check_vectors("mu", mu)
    if z.shape[-1] != mu.shape[-1]:
        raise ValueError(f"z {tuple(z.shape)} and mu {tuple(mu.shape)} differ in their last dimension")
    try:
        torch.broadcast_shapes(z.shape, mu.shape)
    except RuntimeError:
        raise ValueError(f"z {tuple(z.shape)} and mu {tuple(mu.shape)} do not broadcast") from None
    dtype = torch.promote_types(torch.promote_types(z.dtype, mu.dtype), torch.float32)
    cosine = (z.to(dtype) * mu.to(dtype)).sum(dim=-1)
    return log_normalizer(z.shape[-1], kappa) + kappa * cosine


def _sample_one_minus_w(
    n: int, dim: int, kappa: float, device: torch.device, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """``1 - w`` for ``n`` draws of ``w = mu^T z`` (Wood 1994), float64 ``(n,)``.

    Wood's proposal, with ``b = (d-1) / (2 kappa + sqrt(4 kappa^2 + (d-1)^2))`` and
    ``x0 = (1 - b) / (1 + b)``::

        eps ~ Beta((d-1)/2, (d-1)/2),   w = (1 - (1+b) eps) / (1 - (1-b) eps),
        accept if kappa w + (d-1) log(1 - x0 w) - kappa x0 - (d-1) log(1 - x0^2) >= log U.

    Everything is written in terms of ``1 - w`` and ``1 - x0``: at large kappa both w and x0 are
    close to 1, and ``kappa w - kappa x0`` would cancel terms of size kappa down to O(d).
    """
    m = dim - 1
    b = m / (2 * kappa + math.sqrt(4 * kappa**2 + m**2))  # not (-2 kappa + sqrt(...)) / (d-1): it cancels
    one_minus_x0 = 2 * b / (1 + b)
    x0 = 1 - one_minus_x0
    log_one_minus_x0_squared = math.log(one_minus_x0 * (1 + x0))
    one_minus_w = torch.empty(n, dtype=torch.float64, device=device)
    pending = torch.arange(n, device=device)
    while pending.numel():
        # (1 + t) / 2 ~ Beta((d-1)/2, (d-1)/2) for t the first coordinate of a uniform direction in
        # R^d; torch's own Beta sampler cannot take a generator.
        g = torch.randn(pending.numel(), dim, generator=generator, dtype=torch.float64, device=device)
        eps = (1 + g[:, 0] / torch.linalg.vector_norm(g, dim=1)) / 2
        candidate = 2 * b * eps / (1 - (1 - b) * eps)
        log_u = torch.rand(pending.numel(), generator=generator, dtype=torch.float64, device=device).log()
        log_ratio = kappa * (one_minus_x0 - candidate) + m * (
            torch.log(one_minus_x0 + x0 * candidate) - log_one_minus_x0_squared
        )
        accepted = log_ratio >= log_u
        one_minus_w[pending[accepted]] = candidate[accepted]
        pending = pending[~accepted]
    return one_minus_w


def _reflect_e1_onto(mu: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``H x`` row by row, for the Householder reflection ``H = I - 2 u u^T`` with ``H e_1 = mu``.

    ``u = (e_1 - mu) / ||e_1 - mu||``; ``(N, d), (N, d) -> (N, d)``. Rows with ``mu == e_1`` get
    ``u = 0``, i.e. ``H = I``.
    """
    e1 = torch.zeros_like(mu)
    e1[:, 0] = 1
    diff = e1 - mu
    norm = torch.linalg.vector_norm(diff, dim=1, keepdim=True)
    # Dividing by 1 where diff == 0 keeps NaN out of both the value and the gradient.
    u = diff / torch.where(norm > 0, norm, torch.ones_like(norm))
    return x - 2 * u * (u * x).sum(dim=1, keepdim=True)


def sample(mu: torch.Tensor, kappa: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``z ~ vMF(mu, kappa)`` row by row: ``(N, d) -> (N, d)`` unit vectors.

    ``mu`` holds unit mean directions (not checked). Returns float32, or float64 for float64 ``mu``.
    Draws on ``mu``'s device from ``generator``, or from torch's global RNG when it is None.
    Gradients flow to ``mu`` through the reflection only: ``w`` and the tangent direction do not
    depend on ``mu``.
    """
    if mu.dim() != 2 or mu.shape[1] < 2:
        raise ValueError(f"mu must have shape (N, d) with d >= 2, got {tuple(mu.shape)}")
    kappa = _check_kappa(kappa)
    dtype = torch.float64 if mu.dtype == torch.float64 else torch.float32
    mu = mu.to(dtype)
    n, dim = mu.shape
    one_minus_w = _sample_one_minus_w(n, dim, kappa, mu.device, generator)
    # sqrt(1 - w^2) from 1 - w, which keeps its relative precision when w is close to 1.
    radius = torch.sqrt(one_minus_w * (2 - one_minus_w)).to(dtype)
    tangent = torch.randn(n, dim - 1, generator=generator, dtype=dtype, device=mu.device)
    tangent = tangent / torch.linalg.vector_norm(tangent, dim=1, keepdim=True)
    around_e1 = torch.cat([(1 - one_minus_w).to(dtype)[:, None], radius[:, None] * tangent], dim=1)
    return _reflect_e1_onto(mu, around_e1)
