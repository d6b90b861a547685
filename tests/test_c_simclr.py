"""c_simclr_loss against VISSL's SimCLR (beta = 0, no sampling: exactly 2x, compression_ssl.md
§D.2) and against a float64 per-anchor transcription of the authors' equations (§B.2) with and
without vMF sampling; its sampling, DDP equivalence, config errors, launcher runs on 1 and 2 CPU
processes, and the CVR ImageNet recipes (§B.4)."""

import math
from typing import Dict, List

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.launcher import compose

import pytest
import scipy.special
import scipy.stats
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
from vissl.data.ssl_transforms import get_transform
from vissl.losses.simclr_info_nce_loss import SimclrInfoNCELoss

from conftest import logged
from vissl_issl.config import ConfigError
from vissl_issl.losses.c_simclr import CSimCLRLoss
from vissl_issl.maths import von_mises_fisher as vmf

BATCH, EMB = 5, 7  # images per batch, embedding size: small enough for scipy's closed-form vMF
DIGITS = "pretrain/c_simclr/c_simclr_resnet18_digits"


@pytest.fixture(autouse=True)
def cpu_device():
    set_cpu_device()  # VISSL's SimCLR criterion moves its masks to the GPU otherwise


def build(**params) -> CSimCLRLoss:
    config = {"kappa_e": 1024.0, "kappa_b": 10.0, "beta": 1.0, "sampling": True, "embedding_dim": EMB}
    return build_loss({"name": "c_simclr_loss", **config, **params})


