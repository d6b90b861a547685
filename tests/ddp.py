"""Run a function on 2 forked gloo ranks and compare DDP results with one whole-batch process."""

from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from classy_vision.generic.distributed_util import set_cpu_device
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def _worker(rank: int, fn: Callable[[int], Any], init_method: str, out_dir: str, world_size: int) -> None:
    torch.set_num_threads(1)
    set_cpu_device()  # VISSL's losses put their buffers on the GPU unless told otherwise
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    try:
        torch.save(fn(rank), Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn: Callable[[int], Any], tmp: Path, world_size: int = 2) -> List[Any]:
    """``[fn(0), ..., fn(world_size - 1)]``, each computed in its own gloo rank."""
    # fork, not spawn: a spawned rank re-imports vissl_issl (torchvision, ~20 s on a small machine).
    args = (fn, f"file://{tmp / 'init'}", str(tmp), world_size)
    mp.start_processes(_worker, args=args, nprocs=world_size, start_method="fork")
    return [torch.load(tmp / f"{rank}.pt") for rank in range(world_size)]


def loss_and_grads(model: nn.Module, inputs: torch.Tensor, objective: Callable) -> Dict[str, Any]:
    value = objective(model(inputs))
    value.backward()
    return {"value": value.detach(), "grads": [p.grad.clone() for p in model.parameters()]}


def ddp_loss_and_grads(model: nn.Module, inputs: torch.Tensor, objective: Callable) -> Dict[str, Any]:
    """This rank's loss and DDP-averaged gradients, plus ``mean_value``, the loss averaged over ranks."""
    result = loss_and_grads(DistributedDataParallel(model), inputs, objective)
    mean_value = result["value"].clone()
    dist.all_reduce(mean_value)
    return {**result, "mean_value": mean_value / dist.get_world_size()}


def assert_matches(rank_result: Dict[str, Any], expected: Dict[str, Any], value_key: str) -> None:
    torch.testing.assert_close(rank_result[value_key], expected["value"], rtol=1e-6, atol=1e-6)
    for grad, expected_grad in zip(rank_result["grads"], expected["grads"]):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
