"""``stochastic_predictor``: C-BYOL's predictor with a von Mises-Fisher bottleneck and its
backward encoder (Lee et al. 2021, CVR ``StochasticProjectionHead`` and ``target_projector``).

On the online projection ``p`` (``dims[0]``)::

    mu = l2n(W2 ReLU(BN(W1 p)))            forward encoder mean, on the sphere (dims[-1])
    z ~ vMF(mu, kappa_e)   (training)      z = mu   (evaluation)
    q = W3 z                               the BYOL prediction

and the output packs ``[q, z, mu]`` along the feature axis, ``(N, 3 * dims[-1])``: VISSL heads
return one tensor. The backward encoder ``b(z | y) = vMF(nu, kappa_b)`` with
``nu = l2n(h_psi(l2n(t)))`` on the target projection ``t`` is trained but not EMA-averaged, so
``h_psi`` lives here, in ``task.base_model`` where the optimizer sees it; ``c_byol_loss`` calls
:meth:`StochasticPredictor.backward_mean`. All linear layers are bias-free, as in CVR.

Options: ``dims`` (``[256, 4096, 256]`` in CVR) for both the mean network and ``h_psi``;
``kappa_e`` (16384 in CVR's C-BYOL), which ``c_byol_loss`` reads from here.
"""

from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from vissl.config import AttrDict
from vissl.models.heads import register_model_head
from vissl.models.heads.mlp import MLP

from vissl_issl.maths import von_mises_fisher


@register_model_head("stochastic_predictor")
class StochasticPredictor(nn.Module):
    def __init__(self, model_config: AttrDict, dims: List[int], kappa_e: float):
        super().__init__()
        if len(dims) < 2 or dims[0] != dims[-1] or not kappa_e > 0:
            raise ValueError(
                f"stochastic_predictor needs dims [d, ..., d] (its input, the projection, and its codes live "
                f"in one space for the backward encoder) and kappa_e > 0; got dims={dims}, kappa_e={kappa_e}"
            )
        self.kappa_e = float(kappa_e)
        self.mean = MLP(model_config, dims, use_bn=True, use_relu=True, use_bias=False)
        self.prediction = nn.Linear(dims[-1], dims[-1], bias=False)
        self.backward_encoder = MLP(model_config, dims, use_bn=True, use_relu=True, use_bias=False)

    def forward(self, projection: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` online projections -> ``(N, 3d)`` packed ``[q, z, mu]``, fp32."""
        mu = F.normalize(self.mean(projection).float(), dim=1)
        z = von_mises_fisher.sample(mu, self.kappa_e) if self.training else mu
        return torch.cat([self.prediction(z).float(), z, mu], dim=1)

    def backward_mean(self, target_projection: torch.Tensor) -> torch.Tensor:
        """``nu = l2n(h_psi(l2n(t)))``: ``(N, d)`` target projections -> ``(N, d)`` unit means, fp32."""
        return F.normalize(self.backward_encoder(F.normalize(target_projection.float(), dim=1)).float(), dim=1)
