"""DISSL on 2 gloo ranks under DDP equals one process holding the whole batch, and moves O(C)
floats per rank per step whatever the batch size."""

from typing import Dict, List, Tuple
from unittest import mock

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.heads_on_crops import select_crops

import pytest
import torch
import torch.distributed as dist
from classy_vision.losses import build_loss
from ddp import assert_matches, ddp_loss_and_grads, loss_and_grads, run_on_ranks
from torch import nn

from vissl_issl.maths.marginal import entropy, global_marginal

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


def split_logits(out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits on the teacher crops, student logits on all crops, as the DISSL heads give."""
    teacher = select_crops(out[:, :NUM_CLASSES], NUM_CROPS, CROPS_FOR_TEACHER)
    return teacher, out[:, NUM_CLASSES:]


def make_loss():
    block = {"num_crops": NUM_CROPS, "num_classes": NUM_CLASSES, "crops_for_teacher": CROPS_FOR_TEACHER}
    return build_loss({"name": "dissl_loss", **block})


def marginal_entropy(teacher_logits: torch.Tensor) -> torch.Tensor:
    probs = (teacher_logits / TEMPERATURE_TEACHER).softmax(-1)
    probs = probs.view(len(CROPS_FOR_TEACHER), -1, NUM_CLASSES)
    return entropy(global_marginal(probs)).mean()


def on_logits(objective):
    return lambda out: objective(*split_logits(out))


def floats_communicated(batch_size: int) -> int:
    """Floats this rank sends through collectives in one DISSL forward + backward on ``batch_size``
    images per rank (the loss alone: DDP's gradient all-reduce is the model's, not the loss's)."""
    sent = []
    all_gather, all_reduce = dist.all_gather, dist.all_reduce

    def counting_all_gather(outputs, tensor, *args, **kwargs):
        sent.append(tensor.numel())
        return all_gather(outputs, tensor, *args, **kwargs)

    def counting_all_reduce(tensor, *args, **kwargs):
        sent.append(tensor.numel())
        return all_reduce(tensor, *args, **kwargs)

    teacher = torch.randn(len(CROPS_FOR_TEACHER) * batch_size, NUM_CLASSES, requires_grad=True)
    student = torch.randn(NUM_CROPS * batch_size, NUM_CLASSES, requires_grad=True)
    with (
        mock.patch.object(dist, "all_gather", counting_all_gather),
        mock.patch.object(dist, "all_reduce", counting_all_reduce),
    ):
        make_loss()([teacher, student], None).backward()
    return sum(sent)


def ranks_work(rank: int) -> Dict[str, Dict[str, object]]:
    dissl = make_loss()
    even = images_of_rank(make_features(sum(EVEN_SPLIT)), EVEN_SPLIT, rank)
    uneven = images_of_rank(make_features(sum(UNEVEN_SPLIT)), UNEVEN_SPLIT, rank)
    return {
        "even": ddp_loss_and_grads(make_model(), even, on_logits(lambda t, s: dissl([t, s], None))),
        "uneven": ddp_loss_and_grads(make_model(), uneven, on_logits(lambda t, s: marginal_entropy(t))),
        "traffic": {batch: floats_communicated(batch) for batch in (2, 64)},
    }


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> List[Dict[str, Dict[str, object]]]:
    return run_on_ranks(ranks_work, tmp_path_factory.mktemp("dissl_ddp"))


def single_process(features: torch.Tensor, objective) -> Dict[str, object]:
    assert not dist.is_initialized()
    return loss_and_grads(make_model(), features.reshape(-1, DIM), on_logits(objective))


def test_ddp_loss_and_gradients_equal_whole_batch(rank_results):
    dissl = make_loss()
    expected = single_process(make_features(sum(EVEN_SPLIT)), lambda t, s: dissl([t, s], None))
    for result in rank_results:
        assert_matches(result["even"], expected, "mean_value")


def test_uneven_batches_give_exact_global_marginal_entropy(rank_results):
    features = make_features(sum(UNEVEN_SPLIT))
    expected = single_process(features, lambda t, s: marginal_entropy(t))
    for rank, result in enumerate(rank_results):
        # Every rank holds the global entropy itself, not just on average.
        assert_matches(result["uneven"], expected, "value")
        local_logits = make_model()(images_of_rank(features, UNEVEN_SPLIT, rank))
        local = marginal_entropy(split_logits(local_logits)[0])
        assert not torch.allclose(local, expected["value"], atol=1e-4)


def test_marginal_traffic_is_O_of_C_per_rank_whatever_the_batch(rank_results):
    # Forward: each rank all-gathers its per-crop sums and count, G (C + 1) floats; backward:
    # VISSL's GatherLayer all-reduces the gradient of the gathered (world, G, C + 1) tensor.
    groups, world = len(CROPS_FOR_TEACHER), len(rank_results)
    expected = groups * (NUM_CLASSES + 1) * (1 + world)
    for result in rank_results:
        assert result["traffic"] == {2: expected, 64: expected}
