"""w_mse_loss and its Cholesky whitening against independent float64 transcriptions of the W-MSE
spec (compression_ssl.md §C.1, §C.5): identity covariance per group, the shrinkage formula, loss
values and gradients, shape and config errors, per-rank whitening on 2 gloo ranks, and AMP input."""

import itertools
import re
from typing import Dict, List

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.launcher import compose

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
from classy_vision.losses import build_loss
from ddp import assert_matches, ddp_loss_and_grads, loss_and_grads, run_on_ranks
from torch import nn

from vissl_issl.config import ConfigError
from vissl_issl.losses.w_mse import WMSELoss
from vissl_issl.maths.whitening import whiten

EMB, W_SIZE, BATCH = 4, 10, 20  # two whitening groups of 10 images, 4-d embeddings


def build(**params) -> WMSELoss:
    config = {"w_size": W_SIZE, "w_iter": 1, "w_eps": 0.0, "normalize": True, "num_samples": 2, "embedding_dim": EMB}
    return build_loss({"name": "w_mse_loss", **config, **params})


def correlated(*shape: int, seed: int = 0) -> torch.Tensor:
    """float64 samples ``(..., e)`` with a non-identity covariance and a non-zero mean."""
    generator = torch.Generator().manual_seed(seed)
    dim = shape[-1]
    mix = torch.randn(dim, dim, generator=generator, dtype=torch.float64) + 2 * torch.eye(dim, dtype=torch.float64)
    offset = 3 * torch.randn(dim, generator=generator, dtype=torch.float64)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) @ mix + offset


def embeddings(num_samples: int, seed: int = 0) -> torch.Tensor:
    """``(num_samples * BATCH, EMB)`` view-major: each view is the image's embedding plus noise."""
    images = correlated(1, BATCH, EMB, seed=seed)
    noise = correlated(num_samples, BATCH, EMB, seed=seed + 100) * 0.5
    return (images + noise).reshape(-1, EMB)


def sample_covariance(z: np.ndarray) -> np.ndarray:
    return np.cov(z, rowvar=False, ddof=1)


# 1. whitening ---------------------------------------------------------------------------------


def test_whitened_groups_have_identity_covariance():
    # Groups with very different means and scales: each must be whitened with its own statistics.
    groups = torch.stack([correlated(12, EMB, seed=g) * (1 + 3 * g) for g in range(3)]).float()
    white = whiten(groups)
    assert white.shape == groups.shape and white.dtype == torch.float32
    for z in white.double().numpy():
        np.testing.assert_allclose(z.mean(axis=0), np.zeros(EMB), atol=1e-5)
        np.testing.assert_allclose(sample_covariance(z), np.eye(EMB), atol=1e-4)


def test_shrinkage_gives_the_predicted_non_identity_covariance():
    eps = 0.3
    groups = torch.stack([correlated(12, EMB, seed=g) for g in range(3)])
    white = whiten(groups.float(), eps).double().numpy()
    for x, z in zip(groups.numpy(), white):
        s = sample_covariance(x)
        factor = scipy.linalg.cholesky((1 - eps) * s + eps * np.eye(EMB), lower=True)
        # cov(z) = L^-1 S L^-T
        left = scipy.linalg.solve_triangular(factor, s, lower=True)
        predicted = scipy.linalg.solve_triangular(factor, left.T, lower=True)
        assert np.abs(predicted - np.eye(EMB)).max() > 0.05  # shrinkage visibly breaks whiteness here
        np.testing.assert_allclose(sample_covariance(z), predicted, atol=1e-4)
        expected_z = scipy.linalg.solve_triangular(factor, (x - x.mean(axis=0)).T, lower=True).T
        np.testing.assert_allclose(z, expected_z, atol=1e-4)


# 2. the loss against §C.1 ------------------------------------------------------------------------


