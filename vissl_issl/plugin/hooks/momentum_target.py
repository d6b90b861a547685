"""BYOL's momentum target: an exponential moving average of the online trunk and projector.

The target is a copy of the online model with its heads cut after the projector
(``MODEL.HEAD.PARAMS[0]``), so it runs on the batch exactly as VISSL runs the online model
(same input handling, SyncBN when the online model has it). It lives in ``task.loss.target``,
like VISSL's DINO teacher (``task.loss.momentum_teacher``): VISSL saves ``task.loss.state_dict()``
in every checkpoint and restores it before training, and the optimizer, which sees
``task.base_model`` only, never touches it.

After every optimizer step ``k`` of ``K`` (Grill et al. 2020; CVR ``model_util.py``)::

    m_k = 1 - (1 - m_0) * (1 + cos(pi * k / K)) / 2
    target <- m_k * target + (1 - m_k) * online          (parameters; buffers stay the target's)

so the momentum rises from ``m_0`` (``LOSS.<loss>.momentum``) to 1 at the end of training.
"""

import copy

from vissl_issl.plugin.hooks.base import PluginHook

import torch
from torch import nn
from vissl.models.model_helpers import get_no_ddp_model

from vissl_issl.maths.ema import ema_momentum, ema_update


def build_target(online: nn.Module) -> nn.Module:
    """A frozen copy of the online VISSL model whose heads stop after the projector."""
    target = copy.deepcopy(online)
    target.heads = target.heads[:1]
    target.requires_grad_(False)
    return target


class MomentumTargetHook(PluginHook):
    """Builds the target at the start of training, runs it before the loss, updates it after each
    step. The loss (:class:`vissl_issl.losses.byol.BYOLLoss`) owns it and takes its output through
    ``set_targets``."""

    def on_start(self, task) -> None:
        # After task.prepare(): a resumed loss already holds the checkpointed target's weights.
        if task.loss.target is None:
            task.loss.attach_target(build_target(get_no_ddp_model(task.model)).to(task.device))

    def on_forward(self, task) -> None:
        # BYOL's target normalises with batch statistics, like the online network in training.
        task.loss.target.train(task.train)
        with torch.no_grad():
            (target_output,) = task.loss.target(task.last_batch.sample["input"])
        task.loss.set_targets(target_output, get_no_ddp_model(task.model))

    def on_update(self, task) -> None:
        momentum = ema_momentum(task.iteration, task.max_iteration, task.loss.momentum)
        ema_update(task.loss.target, get_no_ddp_model(task.model), momentum)
