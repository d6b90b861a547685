"""Stop training at the first non-finite loss or model state, before any checkpoint can hold it.

VISSL's ``HOOKS.CHECK_NAN`` hooks raise on a non-finite loss with its value only, and on a
non-finite model output they (and VISSL's checkpoint hook, whatever ``CHECK_NAN`` says) save the
model as ``model_iteration<N>.torch``: BatchNorm statistics that already hold the bad batch, and
weights that a non-finite update may have made NaN, in a file ``checkpoint.torch`` then points at
and AUTO_RESUME takes when iteration checkpoints are on. With ``HOOKS.CHECK_NAN`` (VISSL's default)
:func:`guard_non_finite` replaces those hooks and that save by :class:`NonFiniteHook`:

- **The loss**, after VISSL's all-reduce (the mean over ranks, already copied to the host by VISSL:
  the check costs nothing). A non-finite loss on one rank makes the mean non-finite on every rank,
  so all ranks stop at the same step; they first exchange which of the loss's
  :attr:`~vissl_issl.losses.base.MethodLoss.last_terms` and model outputs went non-finite on which
  rank, so every rank's message names them.
- **The model state after the optimizer step** (``on_update``, before VISSL's checkpoint hook runs at
  ``on_step`` or ``on_phase_end``): the parameters and floating-point buffers of the model and the
  loss, in one fused reduction and one host sync per step, the verdict all-reduced so that every
  rank stops (FSDP shards and BatchNorm buffers differ between ranks). A non-finite gradient is
  judged by what it did: without a loss scaler it makes the stepped parameters non-finite and the
  message names the parameters whose gradients are non-finite; under AMP's loss scaling the scaler
  skips such a step by design, the state stays finite and training goes on, as it does for a
  gradient that a hook drops (frozen parameters) before the step.

The error (:class:`NonFiniteError`) names the step (``task.iteration``: the updates done before
it, so ``model_iteration<N>.torch`` holds the state it started from), what went non-finite, and the
newest checkpoint of ``CHECKPOINT.DIR``, which, written before the failure, holds finite state.
"""

import math
from itertools import chain
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from vissl_issl.plugin.hooks.base import PluginHook

import torch
import torch.distributed as dist
from classy_vision.hooks import ClassyHook
from vissl.hooks.log_hooks import LogLossMetricsCheckpointHook
from vissl.hooks.state_update_hooks import CheckNanLossHook, CheckNanModelOutputHook

from vissl_issl.maths.distributed import rank, world_size

NAMED = 5  # tensors named in a message; the rest are counted


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or model state (VISSL's hooks raise FloatingPointError)."""


class CheckpointWithoutNanDumpHook(LogLossMetricsCheckpointHook):
    """VISSL's checkpoint hook without its save of the model on a non-finite model output."""

    on_forward = ClassyHook._noop


def guard_non_finite(hooks: Sequence[ClassyHook]) -> List[ClassyHook]:
    """``hooks`` (VISSL's defaults) without VISSL's NaN hooks, with VISSL's checkpoint hook replaced
    by :class:`CheckpointWithoutNanDumpHook`, and with :class:`NonFiniteHook` appended."""
    guarded: List[ClassyHook] = []
    for hook in hooks:
        if type(hook) is LogLossMetricsCheckpointHook:
            guarded.append(CheckpointWithoutNanDumpHook(hook.world_size))
        elif type(hook) not in (CheckNanLossHook, CheckNanModelOutputHook):
            guarded.append(hook)
    return guarded + [NonFiniteHook()]


def per_rank(local: torch.Tensor) -> torch.Tensor:
    """``(world_size, *local.shape)``: every rank's ``local``, on every rank (one all-reduce)."""
    rows = local.new_zeros((world_size(), *local.shape))
    rows[rank()] = local
    if world_size() > 1:
        dist.all_reduce(rows)
    return rows


def is_finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def output_tensors(output) -> Iterator[torch.Tensor]:
    """The tensors of a model output (a tensor or nested lists of them)."""
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, (list, tuple)):
        for item in output:
            yield from output_tensors(item)


def listing(names: Sequence[str]) -> str:
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(names[:NAMED]) + more


def ranks(flags: torch.Tensor) -> str:
    """``" (rank 1)"`` / ``" (ranks 0, 1)"`` for the ranks whose flag is set; ``""`` on one process."""
    found = [str(rank) for rank in flags.nonzero().flatten().tolist()]
    if len(flags) == 1 or not found:
        return ""
    return f" (rank{'s' if len(found) > 1 else ''} {', '.join(found)})"


