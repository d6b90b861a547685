"""DISSL: distillation ISSL (Dubois, Hashimoto, Ermon, Liang, NeurIPS 2022)."""

from typing import Any, List, Optional, Union

import torch
import torch.nn.functional as F

from vissl_issl.config import ConfigError, count_crops, fill_or_check, route_heads_to_crops, teacher_student_dim
from vissl_issl.losses.base import MethodLoss
from vissl_issl.maths.marginal import entropy, global_marginal

KEY = "config.LOSS.dissl_loss"


def check_crops_for_teacher(crops: Any, num_crops: int) -> None:
    valid = (
        isinstance(crops, (list, tuple))
        and len(crops) >= 2
        and len(set(crops)) == len(crops)
        and all(isinstance(c, int) and 0 <= c < num_crops for c in crops)
    )
    if not valid:
        raise ConfigError(
            f"{KEY}.crops_for_teacher={crops} must hold at least 2 distinct crop indices in "
            f"range({num_crops}) (num_crops={num_crops})"
        )


def cross_entropy_to_other_crops(
    probs: torch.Tensor, log_probs: torch.Tensor, same_crop_log_probs: torch.Tensor
) -> torch.Tensor:
    """Mean over pairs (a, b != a) and samples of ``-sum_m probs[a] * log_probs[b]``.

    ``probs`` and ``same_crop_log_probs`` are ``(A, B, C)`` (row a is crop a's), ``log_probs`` is
    ``(K, B, C)`` over all K crops, one of which is crop a. Summing ``log_probs`` over crops once
    and removing the same-crop term covers all pairs without materialising them.
    """
    others = log_probs.sum(dim=0) - same_crop_log_probs
    return -(probs * others).sum(dim=-1).mean() / (log_probs.shape[0] - 1)