def embeddings(seed: int = 0, batch: int = BATCH) -> torch.Tensor:
    """Un-normalised ``(2 * batch, EMB)``, view-major; each view is the image plus noise."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, EMB, generator=generator) * 2
    views = images + torch.randn(2, batch, EMB, generator=generator)
    return (views * 3).reshape(-1, EMB).requires_grad_()


def vissl_simclr(temperature: float, images: int, world_size: int = 1) -> SimclrInfoNCELoss:
    buffer_params = {"embedding_dim": EMB, "effective_batch_size": 2 * images, "world_size": world_size}
    return SimclrInfoNCELoss(AttrDict({"temperature": temperature, "buffer_params": buffer_params}))


def value_and_grad(fn, x: torch.Tensor):
    value = fn(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# 1. beta = 0, no sampling: 2 x VISSL's SimCLR -------------------------------------------------


@pytest.mark.parametrize("kappa_b", [10.0, 1 / 0.07])
def test_without_compression_it_is_twice_vissls_simclr(kappa_b):
    x = embeddings()
    value, grad = value_and_grad(lambda e: build(kappa_b=kappa_b, beta=0.0, sampling=False)(e, None), x)
    expected, expected_grad = value_and_grad(lambda e: 2 * vissl_simclr(1 / kappa_b, BATCH)(e, None), x)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


# 2. the full loss against the authors' equations, float64 -----------------------------------


def log_vmf(z: torch.Tensor, mu: torch.Tensor, kappa: float) -> torch.Tensor:
    """log C_d(kappa) + kappa mu.z with C_d(kappa) = kappa^(d/2-1) / ((2 pi)^(d/2) I_(d/2-1)(kappa))
    (scipy's exponentially scaled ive: log I_nu(k) = log ive(nu, k) + k)."""
    d = z.shape[-1]
    nu = d / 2 - 1
    log_c = nu * math.log(kappa) - d / 2 * math.log(2 * math.pi) - (math.log(scipy.special.ive(nu, kappa)) + kappa)
    return log_c + kappa * (mu * z).sum()


def test_closed_form_log_vmf_agrees_with_scipy():
    mu = F.normalize(torch.randn(EMB, dtype=torch.float64, generator=torch.Generator().manual_seed(3)), dim=0)
    z = F.normalize(mu + 0.1, dim=0)
    for kappa in (10.0, 1024.0):
        expected = scipy.stats.vonmises_fisher(mu.numpy(), kappa).logpdf(z.numpy())
        assert log_vmf(z, mu, kappa).item() == pytest.approx(expected, rel=1e-9)
        assert vmf.log_prob(z, mu, kappa).item() == pytest.approx(expected, rel=1e-9)


def authors_loss(x: torch.Tensor, z: torch.Tensor, kappa_e: float, kappa_b: float, beta: float) -> torch.Tensor:
    """The CVR objective (``add_contrastive_ceb_loss``) anchor by anchor in float64, plus the
    constant 2 log(2B - 1) that c_simclr_loss drops.

    ``x``: the embeddings ``[view 0; view 1]``; ``z``: the anchors, row k for the direction that
    starts from row k (z_i for u_i, z'_i for v_i)."""
    x, z = x.double(), z.double()
    images = len(x) // 2
    u, v = F.normalize(x[:images], dim=1), F.normalize(x[images:], dim=1)
    total = 0
    for i in range(images):
        for mean, other, same, anchor in ((u, v, u, z[i]), (v, u, v, z[images + i])):  # forward, backward
            residual = log_vmf(anchor, mean[i], kappa_e) - log_vmf(anchor, other[i], kappa_b)
            # Decoder logits: every other-view mean, then the same-view means without the anchor's own.
            logits = [log_vmf(anchor, other[j], kappa_b) for j in range(images)]
            logits += [log_vmf(anchor, same[j], kappa_b) for j in range(images) if j != i]
            logits = torch.stack(logits)
            conditional_entropy = -(logits[i] - torch.logsumexp(logits, dim=0))
            mutual_information = math.log(2 * images - 1) - conditional_entropy
            total = total + beta * residual - mutual_information
    return total / images + 2 * math.log(2 * images - 1)


@pytest.mark.parametrize("kappa_e, kappa_b, beta", [(1024.0, 10.0, 1.0), (50.0, 1 / 0.07, 0.3)])
def test_without_sampling_it_matches_the_authors_equations(kappa_e, kappa_b, beta):
    x = embeddings(seed=1)
    loss = build(kappa_e=kappa_e, kappa_b=kappa_b, beta=beta, sampling=False)
    value, grad = value_and_grad(lambda e: loss(e, None), x)
    expected, expected_grad = value_and_grad(
        lambda e: authors_loss(e, F.normalize(e, dim=1), kappa_e, kappa_b, beta),
        x,  # z = the means
    )
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kappa_e", [1024.0, 64.0])
def test_with_sampling_it_matches_the_authors_equations_on_the_same_draws(kappa_e):
    x = embeddings(seed=2)
    loss = build(kappa_e=kappa_e, kappa_b=10.0, beta=1.0, sampling=True)
    torch.manual_seed(7)
    value, grad = value_and_grad(lambda e: loss(e, None), x)

    def reference(e):
        torch.manual_seed(7)  # the same vMF draws, reparameterised through the means
        anchors = vmf.sample(F.normalize(e.float(), dim=1), kappa_e)
        return authors_loss(e, anchors, kappa_e, 10.0, 1.0)

    expected, expected_grad = value_and_grad(reference, x)
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-4)


# 3. sampling --------------------------------------------------------------------------------


def test_sampling_draws_from_the_global_rng_and_its_absence_is_deterministic():
    x = embeddings()
    sampled = build(sampling=True)
    values = []
    for seed in (0, 1, 0):
        torch.manual_seed(seed)
        values.append(sampled(x, None).item())
    assert values[0] == values[2] and values[0] != values[1]
    plain = build(sampling=False)
    first = plain(x, None)
    torch.manual_seed(123)
    assert torch.equal(first, plain(x, None))


