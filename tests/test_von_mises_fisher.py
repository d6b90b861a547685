"""vMF utilities (vissl_issl/losses/von_mises_fisher.py) against independent references: scipy's
vonmises_fisher and Bessel functions where they are finite, closed forms (d = 3) and the uniform
(Debye) asymptotics of I_nu for d up to 2048 and kappa up to 1e6; the sampler's moments,
distribution (KS against scipy's rvs), rotation, reproducibility and gradients; argument errors."""

import functools
import math
from typing import Tuple

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from vissl_issl.maths.von_mises_fisher import log_normalizer, log_prob, mean_resultant_length, sample

KAPPAS = [1.0, 10.0, 1024.0, 16384.0]


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def debye_log_bessel_i(nu: float, kappa: float) -> float:
    """log I_nu(kappa) from the uniform asymptotic expansion in 1/nu (DLMF 10.41.3), to u_3.

    The first omitted term is ~ u_4(t) / nu^4 < 1e-9 for nu >= 127, at any kappa.
    """
    x = kappa / nu
    root = math.sqrt(1 + x * x)
    t = 1 / root
    eta = root + math.log(x / (1 + root))
    u1 = (3 * t - 5 * t**3) / 24
    u2 = (81 * t**2 - 462 * t**4 + 385 * t**6) / 1152
    u3 = (30375 * t**3 - 369603 * t**5 + 765765 * t**7 - 425425 * t**9) / 414720
    series = 1 + u1 / nu + u2 / nu**2 + u3 / nu**3
    return nu * eta - 0.5 * math.log(2 * math.pi * nu) - 0.25 * math.log(1 + x * x) + math.log(series)


def log_normalizer_from(dim: int, kappa: float, log_bessel: float) -> float:
    return (dim / 2 - 1) * math.log(kappa) - dim / 2 * math.log(2 * math.pi) - log_bessel


# --- log_prob -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("d", [3, 10, 256])
def test_log_prob_matches_scipy_logpdf(d: int, kappa: float):
    mu = unit_vectors(1, d, seed=d)[0]
    dist = scipy.stats.vonmises_fisher(mu, kappa)
    # Points near the mode (scipy's own samples) and anywhere on the sphere.
    z = np.concatenate([dist.rvs(8, random_state=0), unit_vectors(8, d, seed=1)])
    expected = dist.logpdf(z)
    assert np.all(np.isfinite(expected))
    # The two terms are each of size ~kappa + |log C|; the result can be much smaller.
    scale = kappa + abs(log_normalizer(d, kappa))

    in_float64 = log_prob(torch.from_numpy(z), torch.from_numpy(mu), kappa)
    assert in_float64.dtype == torch.float64
    np.testing.assert_allclose(in_float64.numpy(), expected, rtol=0, atol=1e-12 * scale)

    in_float32 = log_prob(torch.from_numpy(z).float(), torch.from_numpy(mu).float(), kappa)
    assert in_float32.dtype == torch.float32 and in_float32.shape == (16,)
    np.testing.assert_allclose(in_float32.numpy(), expected, rtol=0, atol=1e-6 * scale)


def test_log_prob_broadcasts_to_pairwise_scores():
    z, mu = torch.from_numpy(unit_vectors(5, 8, seed=0)), torch.from_numpy(unit_vectors(3, 8, seed=1))
    pairwise = log_prob(z[:, None, :], mu[None, :, :], 10.0)
    assert pairwise.shape == (5, 3)
    torch.testing.assert_close(pairwise, log_normalizer(8, 10.0) + 10.0 * z @ mu.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_log_prob_of_half_precision_inputs_is_float32(dtype: torch.dtype):
    z = torch.from_numpy(unit_vectors(6, 256, seed=0)).to(dtype)
    mu = torch.from_numpy(unit_vectors(6, 256, seed=1)).to(dtype)
    kappa = 16384.0
    out = log_prob(z, mu, kappa)
    assert out.dtype == torch.float32
    # Off by float32 rounding at the scale of kappa, not by the kappa * 2^-8 (bf16) or kappa * 2^-11
    # (fp16) that a half-precision product would lose.
    expected = log_prob(z.double(), mu.double(), kappa)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5 * 2 * kappa)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert log_prob(z, mu, kappa).dtype == torch.float32
        assert log_prob(z.float(), mu.float(), kappa).dtype == torch.float32


