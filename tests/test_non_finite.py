"""A non-finite loss or model state stops the run, naming the step, the loss terms, outputs or
tensors that went non-finite and the last checkpoint, which no save after the failure touches."""

import hashlib
import os
import re
import types
from pathlib import Path
from typing import Dict, List, Optional
from unittest import mock

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin.hooks import hook_generator
from vissl_issl.plugin.hooks.non_finite import CheckpointWithoutNanDumpHook, NonFiniteError, NonFiniteHook
from vissl_issl.plugin.launcher import compose

import pytest
import torch
import torch.distributed as dist
from ddp import run_on_ranks
from torch import nn
from vissl.hooks.log_hooks import LogLossMetricsCheckpointHook
from vissl.hooks.state_update_hooks import CheckNanLossHook, CheckNanModelOutputHook

from conftest import DISSL_DIGITS, REPO, run_tool
from vissl_issl.checkpoints import read_vissl_model
from vissl_issl.losses.base import MethodLoss

NAN = float("nan")


class MeanAndLog(MethodLoss):
    """Two named terms: the log goes NaN on a negative output while the mean stays finite."""

    def forward(self, output: torch.Tensor, target=None) -> torch.Tensor:
        mean, log = output.mean(), output.log().mean()
        self.record_terms(mean=mean, log=log)
        return mean + log


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def task_after_loss(folder: Path, output: torch.Tensor, loss: nn.Module, reduced: Optional[torch.Tensor] = None):
    """What the hook reads of VISSL's task once the loss of ``output`` is computed (``reduced``:
    its mean over ranks, this rank's value by default)."""
    value = loss(output)
    last_batch = types.SimpleNamespace(loss=value.detach() if reduced is None else reduced, model_output=output)
    return types.SimpleNamespace(
        base_model=model(), loss=loss, last_batch=last_batch, iteration=6, train=True, checkpoint_folder=str(folder)
    )


def task_after_step(folder: Path, network: nn.Module) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        base_model=network, loss=MeanAndLog(), iteration=6, train=True, checkpoint_folder=str(folder)
    )


def step(network: nn.Module, gradient: float) -> None:
    """One SGD step of ``network`` whose gradients are all ``gradient``."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    for parameter in network.parameters():
        parameter.grad = torch.full_like(parameter, gradient)
    optimizer.step()


def error_of(call) -> str:
    with pytest.raises(NonFiniteError) as raised:
        call()
    return str(raised.value)


def checkpoints(folder: Path, *names: str) -> Path:
    """``names`` written into ``folder`` in this order (one second apart)."""
    folder.mkdir(exist_ok=True)
    for age, name in enumerate(reversed(names)):
        (folder / name).write_bytes(b"weights")
        os.utime(folder / name, (1e9 - age, 1e9 - age))
    return folder


def test_a_finite_step_passes(tmp_path):
    hook = NonFiniteHook()
    hook.on_loss_and_meter(task_after_loss(tmp_path, torch.rand(8, 3) + 0.1, MeanAndLog()))
    hook.on_update(task_after_step(tmp_path, model()))


def test_a_non_finite_term_is_named_with_the_step_and_the_last_checkpoint(tmp_path):
    names = ["model_phase0.torch", "model_iteration4.torch", "model_iteration4_shard0.torch"]  # oldest first
    folder = checkpoints(tmp_path / "run", *names)
    output = torch.rand(8, 3) - 0.5  # finite, partly negative: log is NaN, mean is not
    message = error_of(lambda: NonFiniteHook().on_loss_and_meter(task_after_loss(folder, output, MeanAndLog())))
    assert message.startswith("Non-finite loss at step 6: ")
    assert "Non-finite terms of MeanAndLog: log." in message
    assert "The model output was finite." in message
    assert f"The last checkpoint, written before it and left as it was: {folder / 'model_iteration4.torch'}." in message


def test_a_non_finite_model_output_is_named(tmp_path):
    output = torch.full((8, 3), NAN)
    message = error_of(lambda: NonFiniteHook().on_loss_and_meter(task_after_loss(tmp_path, output, MeanAndLog())))
    assert "Non-finite terms of MeanAndLog: mean, log." in message
    assert "The model output was non-finite." in message


class Log(nn.Module):
    """A loss that records no terms, as VISSL's own."""

    def forward(self, output: torch.Tensor) -> torch.Tensor:
        return output.log().mean()