def whiten_transcription(x: torch.Tensor, eps: float) -> torch.Tensor:
    """One group ``(n, e)`` of one view, float64: ``z_n = W (h_n - mu)``, ``W = cholesky(S_eps)^-1``."""
    mu = x.mean(dim=0)
    s = sum(torch.outer(h - mu, h - mu) for h in x) / (len(x) - 1)
    s = (1 - eps) * s + eps * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.inv(torch.linalg.cholesky(s))
    return torch.stack([w @ (h - mu) for h in x])


def distance(a: torch.Tensor, b: torch.Tensor, normalize: bool) -> torch.Tensor:
    if normalize:
        return 2 - 2 * (a @ b) / (a.norm() * b.norm())
    return ((a - b) ** 2).sum() / len(a)  # F.mse_loss averages over the embedding too


def w_mse_transcription(h, num_samples, w_size, w_iter, w_eps, normalize) -> torch.Tensor:
    """§C.1 one iteration, group, view and pair at a time, float64; one ``randperm`` per iteration."""
    h = h.double()
    batch = len(h) // num_samples
    views = [h[k * batch : (k + 1) * batch] for k in range(num_samples)]
    pairs = list(itertools.combinations(range(num_samples), 2))
    total = 0
    for _ in range(w_iter):
        perm = torch.randperm(batch).tolist()
        white: List[Dict[int, torch.Tensor]] = [{} for _ in views]
        for start in range(0, batch, w_size):
            members = perm[start : start + w_size]  # the same images for every view
            for k, view in enumerate(views):
                for image, z in zip(members, whiten_transcription(view[members], w_eps)):
                    white[k][image] = z
        for first, second in pairs:
            total = total + sum(distance(white[first][n], white[second][n], normalize) for n in range(batch)) / batch
    return total / (w_iter * len(pairs))


CASES = [
    dict(num_samples=n, w_iter=it, normalize=norm, w_eps=0.0)
    for n, it, norm in itertools.product([2, 4], [1, 3], [True, False])
] + [dict(num_samples=2, w_iter=3, normalize=True, w_eps=0.2)]


def case_id(case) -> str:
    return "views{num_samples}-iter{w_iter}-norm{normalize}-eps{w_eps}".format(**case)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_loss_matches_float64_transcription(case):
    h = embeddings(case["num_samples"])
    torch.manual_seed(7)
    value = build(**case)(h.float(), None)
    torch.manual_seed(7)
    expected = w_mse_transcription(h, w_size=W_SIZE, **case)
    assert value.dtype == torch.float32 and value.shape == ()
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    # The partition matters, so the seeded comparison above did check it: another one differs.
    torch.manual_seed(8)
    assert not torch.isclose(w_mse_transcription(h, w_size=W_SIZE, **case), expected, rtol=1e-4)


# 3. gradients through the Cholesky ------------------------------------------------------------


@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[-1]], ids=case_id)
def test_loss_gradient_matches_float64_transcription(case):
    h = embeddings(case["num_samples"], seed=3)
    h32 = h.float().requires_grad_()
    h64 = h.clone().requires_grad_()
    torch.manual_seed(11)
    build(**case)(h32, None).backward()
    torch.manual_seed(11)
    w_mse_transcription(h64, w_size=W_SIZE, **case).backward()
    scale = h64.grad.abs().max()
    assert scale > 0
    torch.testing.assert_close(h32.grad.double(), h64.grad, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_whitening_gradient_matches_float64_transcription(eps):
    x = torch.stack([correlated(8, 3, seed=g) for g in range(2)])
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x32 = x.float().requires_grad_()
    (whiten(x32, eps).double() * upstream).sum().backward()

    def reference(groups):
        return torch.stack([whiten_transcription(group, eps) for group in groups])

    x64 = x.clone().requires_grad_()
    # The reference's own gradient is checked by finite differences, then the fp32 one against it.
    assert torch.autograd.gradcheck(reference, (x64,))
    (reference(x64) * upstream).sum().backward()
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-4, atol=1e-4 * x64.grad.abs().max())