def test_the_residual_is_evaluated_at_vmf_samples_with_kappa_e():
    """E[R_i] = log C(kappa_e) + kappa_e A(kappa_e) - log C(kappa_b) - kappa_b A(kappa_e) u_i.v_i
    for z_i ~ vMF(u_i, kappa_e), A = I_{d/2} / I_{d/2-1}; the same for R'_i. R = (loss at beta 1 -
    loss at beta 0) on the same draws, over many images."""
    images, kappa_e, kappa_b = 2000, 200.0, 10.0
    x = embeddings(seed=4, batch=images).detach()
    losses = {}
    for beta in (0.0, 1.0):
        torch.manual_seed(11)
        losses[beta] = build(kappa_e=kappa_e, kappa_b=kappa_b, beta=beta)(x, None).item()
    measured = losses[1.0] - losses[0.0]  # mean over images of R_i + R'_i

    nu = EMB / 2 - 1
    mean_cosine = scipy.special.ive(nu + 1, kappa_e) / scipy.special.ive(nu, kappa_e)  # A_d(kappa_e)
    u, v = F.normalize(x[:images].double(), dim=1), F.normalize(x[images:].double(), dim=1)
    zero = torch.zeros(EMB, dtype=torch.float64)
    log_c = {k: log_vmf(zero, zero, k).item() for k in (kappa_e, kappa_b)}
    expected = 2 * (log_c[kappa_e] + kappa_e * mean_cosine - log_c[kappa_b]) - 2 * kappa_b * mean_cosine * (
        (u * v).sum(1).mean().item()
    )
    # Per image the sum has a standard deviation of about sqrt(2 (d - 1)) < 4 nats.
    assert measured == pytest.approx(expected, abs=5 * 4 / math.sqrt(images))
    # Without sampling R sits at the mode instead: kappa_e (1 - A) ~ (d - 1) / 2 higher per direction.
    plain = build(kappa_e=kappa_e, kappa_b=kappa_b, beta=1.0, sampling=False)(x, None).item()
    no_beta = build(kappa_e=kappa_e, kappa_b=kappa_b, beta=0.0, sampling=False)(x, None).item()
    assert plain - no_beta - measured == pytest.approx(2 * kappa_e * (1 - mean_cosine), rel=0.2)


def test_as_kappa_e_grows_the_samples_approach_the_means():
    x = embeddings()
    plain = build(beta=0.0, sampling=False)(x, None).item()
    gaps = []  # mean |sampled - plain| over 8 seeds
    for kappa_e in (1e2, 1e4, 1e6, 1e8):
        total = 0.0
        for seed in range(8):
            torch.manual_seed(seed)
            total += abs(build(kappa_e=kappa_e, beta=0.0, sampling=True)(x, None).item() - plain)
        gaps.append(total / 8)
    # The angle to the mean shrinks as 1 / sqrt(kappa_e): 10x per step once it is small.
    assert gaps[0] > 0.01 and gaps[0] > gaps[1] and gaps[-1] < 1e-3
    assert all(a > 3 * b for a, b in zip(gaps[1:], gaps[2:]))


def test_gradient_steps_on_the_embeddings_lower_the_sampled_loss():
    torch.manual_seed(0)
    x = torch.nn.Parameter(embeddings(seed=5).detach())
    loss = build(kappa_e=64.0, beta=1.0, sampling=True)
    optimizer = torch.optim.Adam([x], lr=0.05)
    values = []
    for _ in range(60):
        optimizer.zero_grad()
        value = loss(x, None)
        value.backward()
        optimizer.step()
        values.append(value.item())
    assert sum(values[-10:]) < sum(values[:10]) - 10 * 1.0  # down by over a nat on average


def test_half_precision_input_under_autocast_gives_a_fp32_loss():
    x = embeddings()
    expected = build(sampling=False)(x, None)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = build(sampling=False)(x.bfloat16(), None)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, expected, rtol=2e-2, atol=0.5)


def test_wrong_shapes_name_them():
    loss = build()
    for bad in (torch.randn(2 * BATCH, EMB + 1), torch.randn(2 * BATCH + 1, EMB), torch.randn(EMB)):
        with pytest.raises(ValueError, match=r"c_simclr_loss got embeddings of shape"):
            loss(bad, None)


# 4. 2 gloo ranks == 1 process with the whole batch -------------------------------------------

IMAGES_PER_RANK, WORLD_SIZE, IN_DIM = 3, 2, 6


def make_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(IN_DIM, EMB)


def make_features() -> torch.Tensor:
    """``(2 views, all images, IN_DIM)``."""
    return torch.randn(2, IMAGES_PER_RANK * WORLD_SIZE, IN_DIM, generator=torch.Generator().manual_seed(1))