def last_checkpoint(folder: str) -> str:
    """The newest checkpoint VISSL wrote in ``folder`` (FSDP's shard files aside), in words."""
    written = [path for path in Path(folder).glob("model_*.torch") if "_shard" not in path.name]
    newest: Optional[Path] = max(written, key=lambda path: path.stat().st_mtime_ns, default=None)
    if newest is None:
        return f"No checkpoint was written in {folder} before it."
    return f"The last checkpoint, written before it and left as it was: {newest.resolve()}."


def step_name(task) -> str:
    return f"step {task.iteration}" + ("" if task.train else " of a test phase")


def state_tensors(task) -> Iterator[Tuple[str, torch.Tensor]]:
    """The floating-point parameters and buffers of the model and of the loss, by name."""
    for prefix, module in (("", task.base_model), ("loss.", task.loss)):
        for name, tensor in chain(module.named_parameters(), module.named_buffers()):
            if tensor.is_floating_point() and tensor.numel():
                yield prefix + name, tensor


def non_finite_ranks(task, exact: bool) -> torch.Tensor:
    """Per rank (an all-reduce), whether its model or loss state holds a non-finite value. Not
    ``exact``: whether the sum of the tensors' 2-norms is non-finite, in one fused reduction per
    device and dtype (what ``clip_grad_norm_`` uses) and without a host sync before the all-reduce;
    that sum also overflows for finite values beyond about 1e19, which only ``exact`` tells apart."""
    tensors = [tensor for _, tensor in state_tensors(task)]
    if exact:
        local = torch.tensor(not all(is_finite(tensor) for tensor in tensors), device=tensors[0].device)
    else:
        local = ~torch.isfinite(torch.stack(torch._foreach_norm(tensors)).sum())
    return per_rank(local.float().reshape(1)).cpu().flatten()


class NonFiniteHook(PluginHook):
    """The checks of the module docstring: on the loss at ``on_loss_and_meter``, on the model and
    loss state at ``on_update``."""

    def on_loss_and_meter(self, task) -> None:
        if math.isfinite(task.last_batch.loss.item()):
            return
        terms = dict(getattr(task.loss, "last_terms", {}))
        names = ["model output", *terms]
        outputs_finite = all(is_finite(output) for output in output_tensors(task.last_batch.model_output))
        local = torch.tensor([not outputs_finite, *(not is_finite(term) for term in terms.values())], dtype=torch.float)
        flags = per_rank(local.to(task.last_batch.loss.device)).cpu()
        loss_name = getattr(task.loss, "NAME", type(task.loss).__name__)
        bad_terms = [f"{name}{ranks(flags[:, i])}" for i, name in enumerate(names) if i and flags[:, i].any()]
        if bad_terms:
            culprit = f"Non-finite terms of {loss_name}: {', '.join(bad_terms)}."
        elif terms:
            culprit = f"Every term of {loss_name} ({', '.join(terms)}) was finite."
        else:
            culprit = f"{loss_name} records no terms (MethodLoss.record_terms)."
        if flags[:, 0].any():
            outputs = f"The model output was non-finite{ranks(flags[:, 0])}."
        else:
            outputs = "The model output was finite."
        raise NonFiniteError(
            f"Non-finite loss at {step_name(task)}: the mean over ranks is {task.last_batch.loss.item()}. "
            f"{culprit} {outputs} {last_checkpoint(task.checkpoint_folder)}"
        )

    def on_update(self, task) -> None:
        if not non_finite_ranks(task, exact=False).any():
            return
        flags = non_finite_ranks(task, exact=True)
        if not flags.any():
            return
        state = [name for name, tensor in state_tensors(task) if not is_finite(tensor)]
        grads = [
            name
            for name, parameter in task.base_model.named_parameters()
            if parameter.grad is not None and not is_finite(parameter.grad)
        ]
        gradients = f"Non-finite gradients: {listing(grads)}." if grads else "Every gradient was finite."
        here = f"Non-finite after the update: {listing(state)}. {gradients}" if state else "Finite on this rank."
        raise NonFiniteError(
            f"Non-finite model state after the optimizer update of {step_name(task)}{ranks(flags)}. {here} "
            f"{last_checkpoint(task.checkpoint_folder)}"
        )