# 4. errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(2 * 12, EMB), (2 * BATCH, EMB + 1), (2 * BATCH + 1, EMB), (2 * BATCH * EMB,)],
    ids=["batch-not-multiple-of-w_size", "wrong-embedding-dim", "rows-not-multiple-of-views", "1-d"],
)
def test_bad_embedding_shape_names_shape_and_w_size(shape):
    with pytest.raises(ValueError, match=re.escape(str(tuple(shape)))) as error:
        build()(torch.randn(*shape), None)
    assert f"w_size={W_SIZE}" in str(error.value) and f"embedding_dim) = (2 * B, {EMB})" in str(error.value)


@pytest.mark.parametrize("w_size", [EMB, EMB - 1])
def test_w_size_must_exceed_embedding_dim(w_size):
    with pytest.raises(ConfigError, match=r"config\.LOSS\.w_mse_loss\.w_size"):
        build(w_size=w_size)


def test_unknown_loss_key_is_named():
    with pytest.raises(ConfigError, match=r"config\.LOSS\.w_mse_loss\.eps"):
        build(eps=0.1)  # the authors' flag name, not this loss's w_eps


def test_uninferred_num_samples_is_named():
    with pytest.raises(ConfigError, match=r"config\.LOSS\.w_mse_loss\.num_samples"):
        build(num_samples=None)


# 4b. config inference (the launcher's compose runs WMSELoss.infer_config) ----------------------

DIGITS = "config=pretrain/w_mse/w_mse_resnet18_digits"
FOUR_VIEWS = "config.DATA.TRAIN.TRANSFORMS=[{name:ImgReplicatePil,num_times:4},{name:ToTensor}]"


def last_head_dim(params) -> int:
    """The last ``dims`` entry of the last module of ``MODEL.HEAD.PARAMS``, however nested."""
    module = params
    while isinstance(module[-1], (list, tuple)):
        module = module[-1]
    return int(module[-1]["dims"][-1])


@pytest.fixture(scope="module")
def digits():
    return compose([DIGITS])[1]


def test_digits_config_infers_views_and_embedding_dim_and_builds_a_working_loss(digits):
    block = digits.LOSS.w_mse_loss
    assert digits.LOSS.name == "w_mse_loss"
    assert block.embedding_dim == last_head_dim(digits.MODEL.HEAD.PARAMS)
    assert block.num_samples == 2
    batch = digits.DATA.TRAIN.BATCHSIZE_PER_REPLICA
    loss = build_loss({"name": "w_mse_loss", **block})
    value = loss(torch.randn(block.num_samples * batch, block.embedding_dim), None)
    assert torch.isfinite(value)


@pytest.mark.parametrize("transforms,views", [([], 2), ([FOUR_VIEWS], 4)], ids=["digits-crops", "replicate-4"])
def test_num_samples_is_inferred_from_the_transforms(transforms, views):
    config = compose([DIGITS, "config.LOSS.w_mse_loss.num_samples=null", *transforms])[1]
    assert config.LOSS.w_mse_loss.num_samples == views