def rows_of_rank(rank: int) -> torch.Tensor:
    """This rank's images, view-major ``(2 * IMAGES_PER_RANK, IN_DIM)``, as simclr_collator gives them."""
    start = rank * IMAGES_PER_RANK
    return make_features()[:, start : start + IMAGES_PER_RANK].reshape(-1, IN_DIM)


def c_simclr(beta: float):
    # kappa_e = kappa_b keeps R (and the loss) O(1): the comparison is to 1e-6 absolute.
    loss = build(kappa_e=10.0, kappa_b=10.0, beta=beta, sampling=False)
    return lambda out: loss(out, None)


def ranks_work(rank: int) -> Dict[str, Dict[str, object]]:
    inputs = rows_of_rank(rank)
    simclr = vissl_simclr(0.1, IMAGES_PER_RANK * WORLD_SIZE, WORLD_SIZE)
    return {
        "c_simclr": ddp_loss_and_grads(make_model(), inputs, c_simclr(1.0)),
        "beta0": ddp_loss_and_grads(make_model(), inputs, c_simclr(0.0)),
        "half_beta0": ddp_loss_and_grads(make_model(), inputs, lambda out: c_simclr(0.0)(out) / 2),
        "vissl_simclr": ddp_loss_and_grads(make_model(), inputs, lambda out: simclr(out, None)),
    }


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> List[Dict[str, Dict[str, object]]]:
    return run_on_ranks(ranks_work, tmp_path_factory.mktemp("c_simclr_ddp"), WORLD_SIZE)


def whole_batch(objective) -> Dict[str, object]:
    assert not dist.is_initialized()
    return loss_and_grads(make_model(), make_features().reshape(-1, IN_DIM), objective)


@pytest.mark.parametrize("name, beta", [("c_simclr", 1.0), ("beta0", 0.0)])
def test_ddp_loss_and_gradients_equal_whole_batch(rank_results, name, beta):
    expected = whole_batch(c_simclr(beta))
    for result in rank_results:
        assert_matches(result[name], expected, "mean_value")
    # Without the gather each rank would see only its own 2 * IMAGES_PER_RANK columns.
    local = c_simclr(beta)(make_model()(rows_of_rank(0)))
    assert not torch.allclose(local, rank_results[0][name]["value"], atol=1e-4)


def test_on_two_ranks_beta_zero_is_twice_vissls_simclr(rank_results):
    for result in rank_results:
        assert_matches(result["half_beta0"], result["vissl_simclr"], "value")


# 5. config errors name the key ----------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("config.LOSS.c_simclr_loss.kappa_e=0", "config.LOSS.c_simclr_loss.kappa_e"),
        ("config.LOSS.c_simclr_loss.kappa_b=-1.0", "config.LOSS.c_simclr_loss.kappa_b"),
        ("config.LOSS.c_simclr_loss.beta=-0.5", "config.LOSS.c_simclr_loss.beta"),
        (
            "+config.LOSS.c_simclr_loss.embedding_dim=64",
            "config.LOSS.c_simclr_loss.embedding_dim=64 but config.MODEL.HEAD.PARAMS[-1] gives 128",
        ),
        ("+config.LOSS.c_simclr_loss.temperature=0.1", "config.LOSS.c_simclr_loss.temperature"),
        ("config.DATA.TRAIN.COLLATE_FUNCTION=multicrop_collator", "config.DATA.TRAIN.COLLATE_FUNCTION"),
        ("config.DATA.TRAIN.TRANSFORMS=[{name:ImgReplicatePil,num_times:3},{name:ToTensor}]", "number of views"),
    ],
)
def test_bad_configs_fail_at_composition_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        compose([f"config={DIGITS}", override])


def test_several_processes_need_equal_batches():
    with pytest.raises(ConfigError, match="config.DATA.TRAIN.DROP_LAST"):
        compose([f"config={DIGITS}", "config.DISTRIBUTED.NUM_PROC_PER_NODE=2", "config.DATA.TRAIN.DROP_LAST=False"])


