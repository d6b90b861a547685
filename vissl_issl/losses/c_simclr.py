r"""C-SimCLR: SimCLR with a Conditional Entropy Bottleneck (Lee et al., "Compressive Visual
Representations", NeurIPS 2021), after the authors' ``add_contrastive_ceb_loss``
(compression_ssl.md §B.2).

With ``u_i = l2n(view 0 of image i)``, ``v_i = l2n(view 1 of image i)`` and vMF densities on the
unit sphere ``log vMF(z; mu, kappa) = log C_d(kappa) + kappa mu.z``, the forward direction of
image ``i`` is::

    z_i ~ vMF(u_i, kappa_e)                    (z_i = u_i with sampling off)
    R_i = log vMF(z_i; u_i, kappa_e) - log vMF(z_i; v_i, kappa_b)      residual information, nats
    H_i = -log softmax_c(kappa_b z_i . w_c)[v_i]                        InfoNCE over every gathered
                                                                          u and v, z_i's own u masked

and the backward direction swaps the views (``z'_i ~ vMF(v_i, kappa_e)``, ``R'_i``, ``H'_i``).
The loss, summed over both directions as the authors do (not averaged like VISSL's SimCLR)::

    L = mean_i [ beta (R_i + R'_i) + H_i + H'_i ]

Mapping to the authors' code: they minimise ``beta R - I`` per direction with the InfoNCE bound
``I = log(2 B_g - 1) - H`` (``B_g`` = global batch of images). We drop the constant
``2 log(2 B_g - 1)``, which changes no gradient, so that with ``beta = 0`` and sampling off the
loss is exactly 2 x VISSL's ``simclr_info_nce_loss`` at temperature ``1 / kappa_b`` (§D.2). The
``log C_d`` normalisers cancel in the softmax; in ``R`` they only shift the value reported in nats.
"""

from typing import Any, Tuple

import torch
import torch.nn.functional as F

from vissl_issl.config import ConfigError, count_crops, fill_or_check, head_output_dim, require
from vissl_issl.losses.base import MethodLoss
from vissl_issl.maths import von_mises_fisher as vmf
from vissl_issl.maths.distributed import gather_with_gradient
from vissl_issl.maths.gathered_batch import info_nce, other_view

NAME = "c_simclr_loss"
KEY = f"config.LOSS.{NAME}"


def check_constants(kappa_e: float, kappa_b: float, beta: float) -> None:
    for name, value in (("kappa_e", kappa_e), ("kappa_b", kappa_b)):
        if not value > 0:
            raise ConfigError(f"{KEY}.{name}={value} must be > 0 (a vMF concentration)")
    if not beta >= 0:
        raise ConfigError(f"{KEY}.beta={beta} must be >= 0 (the weight of the residual information)")


def c_simclr_rows(
    embeddings: torch.Tensor, kappa_e: float, kappa_b: float, sampling: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The residual information ``R`` and InfoNCE ``H`` of C-SimCLR on ``embeddings`` ``(2B, d)``
    view-major, un-normalised: two fp32 ``(2B,)``, both directions at once as ``2B`` anchor rows
    (row ``k < B``: forward for image ``k``; row ``k >= B``: backward for image ``k - B``)."""
    # VISSL computes the loss under autocast: keep the logits and kappa_e-scaled log-densities fp32.
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        means = F.normalize(embeddings.float(), dim=1)  # forward-encoder means: u for view 0, v for view 1
        z = vmf.sample(means, kappa_e) if sampling else means
        residual = vmf.log_prob(z, means, kappa_e) - vmf.log_prob(z, other_view(means), kappa_b)
        # log vMF(z; w_c, kappa_b) up to the shared log C_d(kappa_b), which cancels in the softmax.
        logits = kappa_b * z @ gather_with_gradient(means).t()
        return residual, info_nce(logits)


class CSimCLRLoss(MethodLoss):
    r"""C-SimCLR (contrastive CEB); see the module docstring for the equation.

    ``forward(output, target)``: ``output`` ``(2 * B, embedding_dim)``, the projection head's
    un-normalised output, view-major (the B images of view 0, then of view 1: VISSL's
    ``simclr_collator`` with VISSL's standard model); target ignored; returns a fp32 scalar.
    Embeddings are gathered from every rank with a gradient-keeping gather, and each rank
    returns the mean over its own images, so DDP's gradient average equals the whole-batch loss
    when every rank has the same B (``DATA.TRAIN.DROP_LAST: True`` on several processes).

    Config (``LOSS.c_simclr_loss``):
        kappa_e (float): concentration of the forward encoder's vMF noise (1024; > 0).
        kappa_b (float): concentration of the backward encoder / decoder, 1 / temperature (10; > 0).
        beta (float): weight of the residual information R (1.0; >= 0; 0 gives SimCLR).
        sampling (bool): sample z ~ vMF(mean, kappa_e) (True), or use the mean.
        embedding_dim (int): inferred from the last head's output size.
    """

    NAME = NAME
    DEFAULTS = {
        "kappa_e": 1024.0,  # CVR scripts/csimclr.sh
        "kappa_b": 10.0,  # CVR scripts/csimclr.sh: temperature 1 / 10 = SimCLR's 0.1
        "beta": 1.0,  # CVR scripts (the run.py flag default 0.0 turns compression off, §B.6)
        "sampling": True,  # CVR run.py ceb_sampling
        "embedding_dim": None,
    }
    INFERRED = ("embedding_dim",)

    def __init__(self, kappa_e: float, kappa_b: float, beta: float, sampling: bool, embedding_dim: int):
        super().__init__()
        check_constants(kappa_e, kappa_b, beta)
        self.kappa_e, self.kappa_b, self.beta = float(kappa_e), float(kappa_b), float(beta)
        self.sampling, self.embedding_dim = bool(sampling), int(embedding_dim)

    @classmethod
    def infer(cls, config, block) -> None:
        """2 views from ``simclr_collator``; ``embedding_dim`` from the last head."""
        check_constants(block.kappa_e, block.kappa_b, block.beta)
        views = count_crops(config.DATA.TRAIN.TRANSFORMS)
        require(views, 2, "the number of views made by config.DATA.TRAIN.TRANSFORMS", NAME)
        require(config.DATA.TRAIN.COLLATE_FUNCTION, "simclr_collator", "config.DATA.TRAIN.COLLATE_FUNCTION", NAME)
        last_head = head_output_dim(config.MODEL.HEAD.PARAMS[-1])
        fill_or_check(block, KEY, "embedding_dim", last_head, "config.MODEL.HEAD.PARAMS[-1]")

    def forward(self, output: torch.Tensor, target: Any = None) -> torch.Tensor:
        if output.ndim != 2 or len(output) % 2 or len(output) == 0 or output.shape[1] != self.embedding_dim:
            raise ValueError(
                f"{NAME} got embeddings of shape {tuple(output.shape)}; expected (2 * B, embedding_dim) = "
                f"(2 * B, {self.embedding_dim}), view-major, B > 0"
            )
        residual, info = c_simclr_rows(output, self.kappa_e, self.kappa_b, self.sampling)
        images = len(output) // 2
        self.record_terms(residual=residual.sum() / images, info_nce=info.sum() / images)
        # Sum over both directions, mean over the B images.
        return (self.beta * residual + info).sum() / images