# --- log_normalizer and mean_resultant_length -----------------------------------------------------

WIDE_KAPPAS = [1e-3, 0.5, 1.0, 10.0, 100.0, 1024.0, 16384.0, 1e5, 1e6]


@pytest.mark.parametrize("kappa", WIDE_KAPPAS)
def test_d3_matches_closed_forms(kappa: float):
    # C_3 = kappa / (4 pi sinh kappa), with log sinh k = k - log 2 + log(1 - e^-2k) (no overflow),
    # and A_3 = coth kappa - 1 / kappa.
    log_sinh = kappa - math.log(2) + math.log(-math.expm1(-2 * kappa))
    expected = math.log(kappa) - math.log(4 * math.pi) - log_sinh
    assert log_normalizer(3, kappa) == pytest.approx(expected, rel=1e-13, abs=1e-13)
    assert mean_resultant_length(3, kappa) == pytest.approx(1 / math.tanh(kappa) - 1 / kappa, rel=1e-8)


# scipy's exponentially scaled ive underflows to 0 for d = 256 at kappa = 1e-3 and for d = 2048 up to
# kappa ~ 100; those points are covered by test_large_d_matches_uniform_asymptotics.
SCIPY_FINITE = [
    (d, kappa)
    for d in (2, 3, 10, 64, 256, 2048)
    for kappa in WIDE_KAPPAS
    if scipy.special.ive(d / 2 - 1, kappa) > 1e-300
]


@pytest.mark.parametrize("d, kappa", SCIPY_FINITE)
def test_matches_scipy_bessel_where_it_is_finite(d: int, kappa: float):
    nu = d / 2 - 1
    scaled = scipy.special.ive(nu, kappa)
    expected = log_normalizer_from(d, kappa, math.log(scaled) + kappa)
    assert log_normalizer(d, kappa) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    ratio = scipy.special.ive(nu + 1, kappa) / scaled
    assert mean_resultant_length(d, kappa) == pytest.approx(ratio, rel=1e-11)


@pytest.mark.parametrize("kappa", [1e-3, 1.0, 10.0, 1024.0, 16384.0, 1e5, 1e6])
@pytest.mark.parametrize("d", [256, 2048])
def test_large_d_matches_uniform_asymptotics(d: int, kappa: float):
    nu = d / 2 - 1
    value = log_normalizer(d, kappa)
    assert math.isfinite(value)
    assert value == pytest.approx(log_normalizer_from(d, kappa, debye_log_bessel_i(nu, kappa)), rel=1e-12, abs=1e-9)
    ratio = math.exp(debye_log_bessel_i(nu + 1, kappa) - debye_log_bessel_i(nu, kappa))
    assert mean_resultant_length(d, kappa) == pytest.approx(ratio, rel=1e-8)


@pytest.mark.parametrize("kappa", [1.0, 10.0, 1024.0, 16384.0, 1e6])
@pytest.mark.parametrize("d", [3, 256, 2048])
def test_log_normalizer_decreases_with_slope_minus_mean_resultant_length(d: int, kappa: float):
    # d/dkappa log C_d = (d/2 - 1) / kappa - I'_nu / I_nu = -I_{nu+1} / I_nu = -A_d(kappa) < 0.
    h = 1e-4 * kappa
    slope = (log_normalizer(d, kappa + h) - log_normalizer(d, kappa - h)) / (2 * h)
    assert slope == pytest.approx(-mean_resultant_length(d, kappa), rel=1e-5)


def test_mean_resultant_length_reproduces_the_spec_sanity_numbers():
    assert [round(mean_resultant_length(256, kappa), 3) for kappa in (10, 1024, 16384)] == [0.039, 0.883, 0.992]