def test_constructor_checks_constants_and_requires_the_embedding_size():
    with pytest.raises(ConfigError, match="config.LOSS.c_simclr_loss.kappa_e"):
        build(kappa_e=-1.0)
    with pytest.raises(ConfigError, match="config.LOSS.c_simclr_loss.embedding_dim must be set"):
        build_loss({"name": "c_simclr_loss"})


# 6. training through the plugin launcher ------------------------------------------------------


@pytest.mark.slow
def test_c_simclr_trains_through_the_launcher(run_launcher):
    # 64 images, 16 per step; TINY's two views are identical copies, which simclr_collator stacks.
    out = run_launcher(["config.OPTIMIZER.num_epochs=1"], config=DIGITS)
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert (out / "model_final_checkpoint_phase0.torch").is_file()
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["LOSS"]["name"] == "c_simclr_loss" and saved["LOSS"]["c_simclr_loss"]["embedding_dim"] == 128


def test_digits_config_differs_from_the_simclr_baseline_only_in_the_loss():
    c_simclr_config = compose([f"config={DIGITS}"])[1]
    simclr_config = compose(["config=pretrain/simclr/simclr_resnet18_digits"])[1]
    temperature = simclr_config.LOSS.simclr_info_nce_loss.temperature
    assert c_simclr_config.LOSS.c_simclr_loss.kappa_b == pytest.approx(1 / temperature)
    for key in ("DATA", "MODEL", "OPTIMIZER", "DISTRIBUTED"):
        assert c_simclr_config[key] == simclr_config[key], key


# 7. the CVR ImageNet recipes ------------------------------------------------------------------

RECIPES = {  # name: (method, epochs, width, base learning rate per 256 images, weight decay)
    "simclr/simclr_resnet50_e1000": ("simclr", 1000, 1, 0.2, 1.5e-6),
    "simclr/simclr_resnet50_e300": ("simclr", 300, 1, 0.3, 1e-6),
    "simclr/simclr_resnet50w2_e1000": ("simclr", 1000, 2, 0.2, 1.5e-6),
    "c_simclr/c_simclr_resnet50_e1000": ("c_simclr", 1000, 1, 0.2, 1.5e-6),
    "c_simclr/c_simclr_resnet50_e300": ("c_simclr", 300, 1, 0.3, 1e-6),
    "c_simclr/c_simclr_resnet50w2_e1000": ("c_simclr", 1000, 2, 0.2, 1.5e-6),
}


def find(transforms: List[dict], inner: str) -> dict:
    """The ``ImgPilMultiCropRandomApply`` whose (only) inner transform is ``inner``."""
    (match,) = [
        t for t in transforms if t["name"] == "ImgPilMultiCropRandomApply" and t["transforms"][0]["name"] == inner
    ]
    return match


