"""``residual_mlp``: the residual MLP block of the DISSL ImageNet teacher heads.

The authors' VISSL fork added ``is_residual`` to VISSL's ``mlp`` head; DISSL's teachers use it as
``mlp {dims: [d, ..., d], use_bn: True, use_relu: True, use_bias: False,
skip_last_layer_relu_bn: False, is_residual: True}``. Stock VISSL's ``mlp`` has no residual, so
this head is that configuration alone: every layer is ``Linear(bias=False) -> BatchNorm1d ->
ReLU`` (the last one included) and the input is added after the final ReLU.

``residual_mlp_fsdp`` is the same head for VISSL's FSDP training (:mod:`vissl_issl.plugin.heads.fsdp`).
"""

from typing import List

from vissl_issl.plugin.heads.fsdp import fsdp_head

import torch
import torch.nn as nn
from vissl.config import AttrDict
from vissl.models.heads import register_model_head


@register_model_head("residual_mlp")
class ResidualMLP(nn.Module):
    """``out = layers(x) + x``. Accepts a 2D tensor or an ``N x C x 1 x 1`` one, like ``mlp``."""

    def __init__(self, model_config: AttrDict, dims: List[int]):
        super().__init__()
        if len(dims) < 2 or dims[0] != dims[-1]:
            raise ValueError(
                f"residual_mlp dims={list(dims)}: needs at least two dims and dims[0] == dims[-1] "
                "so the input can be added to the output."
            )
        layers: List[nn.Module] = []
        for in_dim, out_dim in zip(dims[:-1], dims[1:]):
            layers += [
                nn.Linear(in_dim, out_dim, bias=False),
                nn.BatchNorm1d(
                    out_dim, eps=model_config.HEAD.BATCHNORM_EPS, momentum=model_config.HEAD.BATCHNORM_MOMENTUM
                ),
                nn.ReLU(inplace=True),
            ]
        # Named like VISSL's mlp so state-dict keys match the fork's residual mlp.
        self.clf = nn.Sequential(*layers)
        # Honour HEAD.PARAMS_MULTIPLIER as VISSL's mlp (and the fork's) does.
        with torch.no_grad():
            for layer in self.clf:
                if isinstance(layer, nn.Linear):
                    layer.weight *= model_config.HEAD.PARAMS_MULTIPLIER

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.ndim > 2:
            if any(d != 1 for d in batch.shape[2:]):
                raise ValueError(f"residual_mlp expects N x C or N x C x 1 x 1 input, got {tuple(batch.shape)}.")
            batch = batch.reshape(batch.size(0), batch.size(1))
        return self.clf(batch) + batch


@register_model_head("residual_mlp_fsdp")
def ResidualMLP_FSDP(model_config: AttrDict, dims: List[int]) -> nn.Module:
    return fsdp_head(ResidualMLP(model_config, dims), model_config)