# --- sample ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, out_dtype, tol",
    [(torch.float16, torch.float32, 1e-6), (torch.float32, torch.float32, 1e-6), (torch.float64, torch.float64, 1e-13)],
)
@pytest.mark.parametrize("d, kappa", [(2, 1.0), (3, 1e-3), (256, 16384.0), (2048, 1e-3), (2048, 1e6)])
def test_samples_are_unit_vectors(d: int, kappa: float, dtype: torch.dtype, out_dtype: torch.dtype, tol: float):
    z = sample(torch.from_numpy(unit_vectors(128, d, seed=0)).to(dtype), kappa, torch.Generator().manual_seed(0))
    assert z.dtype == out_dtype and z.shape == (128, d)
    norms = torch.linalg.vector_norm(z.double(), dim=1)
    torch.testing.assert_close(norms, torch.ones(128, dtype=torch.float64), rtol=0, atol=tol)


def assert_mean_within(values: np.ndarray, expected: float, standard_errors: float = 5.0) -> None:
    error = abs(values.mean() - expected)
    assert error <= standard_errors * values.std() / math.sqrt(len(values)), (values.mean(), expected)


@pytest.mark.parametrize("d, kappa", [(2, 1.0), (3, 1e-3), (2048, 1e-3), (2048, 16384.0), (2048, 1e6)])
def test_mean_cosine_matches_mean_resultant_length_at_the_extremes(d: int, kappa: float):
    mu = torch.from_numpy(unit_vectors(2000, d, seed=1))
    z = sample(mu, kappa, torch.Generator().manual_seed(0))
    assert_mean_within((z * mu).sum(dim=1).numpy(), mean_resultant_length(d, kappa))


@functools.lru_cache(maxsize=None)
def cosines(d: int, kappa: float, n: int = 10000) -> Tuple[np.ndarray, np.ndarray]:
    """mu^T z for n of our (float32) samples and n of scipy's, around one random non-axis mu."""
    mu = unit_vectors(1, d, seed=d)[0]
    ours = sample(torch.from_numpy(mu).float().expand(n, d), kappa, torch.Generator().manual_seed(0))
    theirs = scipy.stats.vonmises_fisher(mu, kappa).rvs(n, random_state=0)
    return ours.double().numpy() @ mu, theirs @ mu


@pytest.mark.parametrize("kappa", [10.0, 1024.0, 16384.0])
def test_mean_cosine_matches_mean_resultant_length_and_scipy_rvs(kappa: float):
    ours, theirs = cosines(256, kappa)
    expected = mean_resultant_length(256, kappa)
    assert_mean_within(ours, expected)
    assert_mean_within(theirs, expected)


@pytest.mark.parametrize("d, kappa", [(3, 10.0), (256, 10.0), (256, 1024.0), (256, 16384.0)])
def test_cosine_distribution_matches_scipy_rvs(d: int, kappa: float):
    ours, theirs = cosines(d, kappa)
    assert scipy.stats.ks_2samp(ours, theirs).pvalue > 1e-3


def test_samples_are_rotated_onto_each_rows_mean():
    d, kappa, n = 5, 10.0, 40000
    means = unit_vectors(2, d, seed=3)
    # Interleaved rows, so that a mix-up between rows would show.
    mu = torch.from_numpy(means[np.arange(2 * n) % 2])
    z = sample(mu, kappa, torch.Generator().manual_seed(0)).numpy()
    length = mean_resultant_length(d, kappa)
    for group, mean in enumerate(means):
        zg = z[group::2]
        for axis in range(d):
            assert_mean_within(zg[:, axis], length * mean[axis])
        # The part of z orthogonal to mu is isotropic in the tangent space:
        # E[t t^T] = (1 - E[w^2]) / (d - 1) (I - mu mu^T).
        w = zg @ mean
        tangent = zg - w[:, None] * mean
        projector = np.eye(d) - np.outer(mean, mean)
        covariance = (1 - np.mean(w**2)) / (d - 1) * projector
        products = tangent[:, :, None] * tangent[:, None, :]
        standard_error = products.std(axis=0) / math.sqrt(n)
        assert np.all(np.abs(products.mean(axis=0) - covariance) <= 5 * standard_error + 1e-12)


