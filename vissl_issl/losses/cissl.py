"""CISSL: contrastive ISSL with a probe-matched student head (Dubois et al. 2022)."""

from typing import Any, List

import torch

from vissl_issl.config import ConfigError, head_modules
from vissl_issl.losses.contrastive import ContrastiveISSLLoss
from vissl_issl.maths.gathered_batch import view_columns

# With their FSDP variants: the same modules, sharded (VISSL's infer_fsdp renames a flat ``mlp``).
LINEAR_HEADS = ("mlp", "jl_mlp", "mlp_fsdp", "jl_mlp_fsdp")


def check_linear_head(head_param: List[Any], key: str) -> None:
    """The head must be affine at test time, like a linear probe: ``mlp``/``jl_mlp`` modules (or
    their ``_fsdp`` variants) without ReLU or dropout (their BatchNorm is affine once its
    statistics are frozen)."""
    for index, (name, options) in enumerate(head_modules(head_param)):
        nonlinear = [flag for flag in ("use_relu", "use_dropout") if options.get(flag, False)]
        if name not in LINEAR_HEADS or nonlinear:
            raise ConfigError(
                f"{key}[{index}] = {name} {dict(options)} is not linear; cissl_loss needs the student "
                f"head to have the linear probe's architecture: {' / '.join(LINEAR_HEADS)} modules "
                "without use_relu or use_dropout"
            )


class CISSLLoss(ContrastiveISSLLoss):
    r"""CISSL loss: the student predicts, over the whole global batch, both teacher views of its image.

    With ``u_r = normalize(student_r)`` (the linear, probe-shaped head) and
    ``w_c = normalize(teacher_c)`` over all ``2 * B * world_size`` gathered teacher rows::

        q(c | r) = softmax_c(u_r . w_c / temperature)        (every column, the same view's included)
        L = mean_r  -1/2 [ log q(same view of r | r) + log q(other view of r | r) ]

    Unlike SimCLR the same-view column is not masked: with different heads ``u_r . w_r`` is not
    trivially 1, and the target puts probability 1/2 on each of the two teacher embeddings of the
    image (ISSL ``contrastive.py``; the VISSL fork's ``cntr_issl_loss``, which gathers the
    teacher side only, as here).

    ``forward([teacher, student], target)``: both ``(2 * B, D)``, crop-major, un-normalised; target
    ignored; returns a fp32 scalar. With ``probe: linear`` the plugin launcher checks that the
    student head in ``MODEL.HEAD.PARAMS[1]`` is linear.

    Config (``LOSS.cissl_loss``):
        temperature (float): 0.1 (the fork's ImageNet value; ISSL used 0.07 on TinyImageNet).
        probe (str): the downstream probe the student head matches: ``linear`` (checked) or ``mlp``
            (any student head: the authors' ``cissl_mlp`` of Fig. 7c, probed by an MLP).
    """

    NAME = "cissl_loss"
    DEFAULTS = {**ContrastiveISSLLoss.DEFAULTS, "probe": "linear"}
    PROBES = ("linear", "mlp")

    def __init__(self, temperature: float, probe: str = "linear"):
        super().__init__(temperature)
        if probe not in self.PROBES:
            raise ConfigError(f"{self.key('probe')}={probe!r} must be one of {self.PROBES}")
        self.probe = probe

    @classmethod
    def infer(cls, config, block) -> None:
        super().infer(config, block)
        if block.probe not in cls.PROBES:
            raise ConfigError(f"{cls.key('probe')}={block.probe!r} must be one of {cls.PROBES}")
        if block.probe == "linear":
            check_linear_head(config.MODEL.HEAD.PARAMS[1], "config.MODEL.HEAD.PARAMS[1]")

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        own, other = (column.unsqueeze(1) for column in view_columns(len(logits), logits.device))
        log_q = logits.log_softmax(dim=1)
        return -(log_q.gather(1, own) + log_q.gather(1, other)).mean() / 2