@pytest.mark.parametrize("recipe", RECIPES)
def test_cvr_recipes_compose_with_the_authors_settings(recipe):
    method, epochs, width, base_lr, weight_decay = RECIPES[recipe]
    config = compose([f"config=pretrain/{recipe}"])[1]
    data, optimizer = config.DATA.TRAIN, config.OPTIMIZER
    global_batch = data.BATCHSIZE_PER_REPLICA * config.DISTRIBUTED.NUM_PROC_PER_NODE * config.DISTRIBUTED.NUM_NODES
    assert global_batch == 4096
    # LARS, bn and bias out of weight decay and layer adaptation, linear scaling, 10 warm-up epochs.
    assert optimizer.name == "lars" and optimizer.momentum == 0.9 and optimizer.eta == 0.001
    assert optimizer.exclude_bias_and_norm and not optimizer.regularize_bn and not optimizer.regularize_bias
    assert optimizer.num_epochs == epochs and optimizer.weight_decay == pytest.approx(weight_decay)
    lr = optimizer.param_schedulers.lr
    assert not lr.auto_lr_scaling.auto_scale and lr.update_interval == "step"
    warmup, cosine = lr.schedulers
    assert (warmup["name"], cosine["name"]) == ("linear", "cosine")
    assert warmup["start_value"] == 0.0 == cosine["end_value"]
    assert warmup["end_value"] == cosine["start_value"] == pytest.approx(base_lr * global_batch / 256)
    assert lr.lengths[0] * epochs == pytest.approx(10) and sum(lr.lengths) == pytest.approx(1)
    assert config.MODEL.AMP_PARAMS.USE_AMP and config.MODEL.AMP_PARAMS.AMP_TYPE == "pytorch"
    assert config.MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN and config.MODEL.SYNC_BN_CONFIG.GROUP_SIZE == 0
    # BYOL augmentations: 2 x 224 crops of area >= 0.08, jitter, grayscale, per-view blur / solarisation.
    assert data.COLLATE_FUNCTION == "simclr_collator" and data.DROP_LAST
    crops = data.TRANSFORMS[0]
    assert crops["name"] == "ImgPilToMultiCrop" and crops["num_crops"] == [2] and crops["size_crops"] == [224]
    assert crops["crop_scales"] == [[0.08, 1]]
    # The workers crop and flip; the photometric transforms run on the device (DEVICE_AUGMENTATION).
    assert [t["name"] for t in data.TRANSFORMS] == ["ImgPilToMultiCrop", "RandomHorizontalFlip", "PILToTensor"]
    photometric = data.DEVICE_TRANSFORMS
    jitter = find(photometric, "ColorJitter")
    assert jitter["prob"] == [0.8, 0.8]
    assert {k: jitter["transforms"][0][k] for k in ("brightness", "contrast", "saturation", "hue")} == {
        "brightness": 0.4,
        "contrast": 0.4,
        "saturation": 0.2,
        "hue": 0.1,
    }
    assert [t["p"] for t in photometric if t["name"] == "RandomGrayscale"] == [0.2]
    assert find(photometric, "ImgPilGaussianBlur")["prob"] == [1.0, 0.1]
    assert find(photometric, "ImgPilRandomSolarize")["prob"] == [0.0, 0.2]
    # ResNet-50 (2x) and the 2-layer 4096-wide projection head to 256.
    assert config.MODEL.TRUNK.NAME == "resnet" and config.MODEL.TRUNK.RESNETS.DEPTH == 50
    assert config.MODEL.TRUNK.RESNETS.WIDTH_MULTIPLIER == width
    ((name, head),) = config.MODEL.HEAD.PARAMS
    assert name == "mlp" and head["dims"] == [2048 * width, 4096, 256]
    assert head["use_bn"] and head["use_relu"] and not head["use_bias"]
    if method == "c_simclr":
        block = config.LOSS.c_simclr_loss
        assert config.LOSS.name == "c_simclr_loss"
        assert (block.kappa_e, block.kappa_b, block.beta, block.sampling) == (1024.0, 10.0, 1.0, True)
        assert block.embedding_dim == 256  # inferred from the head
    else:
        block = config.LOSS.simclr_info_nce_loss
        assert config.LOSS.name == "simclr_info_nce_loss"
        assert block.temperature == 0.1 and block.buffer_params.embedding_dim == 256


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.startswith("c_simclr")])
def test_each_c_simclr_recipe_is_its_simclr_baseline_with_another_loss(recipe):
    c_simclr_config = compose([f"config=pretrain/{recipe}"])[1]
    simclr_config = compose([f"config=pretrain/{recipe.replace('c_simclr', 'simclr')}"])[1]
    for key in ("DATA", "MODEL", "OPTIMIZER", "DISTRIBUTED"):
        assert c_simclr_config[key] == simclr_config[key], key


def test_the_cvr_augmentations_build_and_make_two_views():
    # The PIL pipeline as written, which the device augmentation reproduces in distribution.
    config = compose(
        ["config=pretrain/c_simclr/c_simclr_resnet50_e300", "config.DATA.TRAIN.DEVICE_AUGMENTATION=False"]
    )[1]
    transform = get_transform(config.DATA.TRAIN.TRANSFORMS)
    image = Image.fromarray((torch.rand(256, 300, 3) * 255).byte().numpy())
    sample = transform({"data": [image], "label": [0], "data_valid": [1], "data_idx": [0]})
    views = sample["data"]
    assert len(views) == 2 and all(v.shape == (3, 224, 224) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])
