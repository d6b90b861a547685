"""Contrastive ISSL: this rank's student embeddings scored against every rank's teacher embeddings.

Shared by ``cissl_loss`` and ``asymmetric_simclr_loss``. Both receive ``output = [teacher,
student]``, each ``(2 * B, D)`` view-major and un-normalised; every student row is scored against
the ``2 * B * world_size`` teacher rows of all ranks (:mod:`vissl_issl.maths.gathered_batch`).
"""

from typing import Any, Dict, List

import torch

from vissl_issl.config import ConfigError, count_crops, require, route_heads_to_crops, teacher_student_dim
from vissl_issl.losses.base import MethodLoss
from vissl_issl.maths.gathered_batch import similarity_logits


class ContrastiveISSLLoss(MethodLoss):
    """A loss on the ``(2B, 2B * world)`` similarity logits; subclasses define ``objective`` and
    ``NAME``. Config: ``LOSS.<NAME>.temperature`` (float)."""

    DEFAULTS: Dict[str, Any] = {"temperature": 0.1}

    def __init__(self, temperature: float):
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"{self.key('temperature')}={temperature} must be > 0")
        self.temperature = temperature

    @classmethod
    def infer(cls, config, block) -> None:
        """2 views, [teacher, student] heads of one output size, both on every view."""
        views = count_crops(config.DATA.TRAIN.TRANSFORMS)
        require(views, 2, "the number of views made by config.DATA.TRAIN.TRANSFORMS", cls.NAME)
        teacher_student_dim(config.MODEL.HEAD.PARAMS, cls.NAME)
        route_heads_to_crops(config, [None, None], cls.NAME)

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, output: List[torch.Tensor], target: Any = None) -> torch.Tensor:
        teacher, student = output
        if teacher.shape != student.shape or teacher.ndim != 2 or len(teacher) % 2 or len(teacher) == 0:
            raise ValueError(
                f"{self.NAME} got teacher embeddings of shape {tuple(teacher.shape)} and student "
                f"embeddings of shape {tuple(student.shape)}; expected both (2 * B, D), crop-major, B > 0"
            )
        return self.objective(similarity_logits(student, teacher, self.temperature))
