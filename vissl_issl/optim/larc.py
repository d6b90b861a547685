"""Layer-wise adaptive rate control (You et al. 2017) with the semantics of apex's LARC.

For every parameter ``p`` of every param group, with the group's ``lr`` and ``weight_decay`` wd::

    local_lr = trust_coefficient * ||p|| / (||grad|| + wd * ||p|| + eps)
    scaling mode (clip=False):  grad <- (grad + wd * p) * local_lr
    clipping mode (clip=True):  grad <- (grad + wd * p) * min(local_lr / lr, 1)

then the wrapped optimizer steps with its weight decay switched off (LARC absorbed it). As in apex,
a parameter whose weight or gradient norm is zero is left as it is (no decay, no scaling), and
every param group is treated the same way, biases and BatchNorm included.

Unlike apex, the norms come from one fused ``_foreach_norm`` per group and the zero-norm test is
a tensor ``where``: no host synchronisation per parameter.
"""

from typing import Callable, Optional

import torch


class LARC:
    """Wraps a torch optimizer (usually SGD) as apex.parallel.LARC does."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        trust_coefficient: float = 0.02,
        clip: bool = True,
        eps: float = 1e-8,
    ):
        self.optim = optimizer
        self.trust_coefficient = trust_coefficient
        self.clip = clip
        self.eps = eps

    @property
    def param_groups(self):
        return self.optim.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optim.param_groups = value

    @property
    def state(self):
        return self.optim.state

    @property
    def defaults(self):
        return self.optim.defaults

    def state_dict(self):
        return self.optim.state_dict()

    def load_state_dict(self, state_dict):
        self.optim.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True):
        self.optim.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group):
        self.optim.add_param_group(param_group)

    def __repr__(self):
        return f"LARC(trust_coefficient={self.trust_coefficient}, clip={self.clip}, eps={self.eps}, {self.optim!r})"

    @torch.no_grad()
    def _scale_gradients(self, group: dict, weight_decay: float) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        param_norms = torch.stack(torch._foreach_norm(params))
        grad_norms = torch.stack(torch._foreach_norm(grads))
        local_lr = self.trust_coefficient * param_norms / (grad_norms + param_norms * weight_decay + self.eps)
        if self.clip:
            local_lr = torch.clamp(local_lr / group["lr"], max=1.0)
        active = (param_norms != 0) & (grad_norms != 0)
        scale = torch.where(active, local_lr, torch.ones_like(local_lr))
        decay = active.to(param_norms.dtype) * weight_decay
        for p, g, d, s in zip(params, grads, decay, scale):
            g.addcmul_(p, d).mul_(s)  # in place: no parameter-sized temporary

    def step(self, closure: Optional[Callable] = None):
        weight_decays = [group.get("weight_decay", 0.0) for group in self.optim.param_groups]
        for group, weight_decay in zip(self.optim.param_groups, weight_decays):
            self._scale_gradients(group, weight_decay)
            group["weight_decay"] = 0.0
        try:
            return self.optim.step(closure)
        finally:
            for group, weight_decay in zip(self.optim.param_groups, weight_decays):
                group["weight_decay"] = weight_decay
