"""DISSL on 2 gloo ranks under DDP equals one process holding the whole batch."""
import vissl_issl  # noqa: F401  (shims + registration)

from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from classy_vision.losses import build_loss
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vissl_issl.losses.marginal import entropy, global_marginal
from vissl_issl.models.heads_on_crops import select_crops

NUM_CROPS, CROPS_FOR_TEACHER, NUM_CLASSES, DIM = 4, [2, 0], 10, 6
EVEN_SPLIT, UNEVEN_SPLIT = [4, 4], [3, 5]
TEMPERATURE_TEACHER = 0.5


def make_model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(DIM, 2 * NUM_CLASSES)
    nn.init.normal_(model.weight, std=1.0)
    return model


def make_features(num_images: int, seed: int = 1) -> torch.Tensor:
    """``(NUM_CROPS, num_images, DIM)``."""
    return torch.randn(NUM_CROPS, num_images, DIM, generator=torch.Generator().manual_seed(seed))


def images_of_rank(features: torch.Tensor, split: List[int], rank: int) -> torch.Tensor:
    """This rank's images of every crop, crop-major ``(NUM_CROPS * split[rank], DIM)``."""
    start = sum(split[:rank])
    return features[:, start : start + split[rank]].reshape(-1, DIM)


def logits(model: nn.Module, crop_major_features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits on the teacher crops, student logits on all crops, as the DISSL heads give."""
    out = model(crop_major_features)
    teacher = select_crops(out[:, :NUM_CLASSES], NUM_CROPS, CROPS_FOR_TEACHER)
    return teacher, out[:, NUM_CLASSES:]


def make_loss():
    block = {"num_crops": NUM_CROPS, "num_classes": NUM_CLASSES, "crops_for_teacher": CROPS_FOR_TEACHER}
    return build_loss({"name": "dissl_loss", **block})


def marginal_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    probs = (teacher_logits / TEMPERATURE_TEACHER).softmax(-1)
    probs = probs.view(len(CROPS_FOR_TEACHER), -1, NUM_CLASSES)
    return entropy(global_marginal(probs)).mean()


def loss_and_grads(model: nn.Module, features: torch.Tensor, objective) -> Dict[str, object]:
    value = objective(*logits(model, features))
    value.backward()
    return {"value": value.detach(), "grads": [p.grad.clone() for p in model.parameters()]}


def ddp_run(features: torch.Tensor, split: List[int], objective) -> Dict[str, object]:
    model = DistributedDataParallel(make_model())
    result = loss_and_grads(model, images_of_rank(features, split, dist.get_rank()), objective)
    mean_value = result["value"].clone()
    dist.all_reduce(mean_value)
    return {**result, "mean_value": mean_value / dist.get_world_size()}


def worker(rank: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=2)
    try:
        dissl = make_loss()
        even = make_features(sum(EVEN_SPLIT))
        uneven = make_features(sum(UNEVEN_SPLIT))
        results = {
            "even": ddp_run(even, EVEN_SPLIT, lambda t, s: dissl([t, s], None)),
            "uneven": ddp_run(uneven, UNEVEN_SPLIT, lambda t, s: marginal_entropy(t)),
        }
        torch.save(results, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> List[Dict[str, Dict[str, object]]]:
    tmp = tmp_path_factory.mktemp("dissl_ddp")
    # fork, not spawn: a spawned rank re-imports vissl_issl (torchvision, ~20 s on a small machine).
    mp.start_processes(worker, args=(f"file://{tmp / 'init'}", str(tmp)), nprocs=2, start_method="fork")
    return [torch.load(tmp / f"{rank}.pt") for rank in range(2)]


def single_process(features: torch.Tensor, objective) -> Dict[str, object]:
    assert not dist.is_initialized()
    model = make_model()
    return loss_and_grads(model, features.reshape(-1, DIM), objective)


def assert_matches_single_process(rank_result, expected, value_key: str) -> None:
    torch.testing.assert_close(rank_result[value_key], expected["value"], rtol=1e-6, atol=1e-6)
    for grad, expected_grad in zip(rank_result["grads"], expected["grads"]):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_ddp_loss_and_gradients_equal_whole_batch(rank_results):
    dissl = make_loss()
    expected = single_process(make_features(sum(EVEN_SPLIT)), lambda t, s: dissl([t, s], None))
    for result in rank_results:
        assert_matches_single_process(result["even"], expected, "mean_value")


def test_uneven_batches_give_exact_global_marginal_entropy(rank_results):
    features = make_features(sum(UNEVEN_SPLIT))
    expected = single_process(features, lambda t, s: marginal_entropy(t))
    for rank, result in enumerate(rank_results):
        # Every rank holds the global entropy itself, not just on average.
        assert_matches_single_process(result["uneven"], expected, "value")
        local = marginal_entropy(logits(make_model(), images_of_rank(features, UNEVEN_SPLIT, rank))[0])
        assert not torch.allclose(local, expected["value"], atol=1e-4)
