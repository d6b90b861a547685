"""Contrastive ISSL: this rank's student embeddings scored against every rank's teacher embeddings.

Shared by ``cissl_loss`` and ``asymmetric_simclr_loss``. Both receive ``output = [teacher,
student]``, each ``(2 * B, D)`` crop-major (the B images of view 0, then those of view 1) and
un-normalised. Row ``r = v * B + i`` (view ``v`` of image ``i``) is scored against all
``2 * B * world_size`` teacher embeddings, gathered from every rank in rank order with VISSL's
gradient-keeping gather. Among the columns, ``offset + v * B + i`` is the same view's teacher
embedding and ``offset + (1 - v) * B + i`` the other view's, ``offset = rank * 2 * B``.

Each rank returns the mean over its own rows; DDP's gradient average then equals the whole-batch
mean, which needs the same B on every rank (``DATA.TRAIN.DROP_LAST: True`` when there are several).
"""
import pprint
from typing import Any, Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F
from classy_vision.generic.distributed_util import get_rank
from classy_vision.losses import ClassyLoss
from vissl.utils.distributed_utils import gather_from_all

from vissl_issl.config import (
    ConfigError,
    count_crops,
    loss_block,
    loss_params,
    require,
    route_heads_to_crops,
    teacher_student_dim,
)

DEFAULTS: Dict[str, Any] = {"temperature": 0.1}


def similarity_logits(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    """``normalize(student) @ normalize(gathered teacher).T / temperature``: ``(2B, 2B * world)``, fp32."""
    # VISSL calls the loss under autocast, which would run this product in fp16.
    with torch.autocast(device_type=student.device.type, enabled=False):
        student = F.normalize(student.float(), dim=1)
        teacher = F.normalize(teacher.float(), dim=1)
        return student @ gather_from_all(teacher).t() / temperature


def view_columns(num_rows: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Column of each row's same-view and other-view teacher embedding, each ``(2B, 1)``."""
    rows = torch.arange(num_rows, device=device)
    same_view = rows + get_rank() * num_rows
    other_view = same_view + torch.where(rows < num_rows // 2, num_rows // 2, -(num_rows // 2))
    return same_view.unsqueeze(1), other_view.unsqueeze(1)


class ContrastiveISSLLoss(ClassyLoss):
    """A loss on ``similarity_logits`` and ``view_columns``; subclasses define ``objective`` and
    ``NAME``. Config: ``LOSS.<NAME>.temperature`` (float)."""

    NAME: str

    def __init__(self, temperature: float):
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"config.LOSS.{self.NAME}.temperature={temperature} must be > 0")
        self.temperature = temperature

    @classmethod
    def from_config(cls, loss_config: Mapping[str, Any]) -> "ContrastiveISSLLoss":
        return cls(**loss_params(loss_config, cls.NAME, DEFAULTS))

    @classmethod
    def infer_config(cls, config) -> None:
        """Check the config around the loss (2 views, [teacher, student] heads of one output size,
        both on every view, equal per-rank batches) and fill ``LOSS.<NAME>`` defaults, in place."""
        loss_block(config, cls.NAME, DEFAULTS)
        views = count_crops(config.DATA.TRAIN.TRANSFORMS)
        require(views, 2, "the number of views made by config.DATA.TRAIN.TRANSFORMS", cls.NAME)
        teacher_student_dim(config.MODEL.HEAD.PARAMS, cls.NAME)
        route_heads_to_crops(config, [None, None], cls.NAME)
        if config.DISTRIBUTED.NUM_NODES * config.DISTRIBUTED.NUM_PROC_PER_NODE > 1:
            require(config.DATA.TRAIN.DROP_LAST, True, "config.DATA.TRAIN.DROP_LAST", f"{cls.NAME} on several processes")

    def objective(self, logits: torch.Tensor, same_view: torch.Tensor, other_view: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, output: List[torch.Tensor], target: Any = None) -> torch.Tensor:
        teacher, student = output
        if teacher.shape != student.shape or teacher.ndim != 2 or len(teacher) % 2 or len(teacher) == 0:
            raise ValueError(
                f"{self.NAME} got teacher embeddings of shape {tuple(teacher.shape)} and student "
                f"embeddings of shape {tuple(student.shape)}; expected both (2 * B, D), crop-major, B > 0"
            )
        logits = similarity_logits(teacher, student, self.temperature)
        return self.objective(logits, *view_columns(len(student), logits.device))

    def __repr__(self) -> str:
        return pprint.pformat({"name": self._get_name(), "temperature": self.temperature}, indent=2)
