"""BYOL and C-BYOL: the losses against transcriptions of their equations, the momentum target
(schedule, exact EMA, checkpointing), the stochastic predictor, DDP, and training through the
plugin launcher."""

import math
import shutil
from types import SimpleNamespace

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.heads.stochastic_predictor import StochasticPredictor
from vissl_issl.plugin.hooks import hook_generator
from vissl_issl.plugin.hooks.momentum_target import MomentumTargetHook, build_target
from vissl_issl.plugin.launcher import compose

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from classy_vision.losses import build_loss
from ddp import ddp_loss_and_grads, loss_and_grads, run_on_ranks
from scipy.stats import vonmises_fisher
from test_launcher import assert_same_tensors, load
from torch import nn
from vissl.models import build_model

from conftest import logged, model_config
from vissl_issl.config import ConfigError
from vissl_issl.maths import von_mises_fisher
from vissl_issl.maths.ema import ema_momentum, ema_update

BYOL_DIGITS = "pretrain/byol/byol_resnet18_digits"
C_BYOL_DIGITS = "pretrain/c_byol/c_byol_resnet18_digits"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def byol_transcription(q: np.ndarray, t: np.ndarray, weight: float) -> float:
    """w / B * sum_i ||q1_i/|q1_i| - t2_i/|t2_i|||^2 + ||q2_i/|q2_i| - t1_i/|t1_i|||^2, float64."""
    b = len(q) // 2
    total = 0.0
    for i in range(b):
        total += np.sum((unit(q[i]) - unit(t[b + i])) ** 2) + np.sum((unit(q[b + i]) - unit(t[i])) ** 2)
    return weight * total / b


def byol_loss(**options):
    return build_loss({"name": "byol_loss", "momentum": 0.99, "byol_loss_weight": 2.0, **options})


def c_byol_loss(**options):
    params = {"momentum": 0.99, "byol_loss_weight": 2.0, "kappa_e": 50.0, "kappa_b": 10.0, "beta": 1.0}
    return build_loss({"name": "c_byol_loss", **params, **options})


@pytest.mark.parametrize("weight", [1.0, 5.0])
def test_byol_loss_is_both_directions_of_the_normalised_error_averaged_over_images(weight):
    generator = torch.Generator().manual_seed(0)
    q, t = torch.randn(2, 10, 7, generator=generator, dtype=torch.float64)
    loss = byol_loss(byol_loss_weight=weight)
    loss.set_targets(t, online_model=None)
    value = loss(q)
    assert value.dtype == torch.float32
    expected = byol_transcription(q.numpy(), t.numpy(), weight)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # VISSL PR #454's form, times w: mean over images of (2 - 2cos(q1, t2)) + (2 - 2cos(q2, t1)).
    cos = F.cosine_similarity(q, t.roll(5, 0), dim=1)
    assert value.item() == pytest.approx(weight * (2 - 2 * cos).view(2, 5).sum(0).mean().item(), rel=1e-6)


def test_byol_gradient_matches_the_transcriptions():
    q = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 5, dtype=torch.float64)
    loss = byol_loss()
    loss.set_targets(t, online_model=None)
    (grad,) = torch.autograd.grad(loss(q), q)
    cos = F.cosine_similarity(q, t.roll(4, 0), dim=1)
    (expected,) = torch.autograd.grad(2.0 * (2 - 2 * cos).sum() / 4, q)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_byol_loss_rejects_missing_or_mismatched_targets():
    loss = byol_loss()
    with pytest.raises(ValueError, match="target embeddings of shape None"):
        loss(torch.randn(4, 3))
    loss.set_targets(torch.randn(4, 5), online_model=None)
    with pytest.raises(ValueError, match=r"predictions of shape \(4, 3\)"):
        loss(torch.randn(4, 3))


@pytest.mark.parametrize(
    "options, key",
    [({"momentum": 1.0}, "momentum"), ({"byol_loss_weight": 0.0}, "byol_loss_weight"), ({"tau": 1}, "tau")],
)
def test_bad_byol_options_name_the_key(options, key):
    with pytest.raises(ConfigError, match=f"config.LOSS.byol_loss.{key}"):
        byol_loss(**options)


def test_momentum_rises_from_base_to_one_on_a_cosine():
    assert ema_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert ema_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert ema_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert ema_momentum(25, 100, 0.996) == pytest.approx(1 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)


