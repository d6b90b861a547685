"""``entropy_bottleneck``: :class:`~vissl_issl.maths.entropy_bottleneck.EntropyBottleneck` as a
VISSL head, for VIC, BINCE and the feature compressor over a frozen trunk.

The output packs ``[z_hat (D) | z (D) | bits (1) | aux (1)]``, ``(N, 2D + 2)``, fp32
(:mod:`vissl_issl.architectures.packed_outputs`). ``aux`` is CompressAI's quantile loss
divided by N in every row: summed over a rank's rows it is the loss, computed inside the forward
so that DDP sees the ``quantiles`` used. It trains only the ``quantiles``, which the rate does not
(keep them out of weight decay: ``OPTIMIZER.non_regularized_parameters``).

Options: ``dims`` ``[in_dim, z_dim]``; ``prior`` ``"factorized"`` (``H_factorized``) or
``"hyperprior"`` (``H_hyper``, the lossyless default).
"""

from typing import List

import torch
from torch import Tensor
from vissl.config import AttrDict
from vissl.models.heads import register_model_head

from vissl_issl.maths.entropy_bottleneck import EntropyBottleneck


@register_model_head("entropy_bottleneck")
class EntropyBottleneckHead(EntropyBottleneck):
    def __init__(self, model_config: AttrDict, dims: List[int], prior: str = "factorized"):
        if len(dims) != 2:
            raise ValueError(f"entropy_bottleneck needs dims [in_dim, z_dim] of positive integers, got dims={dims}")
        super().__init__(*dims, prior=prior)

    def forward(self, features: Tensor) -> Tensor:
        """``(N, in_dim)`` -> ``(N, 2D + 2)`` packed ``[z_hat | z | bits | aux]``, fp32."""
        z_hat, z, bits = super().forward(features)
        aux = (self.aux_loss() / len(z)).expand(len(z), 1)
        return torch.cat([z_hat, z, bits[:, None], aux], dim=1)
