"""VISSL's DINO teacher (``DINOHook``: EMA teacher, teacher-temperature warm-up, centering in
``dino_loss``) made to run where VISSL's cannot, with its schedules stated in epochs.

- **BatchNorm as the student's.** VISSL converts the teacher to ``SyncBatchNorm`` whatever the
  run, and PyTorch's SyncBatchNorm refuses CPU tensors once more than one process trains. The
  teacher here is converted only when the student is (``config.MODEL.SYNC_BN_CONFIG.
  CONVERT_BN_TO_SYNC_BN``), so its BN computes what the student's does on every machine.
- **Epochs, not iterations.** ``config.LOSS.dino_loss.teacher_temp_warmup_epochs`` (when set)
  replaces VISSL's ``teacher_temp_warmup_iters``, and ``freeze_last_layer_epochs`` cancels the
  gradients of the prototypes (DINO's ``cancel_gradients_last_layer``: ``p.grad = None``, so Adam
  and SGD leave them and their state untouched) for that many epochs; both are converted with the
  run's own iterations per epoch, ``task.max_iteration / OPTIMIZER.num_epochs``, so another batch,
  dataset size or epoch count keeps them right (the launcher checks both keys before training:
  :func:`vissl_issl.plugin.inference.check_dino_epochs`).

``vissl_issl.plugin.hooks.hook_generator`` puts this hook where VISSL's would be; it imports this
module when it runs, as VISSL's launcher imports ``vissl.hooks``.
"""

from unittest import mock

import torch.nn as nn
from vissl.hooks.dino_hooks import DINOHook
from vissl.models.model_helpers import get_no_ddp_model


def epochs_to_iterations(task, epochs: float) -> int:
    return round(epochs * task.max_iteration / task.config.OPTIMIZER.num_epochs)


class DinoTeacherHook(DINOHook):
    def on_start(self, task) -> None:
        loss_config = task.loss.loss_config
        if loss_config.get("teacher_temp_warmup_epochs") is not None:
            loss_config["teacher_temp_warmup_iters"] = epochs_to_iterations(
                task, loss_config["teacher_temp_warmup_epochs"]
            )
        self.frozen_iterations = epochs_to_iterations(task, loss_config.get("freeze_last_layer_epochs") or 0)
        super().on_start(task)

    def on_backward(self, task) -> None:
        if task.iteration >= self.frozen_iterations:
            return
        head = get_no_ddp_model(task.model).heads[0]
        for index in range(head.nmb_heads):
            for parameter in getattr(head, f"prototypes{index}").parameters():
                parameter.grad = None

    def _build_momentum_network(self, task) -> None:
        if task.config.MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN:
            super()._build_momentum_network(task)
            return
        # VISSL's method converts unconditionally; keep its teacher as built.
        with mock.patch.object(nn.SyncBatchNorm, "convert_sync_batchnorm", side_effect=lambda module: module):
            super()._build_momentum_network(task)