def test_bad_batch_size_names_the_key(digits):
    w_size = digits.LOSS.w_mse_loss.w_size
    compose([DIGITS, f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={3 * w_size}"])  # a multiple is fine
    with pytest.raises(ConfigError, match=r"config\.DATA\.TRAIN\.BATCHSIZE_PER_REPLICA") as error:
        compose([DIGITS, f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={3 * w_size + w_size // 2}"])
    assert f"w_size={w_size}" in str(error.value)


def test_bad_config_names_the_key(digits):
    dim = last_head_dim(digits.MODEL.HEAD.PARAMS)
    bad = [
        (f"config.LOSS.w_mse_loss.w_size={dim}", r"config\.LOSS\.w_mse_loss\.w_size"),
        ("config.DATA.TRAIN.DROP_LAST=false", r"config\.DATA\.TRAIN\.DROP_LAST"),
        ("config.LOSS.w_mse_loss.num_samples=4", r"config\.LOSS\.w_mse_loss\.num_samples"),
        (f"config.LOSS.w_mse_loss.embedding_dim={dim + 1}", r"config\.LOSS\.w_mse_loss\.embedding_dim"),
        ("++config.LOSS.w_mse_loss.eps=0.1", r"config\.LOSS\.w_mse_loss\.eps"),
    ]
    for override, key in bad:
        with pytest.raises(ConfigError, match=key):
            compose([DIGITS, override])


# 5. two gloo ranks: each whitens its own batch -------------------------------------------------

RANK_BATCH, WORLD_SIZE, IN_DIM = 8, 2, 6  # w_size = RANK_BATCH > EMB: one group per rank


def make_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(IN_DIM, EMB)


def make_features() -> torch.Tensor:
    """``(2 views, all images, IN_DIM)``."""
    images = torch.randn(1, RANK_BATCH * WORLD_SIZE, IN_DIM, generator=torch.Generator().manual_seed(1))
    return images + 0.5 * torch.randn(2, RANK_BATCH * WORLD_SIZE, IN_DIM, generator=torch.Generator().manual_seed(2))


def rows_of_rank(rank: int) -> torch.Tensor:
    """This rank's images of both views, view-major ``(2 * RANK_BATCH, IN_DIM)``."""
    start = rank * RANK_BATCH
    return make_features()[:, start : start + RANK_BATCH].reshape(-1, IN_DIM)


def per_rank_loss():
    loss = build(w_size=RANK_BATCH)
    return lambda out: loss(out, None)


def ranks_work(rank: int):
    return ddp_loss_and_grads(make_model(), rows_of_rank(rank), per_rank_loss())


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    return run_on_ranks(ranks_work, tmp_path_factory.mktemp("w_mse_ddp"), WORLD_SIZE)


def whole_batch(objective):
    assert not dist.is_initialized()
    return loss_and_grads(make_model(), make_features().reshape(-1, IN_DIM), objective)


def mean_of_halves(out: torch.Tensor) -> torch.Tensor:
    """One process: the mean over ranks' images of the loss whitening each rank's half separately."""
    views = out.view(2, RANK_BATCH * WORLD_SIZE, EMB)
    loss = per_rank_loss()
    halves = [views[:, r * RANK_BATCH : (r + 1) * RANK_BATCH].reshape(-1, EMB) for r in range(WORLD_SIZE)]
    return sum(loss(half) for half in halves) / WORLD_SIZE


def test_ddp_equals_one_process_whitening_each_half(rank_results):
    expected = whole_batch(mean_of_halves)
    for result in rank_results:
        assert_matches(result, expected, "mean_value")


def test_whitening_the_whole_batch_as_one_group_differs(rank_results):
    one_group = build(w_size=RANK_BATCH * WORLD_SIZE)
    joint = whole_batch(lambda out: one_group(out, None))
    assert not torch.isclose(joint["value"], rank_results[0]["mean_value"], rtol=1e-3)
    assert not torch.allclose(joint["grads"][0], rank_results[0]["grads"][0], rtol=1e-3, atol=1e-5)


# 6. AMP-like input ---------------------------------------------------------------------------


def test_half_embeddings_give_a_float32_loss_close_to_float32():
    h = embeddings(2).float()
    loss = build(w_iter=2)
    torch.manual_seed(3)
    full = loss(h, None)
    half = h.half().requires_grad_()
    torch.manual_seed(3)
    value = loss(half, None)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, full, rtol=1e-2, atol=1e-3)
    value.backward()
    assert half.grad.dtype == torch.float16 and torch.isfinite(half.grad).all()


def test_loss_inside_autocast_still_whitens_in_float32():
    # VISSL's standard_train_step computes the loss inside torch.cuda.amp.autocast(); CPU bf16
    # autocast downcasts matmuls the same way. "Whitening is fp32 whatever the AMP setting."
    h = embeddings(2).float()
    loss = build(w_iter=2)
    torch.manual_seed(3)
    full = loss(h, None)
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(h, None)
        white = whiten(h.view(2, BATCH, EMB)[:, :W_SIZE])
    assert value.dtype == torch.float32
    for z in white.double().numpy():
        np.testing.assert_allclose(sample_covariance(z), np.eye(EMB), atol=1e-4)
    torch.testing.assert_close(value, full, rtol=1e-5, atol=1e-6)
