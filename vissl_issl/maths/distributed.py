"""Rank, world size, an all-gather of Python objects and a gradient-keeping all-gather, with or
without ``torch.distributed``.

Outside an initialised process group every function acts as one process holding the whole batch,
so the losses run unchanged in a plain training loop.
"""

from typing import Any, List, Tuple

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather_objects(value: Any) -> List[Any]:
    """``value`` of every rank, in rank order (picklable objects; tensors of torch's pickled dtypes)."""
    if world_size() == 1:
        return [value]
    values: List[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


class _GatherWithGradient(torch.autograd.Function):
    """All-gather whose backward all-reduces the gradients and keeps this rank's slice.

    Every rank computes its loss on the whole gathered batch, so the gradient of the sum over ranks
    reaches each rank's input through the all-reduce; DDP then averages. It is VISSL's
    ``GatherLayer``, written again so that the losses need no VISSL, with the same collectives
    (all-reduce, not reduce-scatter, which gloo lacks) so that results match it bit for bit.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        output = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(output, tensor)
        return tuple(output)

    @staticmethod
    def backward(ctx, *gradients: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(gradients)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` ``(N, ...)`` concatenated in rank order: ``(world * N, ...)``."""
    if world_size() == 1:
        return tensor
    return torch.cat(_GatherWithGradient.apply(tensor.contiguous()))