def test_mean_at_plus_and_minus_e1_samples_without_nan():
    d, kappa, n = 8, 10.0, 4000
    e1 = torch.zeros(d, dtype=torch.float64)
    e1[0] = 1
    mu = torch.stack([e1, -e1]).repeat(n, 1).requires_grad_()
    z = sample(mu, kappa, torch.Generator().manual_seed(0))
    (z * torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=z.dtype)).sum().backward()
    assert torch.isfinite(z).all() and torch.isfinite(mu.grad).all()
    torch.testing.assert_close(torch.linalg.vector_norm(z, dim=1), torch.ones(2 * n, dtype=torch.float64))
    length = mean_resultant_length(d, kappa)
    assert_mean_within(z[0::2, 0].detach().numpy(), length)
    assert_mean_within(z[1::2, 0].detach().numpy(), -length)


def test_sample_is_reproducible_from_a_generator_or_the_global_seed():
    mu = torch.from_numpy(unit_vectors(64, 16, seed=0)).float()
    first = sample(mu, 100.0, torch.Generator().manual_seed(1))
    assert torch.equal(first, sample(mu, 100.0, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, sample(mu, 100.0, torch.Generator().manual_seed(2)))
    torch.manual_seed(3)
    first = sample(mu, 100.0)
    torch.manual_seed(3)
    assert torch.equal(first, sample(mu, 100.0))


@pytest.mark.parametrize("kappa", [10.0, 16384.0])
def test_gradient_matches_finite_differences_at_a_fixed_seed(kappa: float):
    # The draws depend on the seed only, so z(mu) is a smooth function: the reparameterisation.
    mu = torch.from_numpy(unit_vectors(3, 4, seed=5)).requires_grad_()

    def draw(means: torch.Tensor) -> torch.Tensor:
        return sample(means, kappa, torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(draw, (mu,), eps=1e-6, atol=1e-7, rtol=1e-6)
    assert torch.autograd.functional.jacobian(draw, mu).abs().sum() > 0


# --- errors ---------------------------------------------------------------------------------------

UNIT = torch.eye(3)[:2]
BAD_CALLS = {
    "dim 1": (lambda: log_normalizer(1, 1.0), "dim"),
    "dim float": (lambda: log_normalizer(3.0, 1.0), "dim"),
    "dim bool": (lambda: mean_resultant_length(True, 1.0), "dim"),
    "kappa 0": (lambda: log_normalizer(3, 0.0), "kappa"),
    "kappa negative": (lambda: mean_resultant_length(3, -1.0), "kappa"),
    "kappa inf": (lambda: log_normalizer(3, math.inf), "kappa"),
    "kappa nan": (lambda: mean_resultant_length(3, math.nan), "kappa"),
    "log_prob last dims": (lambda: log_prob(torch.zeros(4, 3), torch.zeros(4, 5), 1.0), r"\(4, 3\).*\(4, 5\)"),
    "log_prob batch dims": (lambda: log_prob(torch.zeros(4, 3), torch.zeros(5, 3), 1.0), r"\(4, 3\).*\(5, 3\)"),
    "log_prob scalar z": (lambda: log_prob(torch.zeros(()), torch.zeros(3), 1.0), r"z must .*\(\)"),
    "log_prob d 1": (lambda: log_prob(torch.zeros(4, 3), torch.zeros(4, 1), 1.0), r"mu must .*\(4, 1\)"),
    "log_prob kappa": (lambda: log_prob(UNIT, UNIT, 0.0), "kappa"),
    "sample 1-d mu": (lambda: sample(torch.zeros(3), 1.0), r"mu must .*\(3,\)"),
    "sample 3-d mu": (lambda: sample(torch.zeros(2, 3, 4), 1.0), r"mu must .*\(2, 3, 4\)"),
    "sample d 1": (lambda: sample(torch.zeros(4, 1), 1.0), r"mu must .*\(4, 1\)"),
    "sample kappa negative": (lambda: sample(UNIT, -5.0), "kappa"),
    "sample kappa nan": (lambda: sample(UNIT, math.nan), "kappa"),
}


@pytest.mark.parametrize("name", BAD_CALLS)
def test_bad_arguments_raise_value_error_naming_them(name: str):
    call, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        call()