class Online(nn.Module):
    """The attributes of a VISSL model that the target uses: a trunk and chained heads."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
        self.heads = nn.ModuleList([nn.Linear(6, 3), nn.Linear(3, 3)])


def test_ema_update_is_exact_on_trunk_and_projector_only():
    torch.manual_seed(0)
    online = Online().double()
    target = build_target(online)
    assert [name for name, _ in target.named_parameters()] == [
        "trunk.0.weight",
        "trunk.0.bias",
        "trunk.1.weight",
        "trunk.1.bias",
        "heads.0.weight",
        "heads.0.bias",
    ]
    assert not any(p.requires_grad for p in target.parameters())
    before = {name: p.clone() for name, p in target.named_parameters()}
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online.trunk[1].running_mean.fill_(3.0)
    ema_update(target, online, 0.9)
    sources = dict(online.named_parameters())
    for name, p in target.named_parameters():
        expected = 0.9 * before[name] + 0.1 * sources[name]
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-15)
    assert torch.equal(target.trunk[1].running_mean, torch.zeros(6))  # buffers stay the target's


def digits_model(name: str):
    config = compose([f"config={name}"])[1]
    torch.manual_seed(0)
    return build_model(config.MODEL, config.OPTIMIZER), config


@pytest.mark.slow
def test_hook_builds_runs_and_updates_the_target_as_the_loss_owns_it():
    online, config = digits_model(BYOL_DIGITS)
    loss = build_loss({"name": "byol_loss", **config.LOSS.byol_loss})
    task = SimpleNamespace(
        loss=loss, model=online, device=torch.device("cpu"), train=True, iteration=3, max_iteration=10
    )
    hook = MomentumTargetHook()
    hook.on_start(task)
    assert len(loss.target.heads) == 1 and loss.target.trunk is not online.trunk
    images = torch.randn(6, 3, 16, 16)
    task.last_batch = SimpleNamespace(sample={"input": [images]})
    hook.on_forward(task)
    expected = online.heads[0](online.trunk(images)[0])  # the online projection, same weights so far
    torch.testing.assert_close(loss.target_embeddings, expected)
    assert not loss.target_embeddings.requires_grad
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = {name: p.clone() for name, p in loss.target.named_parameters()}
    hook.on_update(task)
    m = ema_momentum(3, 10, 0.99)
    sources = dict(online.named_parameters())
    for name, p in loss.target.named_parameters():
        torch.testing.assert_close(p, m * before[name] + (1 - m) * sources[name])
    assert not set(map(id, loss.target.parameters())) & set(map(id, online.parameters()))  # not optimised


def test_hook_generator_adds_the_momentum_target_for_byol_losses_only():
    for name, expected in [(BYOL_DIGITS, True), (C_BYOL_DIGITS, True), ("pretrain/cissl/cissl_resnet18_digits", False)]:
        config = compose([f"config={name}"])[1]
        hooks = hook_generator(config)
        assert any(isinstance(h, MomentumTargetHook) for h in hooks) == expected, name


def test_checkpointed_target_is_restored_when_the_hook_attaches_it():
    torch.manual_seed(0)
    trained = byol_loss()
    trained.attach_target(build_target(Online()))
    state = trained.state_dict()
    assert state and all(key.startswith("target.") for key in state)
    resumed = byol_loss()
    resumed.load_state_dict(state)  # VISSL restores the loss before any hook runs
    torch.manual_seed(1)
    resumed.attach_target(build_target(Online()))
    assert_same_tensors(dict(resumed.state_dict()), dict(state))


# C-BYOL


def c_byol_transcription(q, z, mu, t, nu, weight, beta, kappa_e, kappa_b) -> float:
    """The docstring's equation, row by row, with scipy's vMF log-density (float64)."""
    b = len(q) // 2
    total = byol_transcription(q, t, weight) * b
    for r in range(2 * b):
        other = (r + b) % (2 * b)
        rate = vonmises_fisher(mu[r], kappa_e).logpdf(z[r]) - vonmises_fisher(nu[other], kappa_b).logpdf(z[r])
        total += beta * rate
    return total / b


def packed_outputs(b: int, d: int, generator: torch.Generator):
    q, t = torch.randn(2, 2 * b, d, generator=generator, dtype=torch.float64)
    mu, nu = F.normalize(torch.randn(2, 2 * b, d, generator=generator, dtype=torch.float64), dim=-1)
    z = von_mises_fisher.sample(mu, 50.0, generator=generator)
    return q, z, mu, t, nu


class FixedBackward(nn.Module):
    """Stands for the online model: ``heads[-1].backward_mean`` returns given means."""

    def __init__(self, nu):
        super().__init__()
        self.heads = [SimpleNamespace(backward_mean=lambda t: nu)]


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_c_byol_loss_matches_a_transcription_pairing_codes_with_the_other_views_backward_encoder(beta):
    q, z, mu, t, nu = packed_outputs(3, 5, torch.Generator().manual_seed(0))
    loss = c_byol_loss(beta=beta, byol_loss_weight=3.0)
    loss.set_targets(t, FixedBackward(nu))
    value = loss(torch.cat([q, z, mu], dim=1))
    expected = c_byol_transcription(*(x.numpy() for x in (q, z, mu, t, nu)), 3.0, beta, 50.0, 10.0)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # CVR's code pairs each code with its own view's backward encoder: a different value.
    loss.set_targets(t, FixedBackward(nu.roll(3, 0)))
    assert loss(torch.cat([q, z, mu], dim=1)).item() != pytest.approx(expected, rel=1e-3)


def test_c_byol_with_beta_zero_is_byol_on_the_predictions():
    q, z, mu, t, nu = packed_outputs(4, 6, torch.Generator().manual_seed(1))
    loss = c_byol_loss(beta=0.0)
    loss.set_targets(t, FixedBackward(nu))
    reference = byol_loss()
    reference.set_targets(t, online_model=None)
    torch.testing.assert_close(loss(torch.cat([q, z, mu], dim=1)), reference(q))


def test_c_byol_rate_sends_gradients_to_codes_means_and_the_backward_encoder():
    q, z, mu, t, nu = packed_outputs(2, 4, torch.Generator().manual_seed(2))
    output = torch.cat([q, z, mu], dim=1).requires_grad_()
    nu = nu.clone().requires_grad_()
    loss = c_byol_loss()
    loss.set_targets(t, FixedBackward(nu))
    loss(output).backward()
    dq, dz, dmu = output.grad.chunk(3, dim=1)
    assert all(g.abs().sum() > 0 for g in (dq, dz, dmu, nu.grad))
    # L holds -beta/B * kappa_b * nu_r'.z_r (r' the other view of r): d/dnu_r' = -beta * kappa_b / B * z_r.
    torch.testing.assert_close(nu.grad, -1.0 * 10.0 / 2 * z.roll(2, 0), rtol=1e-5, atol=1e-6)


def head(kappa_e: float = 16384.0, dims=(8, 16, 8)) -> StochasticPredictor:
    torch.manual_seed(0)
    return StochasticPredictor(model_config(), list(dims), kappa_e)


def test_stochastic_predictor_samples_around_its_mean_in_training_and_not_in_eval():
    predictor = head(kappa_e=20.0)
    projections = torch.randn(4000, 8)
    q, z, mu = predictor(projections).chunk(3, dim=1)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4000))
    torch.testing.assert_close(mu.norm(dim=1), torch.ones(4000))
    mean_cos = (z * mu).sum(1).mean().item()
    assert mean_cos == pytest.approx(von_mises_fisher.mean_resultant_length(8, 20.0), abs=0.01)
    torch.testing.assert_close(q, predictor.prediction(z))
    predictor.eval()
    q, z, mu = predictor(projections).chunk(3, dim=1)
    assert torch.equal(z, mu)


def test_stochastic_predictor_rejects_codes_outside_the_projection_space():
    with pytest.raises(ValueError, match=r"dims=\[8, 16, 4\]"):
        head(dims=(8, 16, 4))


# DDP: the backward encoder is used outside the model's forward; its gradients must still be averaged.

IMAGES_PER_RANK, WORLD = 3, 2


class Predictor(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = nn.ModuleList([head(kappa_e=50.0, dims=(5, 7, 5))])

    def forward(self, x):
        return self.heads[0](x)


def inputs_of(rank=None):
    generator = torch.Generator().manual_seed(3)
    projections, targets = torch.randn(2, 2, IMAGES_PER_RANK * WORLD, 5, generator=generator)
    if rank is not None:
        rows = slice(rank * IMAGES_PER_RANK, (rank + 1) * IMAGES_PER_RANK)
        projections, targets = projections[:, rows], targets[:, rows]
    return projections.reshape(-1, 5), targets.reshape(-1, 5)


def c_byol_step(rank=None):
    model = Predictor().eval()  # eval: codes are the means, BatchNorm uses its (initial) statistics
    projections, targets = inputs_of(rank)
    loss = c_byol_loss()

    def objective(output):
        loss.set_targets(targets, model)
        return loss(output)

    if rank is None:
        return loss_and_grads(model, projections, objective)
    return ddp_loss_and_grads(model, projections, objective)


def test_c_byol_on_two_ranks_equals_one_process_with_the_whole_batch(tmp_path):
    expected = c_byol_step()
    for result in run_on_ranks(c_byol_step, tmp_path, WORLD):
        # kappa-scaled fp32 log-densities summed in another order: tolerances 10x assert_matches'.
        torch.testing.assert_close(result["mean_value"], expected["value"], rtol=1e-5, atol=1e-5)
        for grad, expected_grad in zip(result["grads"], expected["grads"]):
            torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-5)
        # h_psi, used outside the model's forward, got the averaged gradient too.
        assert len(result["grads"]) == len(list(Predictor().parameters()))


# Configs and the launcher


@pytest.mark.parametrize(
    "name, overrides, key",
    [
        (BYOL_DIGITS, ["config.DATA.TRAIN.COLLATE_FUNCTION=multicrop_collator"], "config.DATA.TRAIN.COLLATE_FUNCTION"),
        (BYOL_DIGITS, ["config.MODEL.HEAD.PARAMS.1.1.dims=[128,1024,64]"], "config.MODEL.HEAD.PARAMS"),
        (C_BYOL_DIGITS, ["config.MODEL.HEAD.PARAMS.1.0=mlp"], r"config.MODEL.HEAD.PARAMS\[-1\]\[0\]"),
        (C_BYOL_DIGITS, ["+config.LOSS.c_byol_loss.kappa_e=1024.0"], "config.LOSS.c_byol_loss.kappa_e"),
    ],
)
def test_bad_byol_configs_name_the_key(name, overrides, key):
    with pytest.raises(ConfigError, match=key):
        compose([f"config={name}", *overrides])  # runs the plugin's checks, as the launcher does


def test_c_byol_reads_kappa_e_from_the_stochastic_predictor():
    config = compose([f"config={C_BYOL_DIGITS}"])[1]
    assert config.LOSS.c_byol_loss.kappa_e == 16384.0


# 2 processes for BYOL only: the momentum-target hook on a DDP-wrapped model is the same for both.
# One-process BYOL runs in test_target_survives_checkpoint_and_auto_resume_bit_exactly.
@pytest.mark.slow
@pytest.mark.parametrize("name, processes", [(BYOL_DIGITS, 2), (C_BYOL_DIGITS, 1)])
def test_byol_and_c_byol_train_through_the_launcher(run_launcher, name, processes):
    overrides = ["config.OPTIMIZER.num_epochs=1", f"config.DISTRIBUTED.NUM_PROC_PER_NODE={processes}"]
    out = run_launcher(overrides, config=name)
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 // processes and all(math.isfinite(x) for x in losses)
    checkpoint = load(out / "model_final_checkpoint_phase0.torch")["classy_state_dict"]
    assert any(key.startswith("target.trunk.") for key in checkpoint["loss"])
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["LOSS"]["name"] == name.split("/")[1] + "_loss"


@pytest.mark.slow
def test_target_survives_checkpoint_and_auto_resume_bit_exactly(run_launcher, tmp_path):
    two_epochs = ["config.OPTIMIZER.num_epochs=2"]
    straight = run_launcher(two_epochs, name="straight", config=BYOL_DIGITS)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / "model_phase0.torch", resumed / "model_phase0.torch")
    shutil.copy(straight / "model_phase0.torch", resumed / "checkpoint.torch")
    run_launcher(two_epochs, name="resumed", config=BYOL_DIGITS)
    assert [r["iter"] for r in logged(resumed) if "loss" in r][0] == 4
    final = "model_final_checkpoint_phase1.torch"
    a, b = (load(run / final)["classy_state_dict"] for run in (straight, resumed))
    assert any(key.startswith("target.") for key in a["loss"])
    assert_same_tensors(a["loss"], b["loss"])  # the momentum target
    assert_same_tensors(a["base_model"], b["base_model"])
    # Had the resumed run rebuilt the target from the online weights, they would differ:
    epoch1 = load(straight / "model_phase0.torch")["classy_state_dict"]
    online = epoch1["base_model"]["model"]["trunk"]
    target = {k[len("target.trunk.") :]: v for k, v in epoch1["loss"].items() if k.startswith("target.trunk.")}
    assert any(not torch.equal(online[k], target[k]) for k in target if k in online)


# (recipe, lr per 256 images, weight decay, epochs, momentum, byol_loss_weight): CVR scripts/cbyol.sh
IMAGENET_RECIPES = [
    ("byol/byol_resnet50_e1000", 0.2, 1.5e-6, 1000, 0.996, 2.0),
    ("byol/byol_resnet50_e300", 0.3, 1e-6, 300, 0.99, 5.0),
    ("byol/byol_resnet50w2_e1000", 0.2, 1.5e-6, 1000, 0.996, 2.0),
    ("c_byol/c_byol_resnet50_e1000", 0.25, 1.5e-6, 1000, 0.996, 2.0),
    ("c_byol/c_byol_resnet50_e300", 0.35, 1e-6, 300, 0.99, 5.0),
    ("c_byol/c_byol_resnet50_e1500", 0.25, 1.5e-6, 1500, 0.996, 2.0),
    ("c_byol/c_byol_resnet50w2_e1000", 0.25, 1.5e-6, 1000, 0.996, 2.0),
    ("c_byol/c_byol_resnet101_e1000", 0.25, 1.5e-6, 1000, 0.996, 2.0),
    ("c_byol/c_byol_resnet152_e1000", 0.25, 1.5e-6, 1000, 0.996, 2.0),
]


@pytest.mark.parametrize("recipe, lr, wd, epochs, momentum, weight", IMAGENET_RECIPES)
def test_imagenet_recipes_compose_with_the_authors_settings(recipe, lr, wd, epochs, momentum, weight):
    config = compose([f"config=pretrain/{recipe}"])[1]
    data, optim = config.DATA.TRAIN, config.OPTIMIZER
    batch = data.BATCHSIZE_PER_REPLICA * config.DISTRIBUTED.NUM_PROC_PER_NODE * config.DISTRIBUTED.NUM_NODES
    assert batch == 4096 and data.COLLATE_FUNCTION == "simclr_collator"
    warmup, cosine = optim.param_schedulers.lr.schedulers
    assert warmup["end_value"] == cosine["start_value"] == pytest.approx(lr * batch / 256)
    assert optim.param_schedulers.lr.lengths[0] * epochs == pytest.approx(10)  # warm-up epochs
    assert (optim.num_epochs, optim.weight_decay, optim.name) == (epochs, wd, "lars")
    block = config.LOSS[config.LOSS.name]
    assert (block.momentum, block.byol_loss_weight) == (momentum, weight)
    trunk = config.MODEL.TRUNK.RESNETS
    width = 2 if "w2" in recipe else 1
    assert (trunk.DEPTH, trunk.WIDTH_MULTIPLIER) == (int(recipe.split("resnet")[1][:3].rstrip("w_")), width)
    projector, predictor = config.MODEL.HEAD.PARAMS
    assert projector[1]["dims"] == [2048 * width, 4096, 256] and predictor[1]["dims"] == [256, 4096, 256]
    if config.LOSS.name == "c_byol_loss":
        assert predictor[0] == "stochastic_predictor"
        assert (block.kappa_e, block.kappa_b, block.beta) == (16384.0, 10.0, 1.0)


@pytest.mark.slow
def test_c_byol_imagenet_model_feeds_its_loss():
    config = compose(["config=pretrain/c_byol/c_byol_resnet50_e1000"])[1]
    torch.manual_seed(0)
    model = build_model(config.MODEL, config.OPTIMIZER)
    images = torch.randn(4, 3, 64, 64)  # 2 images x 2 views, as simclr_collator stacks them
    (output,) = model([images])
    assert output.shape == (4, 3 * 256)
    loss = build_loss({"name": "c_byol_loss", **config.LOSS.c_byol_loss})
    task = SimpleNamespace(loss=loss, model=model, device=torch.device("cpu"), train=True)
    task.last_batch = SimpleNamespace(sample={"input": [images]})
    MomentumTargetHook().on_start(task)
    MomentumTargetHook().on_forward(task)
    value = loss(output)
    value.backward()
    assert torch.isfinite(value)
    assert model.heads[1].backward_encoder.clf[0].weight.grad.abs().sum() > 0  # h_psi is trained
    assert all(p.grad is None for p in loss.target.parameters())
