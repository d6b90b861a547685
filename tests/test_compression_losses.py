"""The lossyless compressors (compression_ssl.md §A): each distortion and loss against a float64
transcription of its equation, BINCE against VISSL's SimCLR, the learned temperature, the rate-weight
annealing and its hook, DDP equivalence, config errors, the canonical-image collator, and training
through the plugin launcher."""

import math
from types import SimpleNamespace
from typing import Dict, List

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.heads.bince_projection import BinceProjection
from vissl_issl.plugin.heads.image_decoder import ImageDecoder, pyramid_depth
from vissl_issl.plugin.hooks import hook_generator
from vissl_issl.plugin.hooks.rate_weight_annealing import RateWeightAnnealingHook, rate_weight
from vissl_issl.plugin.launcher import compose

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from classy_vision.generic.distributed_util import set_cpu_device
from classy_vision.losses import build_loss
from ddp import assert_matches, ddp_loss_and_grads, loss_and_grads, run_on_ranks
from PIL import Image
from torch import nn
from vissl.config import AttrDict
from vissl.data.collators import get_collator
from vissl.data.ssl_transforms import get_transform
from vissl.losses.simclr_info_nce_loss import SimclrInfoNCELoss

from conftest import logged
from vissl_issl.architectures.packed_outputs import pack_decoder, pack_projection, split_projection
from vissl_issl.config import ConfigError
from vissl_issl.losses import distortion
from vissl_issl.losses.compression import BINCELoss, min_temperature_clamp, paper_beta

BINCE_DIGITS = "pretrain/bince/bince_resnet18_digits"
VIC_DIGITS = "pretrain/vic/vic_resnet18_digits"
LN2 = math.log(2)


@pytest.fixture(autouse=True)
def cpu_device():
    set_cpu_device()  # VISSL's SimCLR criterion moves its masks to the GPU otherwise


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def sigmoid64(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# 1. distortions, row by row in float64 ---------------------------------------------------------


def test_gaussian_reconstruction_is_the_authors_summed_squared_error_of_the_sigmoid():
    logits, target = randn(3, 2, 4, 4, seed=1) * 3, rand(3, 2, 4, 4, seed=2)
    values = distortion.gaussian_reconstruction(logits, target)
    assert values.shape == (3,) and values.dtype == torch.float32
    for n in range(3):
        expected = sum(
            (sigmoid64(logit) - t) ** 2 for logit, t in zip(logits[n].flatten().tolist(), target[n].flatten().tolist())
        )
        assert values[n].item() == pytest.approx(expected, rel=1e-5)
    # = -log N(x; sigmoid(l), 1/2) - (CHW / 2) log(pi): a Gaussian of variance 1/2, per row.
    gaussian = torch.distributions.Normal(torch.sigmoid(logits.double()), math.sqrt(0.5))
    nll = -gaussian.log_prob(target.double()).flatten(1).sum(1) - 32 / 2 * math.log(math.pi)
    torch.testing.assert_close(values.double(), nll, rtol=1e-5, atol=1e-5)


def test_bernoulli_reconstruction_on_binary_targets_is_the_summed_bce():
    logits, target = randn(4, 1, 5, 5, seed=3) * 4, (rand(4, 1, 5, 5, seed=4) > 0.5).float()
    values = distortion.bernoulli_reconstruction(logits, target)
    for n in range(4):
        expected = -sum(
            math.log(sigmoid64(logit)) if t == 1 else math.log(1 - sigmoid64(logit))
            for logit, t in zip(logits[n].flatten().tolist(), target[n].flatten().tolist())
        )
        assert values[n].item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(values.sum(), F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))


def test_feature_l1_sums_absolute_differences_over_dimensions():
    z_hat, z = randn(5, 7, seed=5), randn(5, 7, seed=6)
    values = distortion.feature_l1(z_hat, z)
    for n in range(5):
        assert values[n].item() == pytest.approx(
            sum(abs(a - b) for a, b in zip(z_hat[n].tolist(), z[n].tolist())), rel=1e-6
        )


