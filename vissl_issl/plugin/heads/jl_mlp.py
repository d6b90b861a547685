"""``jl_mlp``: VISSL's ``mlp`` head with Johnson-Lindenstrauss initialisation.

The authors' VISSL fork added ``is_JL_init`` to ``mlp`` for the CISSL heads: every linear weight
``W`` of shape ``(out, in)`` is drawn from ``N(0, 1 / out)``, a random projection that preserves
distances in expectation, so a 2048 -> 128 (or 8192 -> 128) projection starts as a JL embedding.
The layers, options and state-dict keys are those of VISSL's ``mlp``; biases keep its init.
``jl_mlp_fsdp`` is the same head for VISSL's FSDP training (:mod:`vissl_issl.plugin.heads.fsdp`).
"""

import math
from typing import List

from vissl_issl.plugin.heads.fsdp import fsdp_head

import torch.nn as nn
from vissl.config import AttrDict
from vissl.models.heads import register_model_head
from vissl.models.heads.mlp import MLP


@register_model_head("jl_mlp")
class JLMLP(MLP):
    def __init__(self, model_config: AttrDict, dims: List[int], **mlp_options):
        super().__init__(model_config, dims, **mlp_options)
        for layer in self.clf:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=1 / math.sqrt(layer.out_features))


@register_model_head("jl_mlp_fsdp")
def JLMLP_FSDP(model_config: AttrDict, dims: List[int], **mlp_options) -> nn.Module:
    return fsdp_head(JLMLP(model_config, dims, **mlp_options), model_config)