def test_a_loss_without_named_terms_is_named_and_no_checkpoint_is_stated(tmp_path):
    task = task_after_loss(tmp_path, torch.rand(8, 3) - 0.5, Log())
    message = error_of(lambda: NonFiniteHook().on_loss_and_meter(task))
    assert "Log records no terms (MethodLoss.record_terms)." in message
    assert f"No checkpoint was written in {tmp_path} before it." in message


def test_a_non_finite_gradient_stops_the_run_at_the_step_it_poisoned(tmp_path):
    network = model()
    step(network, NAN)
    message = error_of(lambda: NonFiniteHook().on_update(task_after_step(tmp_path, network)))
    assert message.startswith("Non-finite model state after the optimizer update of step 6. ")
    assert "Non-finite after the update: 0.weight, 0.bias, 1.weight, 1.bias." in message
    assert "Non-finite gradients: 0.weight, 0.bias, 1.weight, 1.bias." in message


def test_a_step_the_loss_scaler_skipped_for_its_infinite_gradients_goes_on(tmp_path):
    network = model()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)  # the scaled gradients overflow
    scaler.scale(network(torch.rand(8, 3)).pow(2).mean()).backward()
    assert not all(torch.isfinite(p.grad).all() for p in network.parameters())
    scaler.step(optimizer)
    NonFiniteHook().on_update(task_after_step(tmp_path, network))


def test_huge_finite_weights_go_on(tmp_path):
    network = model()
    with torch.no_grad():
        network[0].weight.fill_(1e30)  # its 2-norm overflows in fp32; every value is finite
    NonFiniteHook().on_update(task_after_step(tmp_path, network))


def test_an_overflowed_buffer_is_named_with_finite_gradients(tmp_path):
    network = model()
    step(network, 1.0)
    network[1].running_var[0] = torch.inf
    message = error_of(lambda: NonFiniteHook().on_update(task_after_step(tmp_path, network)))
    assert "Non-finite after the update: 1.running_var. Every gradient was finite." in message


def digits_config(*overrides: str):
    return compose([f"config={DISSL_DIGITS}", *overrides])[1]


def test_the_plugins_check_replaces_vissls_with_check_nan():
    hooks = hook_generator(digits_config())
    assert not [hook for hook in hooks if type(hook) in (CheckNanLossHook, CheckNanModelOutputHook)]
    assert not [hook for hook in hooks if type(hook) is LogLossMetricsCheckpointHook]
    assert len([hook for hook in hooks if isinstance(hook, CheckpointWithoutNanDumpHook)]) == 1
    assert len([hook for hook in hooks if isinstance(hook, NonFiniteHook)]) == 1


def test_without_check_nan_vissls_hooks_stay():
    types_ = [type(hook) for hook in hook_generator(digits_config("config.HOOKS.CHECK_NAN=False"))]
    assert LogLossMetricsCheckpointHook in types_ and NonFiniteHook not in types_


def test_the_checkpoint_hook_no_longer_saves_the_model_of_a_non_finite_output(tmp_path):
    last_batch = types.SimpleNamespace(model_output=[torch.full((2, 3), NAN)], sample={"input": torch.zeros(2)})
    task = types.SimpleNamespace(last_batch=last_batch, iteration=6, checkpoint_folder=str(tmp_path))
    saved = {}
    for hook_type in (LogLossMetricsCheckpointHook, CheckpointWithoutNanDumpHook):
        with mock.patch.object(hook_type, "_checkpoint_model") as save:
            hook_type(world_size=1).on_forward(task)
        saved[hook_type] = save.called
    assert saved == {LogLossMetricsCheckpointHook: True, CheckpointWithoutNanDumpHook: False}


def messages_on_a_rank(rank: int, folder: str) -> Dict[str, str]:
    """Both checks on a rank where only rank 1 goes non-finite: a negative output (a NaN term)
    and a non-finite BatchNorm buffer (per-rank state)."""
    output = torch.rand(8, 3) + (0.1 if rank == 0 else -0.5)
    loss = MeanAndLog()
    reduced = loss(output).detach()
    dist.all_reduce(reduced)  # VISSL's all_reduce_mean; the mean of a NaN and a number is NaN
    task = task_after_loss(Path(folder), output, loss, reduced / 2)
    network = model()
    network[1].running_var[0] = torch.inf if rank == 1 else 1.0
    messages = {}
    for check, argument in (("on_loss_and_meter", task), ("on_update", task_after_step(Path(folder), network))):
        try:
            getattr(NonFiniteHook(), check)(argument)
            messages[check] = ""
        except NonFiniteError as error:
            messages[check] = str(error)
    return messages