def test_distortions_name_shape_mismatches():
    with pytest.raises(ValueError, match="gaussian_reconstruction"):
        distortion.gaussian_reconstruction(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="info_nce got embeddings of shape"):
        distortion.info_nce(torch.zeros(3, 4), torch.tensor(0.1))


def info_nce_transcription(e: torch.Tensor, tau: float) -> List[float]:
    """Per anchor k of view-major (2B, P): -log exp(c_k,pos / tau) / sum_{j != k} exp(c_kj / tau), float64."""
    e = F.normalize(e.double(), dim=1)
    n = len(e)
    values = []
    for k in range(n):
        logits = [(e[k] @ e[j]).item() / tau for j in range(n) if j != k]
        positive = (e[k] @ e[(k + n // 2) % n]).item() / tau
        values.append(-(positive - math.log(sum(math.exp(x) for x in logits))))
    return values


def test_info_nce_per_anchor_matches_its_transcription():
    e = randn(8, 5, seed=7) * 2
    values = distortion.info_nce(e, torch.tensor(0.2))
    assert values.tolist() == pytest.approx(info_nce_transcription(e, 0.2), rel=1e-5)


# 2. the three losses against their equations -----------------------------------------------------


def vic(**options):
    params = {"beta": 2.5, "likelihood": "gaussian", "image_shape": [3, 4, 4], **options}
    return build_loss({"name": "vic_loss", **params})


def objective_transcription(w: float, beta: float, bits, aux, distortions) -> float:
    return w * sum(bits) / len(bits) + beta * sum(distortions) / len(distortions) + sum(aux)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_vic_loss_is_rate_plus_beta_reconstruction_plus_aux(likelihood):
    n, shape = 5, (3, 4, 4)
    logits, bits, aux = randn(n, *shape, seed=8) * 2, rand(n, seed=9) * 40, torch.full((n,), 0.3 / n)
    target = (rand(n, *shape, seed=10) > 0.5).float() if likelihood == "bernoulli" else rand(n, *shape, seed=10)
    loss = vic(likelihood=likelihood)
    loss.rate_weight = 0.25
    output = pack_decoder(logits, bits, aux).requires_grad_()
    value = loss(output, target)
    per_row = (distortion.gaussian_reconstruction if likelihood == "gaussian" else distortion.bernoulli_reconstruction)(
        logits, target
    )
    expected = objective_transcription(0.25, 2.5, bits.tolist(), aux.tolist(), per_row.tolist())
    assert value.item() == pytest.approx(expected, rel=1e-6)
    (grad,) = torch.autograd.grad(value, output)
    # d/d bits = w / N, d/d aux = 1 (aux is summed: it is already divided by N in every row).
    torch.testing.assert_close(grad[:, -2], torch.full((n,), 0.25 / n))
    torch.testing.assert_close(grad[:, -1], torch.ones(n))
    assert loss.last_terms["rate_bits"].item() == pytest.approx(bits.mean().item(), rel=1e-6)


def test_vic_loss_checks_the_canonical_target():
    loss = vic()
    output = pack_decoder(torch.zeros(2, 3, 4, 4), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        loss(output, torch.full((2, 3, 4, 4), -0.5))  # a normalised target
    with pytest.raises(ValueError, match="augmented_canonical_collator"):
        loss(output, torch.zeros(2))  # sample indices: the wrong collator
    with pytest.raises(ValueError, match="image_decoder output of shape"):
        loss(output[:, :-1], torch.zeros(2, 3, 4, 4))
    # The range is checked on the first good batch only: the transforms do not change between steps.
    loss(output, torch.zeros(2, 3, 4, 4))
    assert torch.isfinite(loss(output, torch.full((2, 3, 4, 4), -0.5)))


def bince(**options):
    params = {"beta": 3.0, "temperature": None, "embedding_dim": 6, **options}
    return build_loss({"name": "bince_loss", **params})


def vissl_simclr(temperature: float, images: int, dim: int, world_size: int = 1) -> SimclrInfoNCELoss:
    buffer_params = {"embedding_dim": dim, "effective_batch_size": 2 * images, "world_size": world_size}
    return SimclrInfoNCELoss(AttrDict({"temperature": temperature, "buffer_params": buffer_params}))


def test_bince_distortion_with_a_fixed_temperature_is_vissls_simclr_value_and_gradient():
    projection = (randn(10, 6, seed=11) * 3).requires_grad_()
    zeros = torch.zeros(10)
    loss = bince(beta=1.0, temperature=0.1)

    value = loss(pack_projection(projection, zeros, zeros, torch.tensor(0.0)), None)
    (grad,) = torch.autograd.grad(value, projection)
    expected = vissl_simclr(0.1, 5, 6)(projection, None)
    (expected_grad,) = torch.autograd.grad(expected, projection)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_bince_loss_is_rate_plus_beta_infonce_plus_aux_at_the_learned_temperature():
    projection, bits, aux = randn(8, 6, seed=12), rand(8, seed=13) * 30, torch.full((8,), 0.7 / 8)
    logit_scale = torch.tensor(math.log(1 / 0.2))
    loss = bince()
    loss.rate_weight = 0.5
    value = loss(pack_projection(projection, bits, aux, logit_scale), None)
    expected = objective_transcription(0.5, 3.0, bits.tolist(), aux.tolist(), info_nce_transcription(projection, 0.2))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert loss.last_terms["temperature"].item() == pytest.approx(0.2, rel=1e-6)


def test_the_temperature_is_clamped_at_one_hundredth_and_trains_above_it():
    assert min_temperature_clamp(torch.tensor(math.log(1 / 0.07))).item() == pytest.approx(0.07, rel=1e-6)
    assert min_temperature_clamp(torch.tensor(10.0)).item() == pytest.approx(0.01)
    projection = randn(8, 6, seed=14)
    zeros = torch.zeros(8)
    grads = {}
    for start in (math.log(1 / 0.07), 10.0):
        logit_scale = torch.tensor(start, requires_grad=True)
        bince()(pack_projection(projection, zeros, zeros, logit_scale), None).backward()
        grads[start] = logit_scale.grad.item()
    assert grads[math.log(1 / 0.07)] != 0 and grads[10.0] == 0  # min(exp(s), 100) is flat past log 100


def test_the_projection_head_owns_logit_scale_and_it_receives_gradients():
    head = BinceProjection(None, dims=[4, 128, 10])
    assert head.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    z_hat, bits, aux = randn(6, 4, seed=15), rand(6, seed=16), torch.full((6,), 0.1)
    packed_bottleneck = torch.cat([z_hat, z_hat.detach(), bits[:, None], aux[:, None]], dim=1)
    output = head(packed_bottleneck)
    assert output.shape == (6, 13)
    split = split_projection(output)
    torch.testing.assert_close(split.bits, bits)
    torch.testing.assert_close(split.aux, aux)
    bince(embedding_dim=10)(output, None).backward()
    assert head.logit_scale.grad is not None and head.logit_scale.grad.abs() > 0
    assert all(p.grad is not None for p in head.projector.parameters())


def test_feature_compression_loss_is_rate_plus_beta_l1_plus_aux():
    z_hat, z, bits, aux = randn(4, 5, seed=17), randn(4, 5, seed=18), rand(4, seed=19) * 9, torch.full((4,), 0.05)
    loss = build_loss({"name": "feature_compression_loss", "beta": 1.5})
    value = loss(torch.cat([z_hat, z, bits[:, None], aux[:, None]], dim=1), None)
    l1 = [sum(abs(a - b) for a, b in zip(z_hat[n].tolist(), z[n].tolist())) for n in range(4)]
    assert value.item() == pytest.approx(objective_transcription(1.0, 1.5, bits.tolist(), aux.tolist(), l1), rel=1e-6)


def test_default_betas_are_the_authors_trade_offs_in_the_papers_convention():
    # lambda / (beta_LL ln 2): their rate in nats, weighted by beta_LL; ours in bits, weighted by 1.
    assert build_loss({"name": "vic_loss", "likelihood": "gaussian", "image_shape": [3, 4, 4]}).beta == pytest.approx(
        1 / (0.1 * LN2)
    )
    assert bince(beta=paper_beta(1 / 0.003, 0.1)).beta == pytest.approx(4808.98, rel=1e-5)
    assert BINCELoss.DEFAULTS["beta"] == pytest.approx((1 / 0.003) / (0.1 * LN2))
    assert build_loss({"name": "feature_compression_loss"}).beta == pytest.approx(1 / (0.05 * LN2))
    # Same minimiser: the authors' objective is ours times beta_LL ln 2.
    rate_bits, d = 37.0, 2.2
    authors = (1 / 0.003) * d + 0.1 * (rate_bits * LN2)
    ours = rate_bits + paper_beta(1 / 0.003, 0.1) * d
    assert authors == pytest.approx(ours * 0.1 * LN2)


# 3. the rate-weight annealing -----------------------------------------------------------------


def test_rate_weight_rises_linearly_over_the_first_tenth_then_stays_at_one():
    assert rate_weight(0, 1000) == pytest.approx(1e-5)
    assert rate_weight(50, 1000) == pytest.approx(1e-5 + (1 - 1e-5) * 0.5)
    assert rate_weight(100, 1000) == 1.0 and rate_weight(1000, 1000) == 1.0
    assert rate_weight(50, 995) == pytest.approx(1e-5 + (1 - 1e-5) * 0.5)  # ceil(99.5) = 100 steps
    assert rate_weight(0, 1000, fraction=0.0) == 1.0


def test_the_hook_sets_the_rate_weight_before_the_loss_and_is_generated_for_compressors():
    loss = bince(rate_weight_start=1e-3, rate_anneal_fraction=0.5)
    task = SimpleNamespace(loss=loss, iteration=25, max_iteration=100, train=True)
    RateWeightAnnealingHook().on_forward(task)
    assert loss.rate_weight == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    task.train = False
    RateWeightAnnealingHook().on_forward(task)
    assert loss.rate_weight == 1.0
    config = compose([f"config={BINCE_DIGITS}"])[1]
    assert any(isinstance(h, RateWeightAnnealingHook) for h in hook_generator(config))


# 4. 2 gloo ranks == 1 process with the whole batch ----------------------------------------------

IMAGES_PER_RANK, WORLD_SIZE, IN_DIM, PROJ = 3, 2, 5, 6


class PackedModel(nn.Module):
    """A stand-in for bottleneck + projection: ``[proj | bits | aux | logit_scale]`` with a
    data-dependent rate, a data-independent aux (divided by the rank's rows) and a learned scale."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.project = nn.Linear(IN_DIM, PROJ)
        self.rate = nn.Linear(IN_DIM, 1)
        self.quantiles = nn.Parameter(torch.tensor([0.3, -1.2]))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x):
        bits = F.softplus(self.rate(x)).squeeze(1) * 10
        aux = (self.quantiles - torch.tensor([1.0, -1.0])).abs().sum().expand(len(x)) / len(x)
        return pack_projection(self.project(x), bits, aux, self.logit_scale)


def make_features() -> torch.Tensor:
    return randn(2, IMAGES_PER_RANK * WORLD_SIZE, IN_DIM, seed=20)


def rows_of_rank(rank: int) -> torch.Tensor:
    start = rank * IMAGES_PER_RANK
    return make_features()[:, start : start + IMAGES_PER_RANK].reshape(-1, IN_DIM)


def bince_objective():
    loss = bince(embedding_dim=PROJ, beta=2.0)
    loss.rate_weight = 0.3
    return lambda out: loss(out, None)


def ranks_work(rank: int) -> Dict[str, object]:
    return ddp_loss_and_grads(PackedModel(), rows_of_rank(rank), bince_objective())


def test_bince_on_two_ranks_equals_one_process_with_the_whole_batch(tmp_path):
    results = run_on_ranks(ranks_work, tmp_path, WORLD_SIZE)
    assert not dist.is_initialized()
    expected = loss_and_grads(PackedModel(), make_features().reshape(-1, IN_DIM), bince_objective())
    for result in results:
        assert_matches(result, expected, "mean_value")
    # Without the gather each rank would see only its own rows as negatives.
    local = bince_objective()(PackedModel()(rows_of_rank(0)))
    assert not torch.allclose(local, results[0]["value"], atol=1e-4)


# 5. config inference and errors ------------------------------------------------------------------


def test_digits_configs_infer_sizes_and_keep_quantiles_out_of_weight_decay():
    bince_config = compose([f"config={BINCE_DIGITS}"])[1]
    assert bince_config.MODEL.HEAD.PARAMS[1][1]["dims"] == [128, 128, 64]
    assert bince_config.LOSS.bince_loss.embedding_dim == 64
    assert "quantiles" in bince_config.OPTIMIZER.non_regularized_parameters
    vic_config = compose([f"config={VIC_DIGITS}"])[1]
    assert vic_config.MODEL.HEAD.PARAMS[1][1]["z_dim"] == 128
    assert vic_config.LOSS.vic_loss.image_shape == [3, 16, 16] and vic_config.LOSS.vic_loss.likelihood == "gaussian"
    assert vic_config.OPTIMIZER.non_regularized_parameters == ["quantiles"]


HEADS = "config.MODEL.HEAD.PARAMS="
BOTTLENECK_HEAD = "[entropy_bottleneck,{dims:[512,128]}]"


@pytest.mark.parametrize(
    "config, overrides, key",
    [
        (BINCE_DIGITS, ["config.OPTIMIZER.use_larc=True"], "config.OPTIMIZER.use_larc"),
        (VIC_DIGITS, ["config.OPTIMIZER.use_larc=True"], "config.OPTIMIZER.use_larc"),
        (BINCE_DIGITS, ["config.OPTIMIZER.name=lars"], "config.OPTIMIZER.name=lars"),
        (BINCE_DIGITS, ["config.DATA.TRAIN.COLLATE_FUNCTION=multicrop_collator"], "config.DATA.TRAIN.COLLATE_FUNCTION"),
        (VIC_DIGITS, ["config.DATA.TRAIN.COLLATE_FUNCTION=simclr_collator"], "config.DATA.TRAIN.COLLATE_FUNCTION"),
        (
            BINCE_DIGITS,
            [f"{HEADS}[{BOTTLENECK_HEAD},[image_decoder,{{image_shape:[3,16,16]}}]]"],
            "config.MODEL.HEAD.PARAMS chains",
        ),
        (VIC_DIGITS, [f"{HEADS}[[mlp,{{dims:[512,128]}}]]"], "config.MODEL.HEAD.PARAMS chains"),
        (VIC_DIGITS, [f"{HEADS}[{BOTTLENECK_HEAD},[image_decoder,{{image_shape:[3,16,16],z_dim:64}}]]"], "z_dim=64"),
        (
            BINCE_DIGITS,
            [f"{HEADS}[{BOTTLENECK_HEAD},[bince_projection,{{dims:[64,128,32]}}]]"],
            r"bince_projection\) dims=",
        ),
        (BINCE_DIGITS, ["+config.LOSS.bince_loss.embedding_dim=32"], "config.LOSS.bince_loss.embedding_dim=32"),
        (BINCE_DIGITS, ["+config.LOSS.bince_loss.beta=0"], "config.LOSS.bince_loss.beta"),
        (
            BINCE_DIGITS,
            ["+config.LOSS.bince_loss.rate_anneal_fraction=2"],
            "config.LOSS.bince_loss.rate_anneal_fraction",
        ),
        (BINCE_DIGITS, ["+config.LOSS.bince_loss.temperatur=0.1"], "config.LOSS.bince_loss.temperatur"),
        (VIC_DIGITS, ["+config.LOSS.vic_loss.likelihood=laplace"], "config.LOSS.vic_loss.likelihood"),
        (BINCE_DIGITS, ["config.DISTRIBUTED.NUM_PROC_PER_NODE=2", "config.DATA.TRAIN.DROP_LAST=False"], "DROP_LAST"),
    ],
)
def test_bad_configs_fail_at_composition_naming_the_key(config, overrides, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        compose([f"config={config}", *overrides])


def test_feature_compression_config_checks():
    overrides = [
        f"config={BINCE_DIGITS}",
        "config.LOSS.name=feature_compression_loss",
        "config.MODEL.HEAD.PARAMS=[[entropy_bottleneck,{dims:[512,512]}]]",
    ]
    with pytest.raises(ConfigError, match="number of views"):
        compose(overrides)
    config = compose([*overrides, "config.DATA.TRAIN.TRANSFORMS=[{name:ToTensor}]"])[1]
    assert config.LOSS.feature_compression_loss.beta == pytest.approx(1 / (0.05 * LN2))


# 6. the canonical-image collator ------------------------------------------------------------------


def test_collator_puts_augmented_views_in_the_input_and_canonical_views_in_the_target():
    config = compose([f"config={VIC_DIGITS}"])[1]
    transform = get_transform(config.DATA.TRAIN.TRANSFORMS)
    images = [Image.fromarray((rand(16, 16, 3, seed=s) * 255).byte().numpy()) for s in range(3)]
    samples = [
        transform({"data": [im], "label": [7], "data_valid": [True], "data_idx": [i]}) for i, im in enumerate(images)
    ]
    batch = get_collator("augmented_canonical_collator", {})(samples)
    assert set(batch) == {"data", "label", "data_valid", "data_idx"}
    (augmented,), (canonical,) = batch["data"], batch["label"]
    assert augmented.shape == canonical.shape == (3, 3, 16, 16)
    for i, image in enumerate(images):
        # The canonical view is the image itself in [0, 1]; the augmented one is cropped and normalised.
        pixels = torch.tensor(np.array(image)).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(canonical[i], pixels)
        assert augmented[i].min() < 0
    assert batch["data_idx"][0].tolist() == [0, 1, 2] and batch["data_valid"][0].tolist() == [True] * 3
    with pytest.raises(ValueError, match="needs 2 views"):
        get_collator("augmented_canonical_collator", {})([{**samples[0], "data": samples[0]["data"][:1]}])


# 7. the image decoder -------------------------------------------------------------------------


def test_image_decoder_reconstructs_the_shape_and_passes_the_rate_through():
    assert pyramid_depth(16, 16) == 2 and pyramid_depth(32, 24) == 2 and pyramid_depth(7, 7) == 0
    decoder = ImageDecoder(None, image_shape=[3, 16, 16], z_dim=8)
    z_hat, bits, aux = randn(4, 8, seed=21), rand(4, seed=22), torch.full((4,), 0.2)
    output = decoder(torch.cat([z_hat, z_hat, bits[:, None], aux[:, None]], dim=1))
    assert output.shape == (4, 3 * 16 * 16 + 2) and output.dtype == torch.float32
    torch.testing.assert_close(output[:, -2], bits)
    value = vic(image_shape=[3, 16, 16])(output, rand(4, 3, 16, 16, seed=23))
    value.backward()
    assert all(p.grad is not None for p in decoder.parameters())


# 8. training through the plugin launcher -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("config", [BINCE_DIGITS, VIC_DIGITS])
def test_compressors_train_through_the_launcher(run_launcher, config):
    out = run_launcher(["config.OPTIMIZER.num_epochs=1"], config=config)
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert (out / "model_final_checkpoint_phase0.torch").is_file()
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert "quantiles" in saved["OPTIMIZER"]["non_regularized_parameters"]
