"""A momentum (EMA) copy of a network with BYOL's cosine momentum schedule (Grill et al. 2020;
CVR ``model_util.py``)::

    m_k = 1 - (1 - m_0) * (1 + cos(pi * k / K)) / 2
    target <- m_k * target + (1 - m_k) * online          (parameters; buffers stay the target's)
"""

import math
from typing import Dict

import torch
from torch import nn


def ema_momentum(iteration: int, max_iteration: int, base_momentum: float) -> float:
    """``m_k`` of the cosine schedule above, ``k = iteration``, ``K = max_iteration``."""
    return 1 - (1 - base_momentum) * (1 + math.cos(math.pi * iteration / max_iteration)) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online``, parameter by parameter name."""
    online_params: Dict[str, torch.Tensor] = dict(online.named_parameters())
    target_params = [p for _, p in target.named_parameters()]
    sources = [online_params[name].detach() for name, _ in target.named_parameters()]
    torch._foreach_lerp_(target_params, sources, 1 - momentum)
