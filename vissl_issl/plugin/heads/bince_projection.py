r"""``bince_projection``: BINCE's projector and learnable temperature, chained after
``entropy_bottleneck`` (Dubois et al. 2021, ``LL:distortions.py`` ``ContrastiveDistortion``;
compression_ssl.md §A.4).

On the bottleneck's packed output ``[z_hat | z | bits | aux]``::

    p = W2 ReLU(W1 z_hat + b1) + b2          FlattenMLP z_dim -> 128 -> max(10, z_dim // 2)

and the output packs ``[p (P) | bits (1) | aux (1) | logit_scale (1)]`` along the feature axis,
``(N, P + 3)`` fp32, every row carrying the same ``logit_scale``. The temperature of
``bince_loss`` is ``tau = 1 / min(exp(logit_scale), 100)`` (CLIP style, so ``tau >= 0.01``),
``logit_scale`` initialised to ``log(1 / 0.07)``. It lives here, in ``task.base_model``, because
VISSL's optimizer only sees the model's parameters; passing it through the output gives it its
gradient through the loss (and keeps DDP from seeing an unused parameter).

The representation that is sent or stored is ``z_hat``, not ``p`` (the maintainer,
``YannDubs/lossyless`` issue #41): extract features at the bottleneck head.

Options: ``dims: [z_dim, hidden, P]``, the authors' ``[z_dim, 128, max(10, z_dim // 2)]``
(``bince_loss`` fills it from the bottleneck when left out); ``logit_scale_init``
(``log(1 / 0.07)``).
"""

import math
from typing import List, Optional

import torch
from torch import nn
from vissl.config import AttrDict
from vissl.models.heads import register_model_head

from vissl_issl.architectures.packed_outputs import pack_projection, split_bottleneck

NAME = "bince_projection"
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP


@register_model_head(NAME)
class BinceProjection(nn.Module):
    def __init__(
        self, model_config: AttrDict, dims: Optional[List[int]] = None, logit_scale_init: float = LOGIT_SCALE_INIT
    ):
        super().__init__()
        if dims is None or len(dims) != 3 or min(dims) < 1:
            raise ValueError(
                f"{NAME} needs dims [z_dim, hidden, projection] (the authors' [z_dim, 128, max(10, z_dim // 2)]); "
                f"got {dims}"
            )
        self.dims = [int(d) for d in dims]
        self.projector = nn.Sequential(nn.Linear(dims[0], dims[1]), nn.ReLU(inplace=True), nn.Linear(dims[1], dims[2]))
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    def forward(self, bottleneck_output: torch.Tensor) -> torch.Tensor:
        """``(N, 2 z_dim + 2)`` bottleneck output -> ``(N, P + 3)`` packed, fp32."""
        coded = split_bottleneck(bottleneck_output)
        if coded.z_hat.shape[1] != self.dims[0]:
            raise ValueError(f"{NAME} with dims {self.dims} got codes of size {coded.z_hat.shape[1]}")
        return pack_projection(self.projector(coded.z_hat), coded.bits, coded.aux, self.logit_scale)