def test_every_rank_stops_and_names_the_rank_that_went_non_finite(tmp_path):
    ranks = run_on_ranks(lambda rank: messages_on_a_rank(rank, str(tmp_path)), tmp_path)
    for rank, messages in enumerate(ranks):
        assert "Non-finite terms of MeanAndLog: log (rank 1)." in messages["on_loss_and_meter"]
        assert "Non-finite model state after the optimizer update of step 6 (rank 1)." in messages["on_update"]
        here = "Finite on this rank." if rank == 0 else "Non-finite after the update: 1.running_var."
        assert here in messages["on_update"]


# Launcher runs ---------------------------------------------------------------------------------

POISONING_LAUNCHER = REPO / "tests" / "poisoning_launcher.py"
# 4 steps per epoch on one process (2 on two); a phase checkpoint after epoch 0, the NaN in epoch 1.
RUN = [
    f"config={DISSL_DIGITS}",
    "config.DATA.TRAIN.DATA_LIMIT=32",
    "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=8",
    "config.DATA.NUM_DATALOADER_WORKERS=0",
    "config.CHECKPOINT.CHECKPOINT_FREQUENCY=1",
    "config.OPTIMIZER.num_epochs=2",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def poisoned_run(tmp_path: Path, where: str, step: int, rank: int = 0, processes: int = 1) -> str:
    """Output of a run poisoned at ``step`` on ``rank``; checks that it failed and that every
    checkpoint written before is byte for byte as it was, loads, and is the newest."""
    folder = tmp_path / "run"
    overrides = [*RUN, f"config.CHECKPOINT.DIR={folder}", f"config.DISTRIBUTED.NUM_PROC_PER_NODE={processes}"]
    env = {"NAN_IN": where, "NAN_STEP": str(step), "NAN_RANK": str(rank), "NAN_DIR": str(folder)}
    result = run_tool([POISONING_LAUNCHER, *overrides], tmp_path, **env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    before: List[str] = re.findall(r"^BEFORE (\S+) (\w+)$", result.stdout, re.MULTILINE)
    assert [name for name, _ in before] == ["checkpoint.torch", "model_phase0.torch"], output[-3000:]
    assert dict(before) == {name: sha256(folder / name) for name, _ in before}
    assert sorted(path.name for path in folder.glob("*.torch")) == ["checkpoint.torch", "model_phase0.torch"]
    assert (folder / "checkpoint.torch").resolve() == folder / "model_phase0.torch"
    model = read_vissl_model(folder / "model_phase0.torch")
    assert all(torch.isfinite(tensor).all() for tensor in {**model.trunk, **model.heads}.values())
    assert f"The last checkpoint, written before it and left as it was: {folder / 'model_phase0.torch'}." in output
    return output


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, expected",
    [
        ("term", "Non-finite loss at step 6: the mean over ranks is nan. Non-finite terms of dissl_loss: maximality. "
                 "The model output was finite."),
        ("output", "Non-finite loss at step 6: the mean over ranks is nan. Non-finite terms of dissl_loss: "
                   "distillation, maximality, det_inv. The model output was non-finite."),
        ("gradient", "Non-finite model state after the optimizer update of step 6. Non-finite after the update: "
                     "trunk._feature_blocks.conv1.weight"),
    ],
)  # fmt: skip
def test_a_run_stops_at_the_poisoned_step_and_keeps_its_last_checkpoint(tmp_path, where, expected):
    output = poisoned_run(tmp_path, where, step=6)
    assert expected in output
    if where == "gradient":
        assert "Non-finite gradients: trunk._feature_blocks.conv1.weight" in output


@pytest.mark.slow
def test_two_processes_stop_together_when_one_goes_non_finite(tmp_path):
    output = poisoned_run(tmp_path, "term", step=3, rank=1, processes=2)
    expected = (
        "Non-finite loss at step 3: the mean over ranks is nan. Non-finite terms of dissl_loss: maximality (rank 1)."
    )
    assert expected in output
