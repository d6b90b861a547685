"""C-BYOL: BYOL with a Conditional Entropy Bottleneck (Lee et al. 2021, "Compressive Visual
Representations"; CVR ``add_byol_ceb_loss``)."""

from typing import Any, Dict

import torch
from torch import nn

from vissl_issl.config import ConfigError, fill_or_check, require
from vissl_issl.losses.byol import BYOLLoss
from vissl_issl.maths import von_mises_fisher
from vissl_issl.maths.gathered_batch import other_view

NAME = "c_byol_loss"
KEY = f"config.LOSS.{NAME}"


class CBYOLLoss(BYOLLoss):
    r"""C-BYOL: BYOL's distortion plus beta times the residual information of the stochastic code.

    The last head, ``stochastic_predictor``, outputs ``[q, z, mu]`` per row (``(2B, 3d)``,
    view-major); the momentum target gives projections ``t`` and the head's backward encoder
    ``nu = l2n(h_psi(l2n(t)))``. For row ``r`` and ``r'`` the other view of its image::

        R_r = log vMF(z_r; mu_r, kappa_e) - log vMF(z_r; nu_r', kappa_b)     (nats; >= I(X; Z | Y))
        L   = 1/B * sum_r [ w * ||l2n(q_r) - l2n(t_r')||^2 + beta * R_r ]

    both views summed, averaged over images, fp32. ``w = byol_loss_weight`` plays ``kappa_d / 2``
    of a vMF decoder (CVR's docstring). With ``beta = 0`` this is :class:`BYOLLoss` on ``q``.

    Pairing: the paper's I(X; Z | Y) scores the code of view 1 under the backward encoder of
    Y = view 2, which is what we do. CVR's code scores each code against the target of its *own*
    view (``objective.py`` pairs ``z1`` with ``target_proj_output2``, which ``run.py``'s second
    call computes from x1); we do not reproduce that.

    Differences from CVR's setup that remain: VISSL runs both views through the networks in one
    batch, so BatchNorm statistics mix the views (CVR calls the network once per view).

    Config (``LOSS.c_byol_loss``): ``momentum``, ``byol_loss_weight`` as ``byol_loss``, and
        kappa_e (float): forward encoder concentration; the plugin launcher sets it from the
            ``stochastic_predictor`` head's ``kappa_e`` (16384 in CVR).
        kappa_b (float): backward encoder concentration (10).
        beta (float): weight of R (1.0; CVR's flag default 0 turns compression off).
    """

    NAME = NAME
    DEFAULTS: Dict[str, Any] = {**BYOLLoss.DEFAULTS, "kappa_e": None, "kappa_b": 10.0, "beta": 1.0}
    INFERRED = ("kappa_e",)

    def __init__(self, momentum: float, byol_loss_weight: float, kappa_e: float, kappa_b: float, beta: float):
        super().__init__(momentum, byol_loss_weight)
        if not (kappa_e > 0 and kappa_b > 0 and beta >= 0):
            raise ConfigError(f"{KEY}: kappa_e={kappa_e} and kappa_b={kappa_b} must be > 0 and beta={beta} >= 0")
        self.kappa_e, self.kappa_b, self.beta = float(kappa_e), float(kappa_b), float(beta)
        self.backward_means: torch.Tensor = None

    @classmethod
    def infer(cls, config, block) -> None:
        super().infer(config, block)
        name, options = config.MODEL.HEAD.PARAMS[-1]
        require(name, "stochastic_predictor", "config.MODEL.HEAD.PARAMS[-1][0]", NAME)
        if "kappa_e" not in options:
            raise ConfigError(f"config.MODEL.HEAD.PARAMS[-1][1].kappa_e must be set: the {name} head samples with it")
        fill_or_check(block, KEY, "kappa_e", float(options["kappa_e"]), "config.MODEL.HEAD.PARAMS[-1]")

    def set_targets(self, target_embeddings: torch.Tensor, online_model: nn.Module) -> None:
        super().set_targets(target_embeddings, online_model)
        self.backward_means = online_model.heads[-1].backward_mean(target_embeddings)

    def forward(self, output: torch.Tensor, target: Any = None) -> torch.Tensor:
        predictions, codes, means = output.float().chunk(3, dim=1)
        residual = von_mises_fisher.log_prob(codes, means, self.kappa_e) - von_mises_fisher.log_prob(
            codes, other_view(self.backward_means).float(), self.kappa_b
        )
        distortion = self.distortion(predictions)
        images = len(output) // 2
        self.record_terms(distortion=distortion.sum() / images, residual=residual.sum() / images)
        return (distortion + self.beta * residual).sum() / images
