"""The DINO baseline runs on VISSL's own ``dino_loss`` and ``DINOHook``; the plugin's teacher hook
changes only the teacher's BatchNorm (the student's kind, where VISSL's always converts it to
SyncBatchNorm) and states the teacher-temperature warm-up and the frozen last layer in epochs."""

import functools
import math
import types

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin.hooks import hook_generator
from vissl_issl.plugin.hooks.dino_teacher import DinoTeacherHook
from vissl_issl.plugin.hooks.grad_value_clip import GradValueClipHook
from vissl_issl.plugin.launcher import compose

import pytest
import torch
import torch.nn as nn
from ddp import run_on_ranks
from vissl.hooks.dino_hooks import DINOHook
from vissl.losses.dino_loss import DINOLoss
from vissl.models import build_model

from conftest import TINY, launch, logged
from vissl_issl.experiments.runner import DIGITS_DATA

RECIPE = "dino/dino_resnet18_tinyimagenet"
# The TinyImageNet recipe on the embedded digits at 16 px on CPU, 30 epochs (a tenth of 300).
DIGITS = [
    *DIGITS_DATA,
    "config.OPTIMIZER.num_epochs=30",
    "config.OPTIMIZER.lr_schedule.warmup_epochs=1",
    "config.LOSS.dino_loss.teacher_temp_warmup_epochs=5",
]


@functools.lru_cache(maxsize=None)
def digits_config(*overrides: str):
    return compose([f"config=pretrain/{RECIPE}", *DIGITS, *overrides])[1]


def fake_task(config, model: nn.Module, max_iteration: int = 300):
    """What the DINO hooks read of VISSL's task."""
    loss = DINOLoss(config.LOSS.dino_loss)
    return types.SimpleNamespace(config=config, model=model, loss=loss, device=torch.device("cpu"), iteration=0,
                                 max_iteration=max_iteration)  # fmt: skip


def crops(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 3, 16, 16, generator=generator) for _ in range(2)]


def teachers(config):
    """The teacher that VISSL's DINOHook builds and the one the plugin's builds, from one student."""
    torch.manual_seed(0)
    student = build_model(config.MODEL, config.OPTIMIZER)
    built = []
    for hook in (DINOHook(), DinoTeacherHook()):
        task = fake_task(config, student)
        hook._build_momentum_network(task)
        built.append(task.loss.momentum_teacher)
    return built


def has_sync_bn(model: nn.Module) -> bool:
    return any(isinstance(module, nn.SyncBatchNorm) for module in model.modules())


def test_hook_generator_puts_the_plugins_teacher_where_vissls_was_and_clips_by_value():
    hooks = hook_generator(digits_config())
    assert not [hook for hook in hooks if type(hook) is DINOHook]
    assert len([hook for hook in hooks if isinstance(hook, DinoTeacherHook)]) == 1
    [clip] = [hook for hook in hooks if isinstance(hook, GradValueClipHook)]
    assert clip.value == 2.0


def test_on_one_process_the_plugins_teacher_is_vissls_without_sync_bn():
    vissl_teacher, plugin_teacher = teachers(digits_config())
    assert has_sync_bn(vissl_teacher) and not has_sync_bn(plugin_teacher)
    # One process: SyncBatchNorm computes plain BatchNorm, so both teachers give the same outputs.
    assert torch.equal(vissl_teacher(crops())[0][-1], plugin_teacher(crops())[0][-1])


def test_the_teacher_is_converted_when_the_student_is():
    _, plugin_teacher = teachers(digits_config("config.MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN=True"))
    assert has_sync_bn(plugin_teacher)


def teacher_outputs_on_a_rank(rank: int):
    vissl_teacher, plugin_teacher = teachers(digits_config())
    try:
        vissl_teacher(crops(rank))
        vissl_error = ""
    except ValueError as error:
        vissl_error = str(error)
    return {"vissl_error": vissl_error, "plugin": plugin_teacher(crops(rank))[0][-1]}


def test_on_two_cpu_ranks_vissls_teacher_fails_and_the_plugins_computes(tmp_path):
    for rank, result in enumerate(run_on_ranks(teacher_outputs_on_a_rank, tmp_path)):
        assert "SyncBatchNorm expected input tensor to be on GPU" in result["vissl_error"]
        assert result["plugin"].shape == (16, 1000) and torch.isfinite(result["plugin"]).all()


def test_epochs_become_iterations_of_the_run():
    config = digits_config("config.LOSS.dino_loss.freeze_last_layer_epochs=2")
    torch.manual_seed(0)
    task = fake_task(config, build_model(config.MODEL, config.OPTIMIZER), max_iteration=300)  # 10 steps per epoch
    hook = DinoTeacherHook()
    hook.on_start(task)
    assert task.loss.loss_config["teacher_temp_warmup_iters"] == 50  # 5 of the 30 epochs
    prototypes = {id(p) for p in task.model.heads[0].prototypes0.parameters()}
    for iteration, frozen in ((0, True), (19, True), (20, False)):
        for parameter in task.model.parameters():
            parameter.grad = torch.ones_like(parameter)
        task.iteration = iteration
        hook.on_backward(task)
        for parameter in task.model.parameters():
            assert (parameter.grad is None) == (frozen and id(parameter) in prototypes)


@pytest.mark.slow
def test_dino_trains_on_cpu_through_the_launcher(tmp_path):
    out = tmp_path / "run"
    tiny = [override for override in TINY if ".TRANSFORMS=" not in override]  # the recipe's views
    overrides = [*DIGITS, *tiny, "config.OPTIMIZER.num_epochs=2", "config.LOSS.dino_loss.teacher_temp_warmup_epochs=1"]
    overrides.append(f"config.CHECKPOINT.DIR={out}")
    result = launch([f"config=pretrain/{RECIPE}", *overrides], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = [record["loss"] for record in logged(out) if "loss" in record]
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)  # 2 epochs of 64 / 16
    state = torch.load(out / "model_final_checkpoint_phase1.torch", map_location="cpu", weights_only=False)
    loss_state = state["classy_state_dict"]["loss"]
    assert "center" in loss_state and any(key.startswith("momentum_teacher.") for key in loss_state)
