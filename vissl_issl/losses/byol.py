"""BYOL: bootstrap your own latent (Grill et al. 2020), as a VISSL loss with a momentum target.

VISSL 0.1.6 has no BYOL (only the unmerged pull request #454). The online network is VISSL's
standard model with two chained heads, projector then predictor; the target, an EMA copy of the
trunk and projector, is owned by this loss and run and updated by
:class:`vissl_issl.plugin.hooks.momentum_target.MomentumTargetHook` (added by the plugin's hook
generator for every :class:`BYOLLoss`).
"""

import logging
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vissl_issl.config import ConfigError, count_crops, head_output_dim, require
from vissl_issl.losses.base import MethodLoss
from vissl_issl.maths.gathered_batch import other_view


def normalized_squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||l2n(prediction) - l2n(target)||^2 = 2 - 2 cos`` per row: ``(N, d), (N, d) -> (N,)``, fp32."""
    return (F.normalize(prediction.float(), dim=1) - F.normalize(target.float(), dim=1)).pow(2).sum(dim=1)


class BYOLLoss(MethodLoss):
    r"""BYOL: each view's prediction regresses the other view's target projection.

    With online predictions ``q`` and target projections ``t`` (no gradient), both ``(2B, d)``
    view-major (the B images of view 0, then view 1; VISSL's ``simclr_collator``)::

        L = w / B * sum_i [ ||l2n(q_i^1) - l2n(t_i^2)||^2 + ||l2n(q_i^2) - l2n(t_i^1)||^2 ]

    the sum of both directions averaged over images (BYOL; VISSL PR #454's ``byol_loss`` is
    ``w = 1``; CVR's ``byol_loss_weight`` is ``w``). Each rank averages its own images, so with
    equal per-rank batches DDP's gradient average is the whole-batch gradient.

    ``forward(output, target)``: ``output`` the predictor's ``(2B, d)``; target ignored; fp32.
    The hook must have called :meth:`set_targets` for this batch.

    Config (``LOSS.byol_loss``):
        momentum (float): base EMA momentum m_0 of the target, cosine-raised to 1 (0.996: BYOL and
            CVR at 1000 epochs; 0.99 at 300).
        byol_loss_weight (float): w (2.0: CVR at 1000 epochs; 5.0 at 300).
    """

    NAME = "byol_loss"
    DEFAULTS: Dict[str, Any] = {"momentum": 0.996, "byol_loss_weight": 2.0}
    HOOKS = ("momentum_target",)

    def __init__(self, momentum: float, byol_loss_weight: float):
        super().__init__()
        if not 0 <= momentum < 1:
            raise ConfigError(f"{self.key('momentum')}={momentum} must be in [0, 1)")
        if not byol_loss_weight > 0:
            raise ConfigError(f"{self.key('byol_loss_weight')}={byol_loss_weight} must be > 0")
        self.momentum, self.byol_loss_weight = momentum, byol_loss_weight
        self.target: Optional[nn.Module] = None
        self.target_embeddings: Optional[torch.Tensor] = None
        self._checkpointed_target: Optional[Dict[str, torch.Tensor]] = None

    @classmethod
    def infer(cls, config, block) -> None:
        """Two views in one tensor through VISSL's standard model with chained heads whose first
        (projector) and last (predictor) outputs have one size."""
        require(
            count_crops(config.DATA.TRAIN.TRANSFORMS),
            2,
            "the number of views made by config.DATA.TRAIN.TRANSFORMS",
            cls.NAME,
        )
        require(config.DATA.TRAIN.COLLATE_FUNCTION, "simclr_collator", "config.DATA.TRAIN.COLLATE_FUNCTION", cls.NAME)
        require(config.MODEL.BASE_MODEL_NAME, "multi_input_output_model", "config.MODEL.BASE_MODEL_NAME", cls.NAME)
        heads = config.MODEL.HEAD.PARAMS
        if len(heads) < 2 or not all(isinstance(head[0], str) for head in heads):
            raise ConfigError(
                f"config.MODEL.HEAD.PARAMS={heads} must chain at least two heads, [projector, ..., predictor], "
                f"each one [name, options], for {cls.NAME}"
            )
        projector, predictor = head_output_dim(heads[0]), head_output_dim(heads[-1])
        if projector != predictor:
            raise ConfigError(
                f"config.MODEL.HEAD.PARAMS: the projector (first head) outputs {projector} but the predictor "
                f"(last head) outputs {predictor}; {cls.NAME} compares them"
            )

    def attach_target(self, target: nn.Module) -> None:
        """Own the momentum target, restoring the checkpointed weights if this run resumed."""
        self.target = target
        if self._checkpointed_target is not None:
            target.load_state_dict(self._checkpointed_target)
            self._checkpointed_target = None
            logging.info(f"{self.NAME}: momentum target restored from the checkpoint")

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True):
        # VISSL restores the loss before the hook has built the target: keep its weights until then.
        if self.target is None:
            prefix = "target."
            self._checkpointed_target = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            return None
        return super().load_state_dict(state_dict, strict)

    def set_targets(self, target_embeddings: torch.Tensor, online_model: nn.Module) -> None:
        """The target network's projections of this batch (no gradient), from the hook."""
        self.target_embeddings = target_embeddings

    def distortion(self, predictions: torch.Tensor) -> torch.Tensor:
        """``w * ||l2n(q) - l2n(other view's t)||^2`` per row, ``(2B,)``."""
        targets = self.target_embeddings
        if targets is None or targets.shape != predictions.shape or len(predictions) % 2:
            raise ValueError(
                f"{self.NAME} got predictions of shape {tuple(predictions.shape)} and target embeddings of "
                f"shape {None if targets is None else tuple(targets.shape)}; expected both (2 * B, d), view-major"
            )
        return self.byol_loss_weight * normalized_squared_error(predictions, other_view(targets))

    def forward(self, output: torch.Tensor, target: Any = None) -> torch.Tensor:
        return self.distortion(output).sum() / (len(output) // 2)