class DISSLLoss(MethodLoss):
    r"""DISSL loss: distillation, maximality (marginal entropy) and invariance + determinism.

    With teacher crops ``a`` in ``crops_for_teacher`` and student crops ``b`` in ``range(num_crops)``::

        t_a = softmax(teacher_logits_a / temperature_teacher)
        s_b = softmax(student_logits_b / temperature_student)
        CE(p -> q) = E_x[-sum_m p(m|x) log q(m|x)]
        L = mean_{a, b != a} CE(t_a -> s_b)
            - lambda_maximality * mean_a H(mean_{x in global batch} t_a(.|x))
            + beta_det_inv * mean_{a != a'} CE(t_a -> t_a')

    Every pair is averaged uniformly. Nothing is detached (the teacher gets gradients from all three
    terms) and there is no EMA. Logits are cast to fp32 before the temperature (AMP). The marginal is
    over the batch of all ranks (:mod:`vissl_issl.maths.marginal`).

    ``forward(output, target)``: ``output = [teacher_logits, student_logits]`` of shapes
    ``(len(crops_for_teacher) * B, num_classes)`` and ``(num_crops * B, num_classes)``, crop-major
    (all images of one crop, then the next) with teacher rows in ``crops_for_teacher`` order
    (:class:`vissl_issl.plugin.heads_on_crops.HeadsOnCropsModel` with
    ``MODEL.HEAD_CROPS: [crops_for_teacher, null]``). ``target`` is ignored. Returns a fp32 scalar.

    Names in the authors' code: ``lambda_maximality`` / ``beta_det_inv`` are ISSL's and the VISSL
    fork's ``beta_pM_unif`` / ``beta_H_MlZ``; ``temperature_teacher`` / ``temperature_student`` are
    the fork's ``temperature_assign`` / ``temperature_pred``; ``num_classes`` is ``n_Mx``.

    Config (``LOSS.dissl_loss``):
        temperature_teacher (float): teacher softmax temperature (0.5).
        temperature_student (float): student softmax temperature (1.0).
        lambda_maximality (float): weight of the marginal entropy (2.3).
        beta_det_inv (float): weight of the teacher-teacher cross-entropy (0.6).
        crops_for_teacher (List[int]): crops the teacher head sees ([0, 1]).
        warmup_beta_iters (Optional[int]): beta goes linearly from lambda_maximality to
            beta_det_inv over this many training forwards (null: no warm-up).
        num_crops (int): crops per image; inferred from ``DATA.TRAIN.TRANSFORMS``.
        num_classes (int): C; inferred from the heads in ``MODEL.HEAD.PARAMS``.
    """

    NAME = "dissl_loss"
    DEFAULTS = {
        "temperature_teacher": 0.5,
        "temperature_student": 1.0,
        "lambda_maximality": 2.3,
        "beta_det_inv": 0.6,
        "crops_for_teacher": [0, 1],
        "warmup_beta_iters": None,
        "num_crops": None,
        "num_classes": None,
    }
    INFERRED = ("num_crops", "num_classes")
    # The marginal is a global statistic (sums and counts), exact for uneven per-rank batches.
    EQUAL_BATCHES = False

    def __init__(
        self,
        num_crops: int,
        num_classes: int,
        crops_for_teacher: List[int],
        temperature_teacher: float,
        temperature_student: float,
        lambda_maximality: float,
        beta_det_inv: float,
        warmup_beta_iters: Optional[int],
    ):
        super().__init__()
        check_crops_for_teacher(crops_for_teacher, num_crops)
        if warmup_beta_iters is not None and warmup_beta_iters < 1:
            raise ConfigError(f"{KEY}.warmup_beta_iters={warmup_beta_iters} must be null or >= 1")
        self.num_crops = num_crops
        self.num_classes = num_classes
        self.crops_for_teacher = list(crops_for_teacher)
        self.temperature_teacher = temperature_teacher
        self.temperature_student = temperature_student
        self.lambda_maximality = lambda_maximality
        self.beta_det_inv = beta_det_inv
        self.warmup_beta_iters = warmup_beta_iters
        # A buffer, so VISSL checkpoints it with the loss ("loss" key) and AUTO_RESUME restores it.
        self.register_buffer("num_iteration", torch.zeros((), dtype=torch.long))
        # On the loss's device: indexing a CUDA tensor with a Python list would sync with the host.
        index = torch.tensor(self.crops_for_teacher)
        self.register_buffer("teacher_crop_index", index, persistent=False)

    @classmethod
    def infer(cls, config, block) -> None:
        """Fill ``num_crops``/``num_classes`` from the transforms and heads, and ``MODEL.HEAD_CROPS``."""
        num_crops = count_crops(config.DATA.TRAIN.TRANSFORMS)
        fill_or_check(block, KEY, "num_crops", num_crops, "config.DATA.TRAIN.TRANSFORMS")
        check_crops_for_teacher(block.crops_for_teacher, block.num_crops)
        num_classes = teacher_student_dim(config.MODEL.HEAD.PARAMS, cls.NAME)
        fill_or_check(block, KEY, "num_classes", num_classes, "config.MODEL.HEAD.PARAMS")
        route_heads_to_crops(config, [list(block.crops_for_teacher), None], cls.NAME)

    def current_beta(self) -> Union[float, torch.Tensor]:
        """beta_det_inv after ``num_iteration`` training forwards, with the optional warm-up (a
        tensor then: computing it on the counter's device avoids a host sync)."""
        if self.warmup_beta_iters is None:
            return self.beta_det_inv
        progress = (self.num_iteration.float() / self.warmup_beta_iters).clamp(max=1.0)
        return self.lambda_maximality + (self.beta_det_inv - self.lambda_maximality) * progress

    def check_shapes(self, teacher: torch.Tensor, student: torch.Tensor) -> None:
        n_t, n_s, classes = len(self.crops_for_teacher), self.num_crops, self.num_classes
        batch = student.shape[0] // n_s if student.ndim == 2 else -1
        if student.shape != (n_s * batch, classes) or teacher.shape != (n_t * batch, classes) or batch == 0:
            raise ValueError(
                f"dissl_loss got teacher logits of shape {tuple(teacher.shape)} and student logits "
                f"of shape {tuple(student.shape)}; expected (len(crops_for_teacher) * B, num_classes)"
                f" = ({n_t} * B, {classes}) and (num_crops * B, num_classes) = ({n_s} * B, {classes})"
                " with the same batch size B > 0"
            )

    def forward(self, output: List[torch.Tensor], target: Any = None) -> torch.Tensor:
        teacher_logits, student_logits = output
        self.check_shapes(teacher_logits, student_logits)
        n_t, classes = len(self.crops_for_teacher), self.num_classes
        teacher = teacher_logits.float().reshape(n_t, -1, classes) / self.temperature_teacher
        student = student_logits.float().reshape(self.num_crops, -1, classes)
        student = student / self.temperature_student
        t = teacher.softmax(dim=-1)
        log_t = F.log_softmax(teacher, dim=-1)
        log_s = F.log_softmax(student, dim=-1)

        same_crop_log_s = log_s.index_select(0, self.teacher_crop_index)
        distillation = cross_entropy_to_other_crops(t, log_s, same_crop_log_s)
        maximality = entropy(global_marginal(t)).mean()
        det_inv = cross_entropy_to_other_crops(t, log_t, log_t)

        beta = self.current_beta()
        if self.training:
            self.num_iteration += 1
        self.record_terms(distillation=distillation, maximality=maximality, det_inv=det_inv)
        return distillation - self.lambda_maximality * maximality + beta * det_inv
