"""cissl_loss and asymmetric_simclr_loss on 2 gloo ranks under DDP equal one process holding the
whole batch, and asymmetric_simclr_loss with one head equals VISSL's simclr_info_nce_loss there too."""

from typing import Dict, List

import vissl_issl.plugin  # noqa: F401  (shims + registration)

import pytest
import torch
import torch.distributed as dist
from classy_vision.generic.distributed_util import set_cpu_device
from classy_vision.losses import build_loss
from ddp import assert_matches, ddp_loss_and_grads, loss_and_grads, run_on_ranks
from torch import nn
from vissl.config import AttrDict
from vissl.losses.simclr_info_nce_loss import SimclrInfoNCELoss

IMAGES_PER_RANK, WORLD_SIZE, DIM, EMBEDDING_DIM = 3, 2, 6, 4
LOSSES = ["cissl_loss", "asymmetric_simclr_loss"]


def make_model() -> nn.Linear:
    """Teacher (first EMBEDDING_DIM outputs) and student heads in one layer."""
    torch.manual_seed(0)
    return nn.Linear(DIM, 2 * EMBEDDING_DIM)


def make_features() -> torch.Tensor:
    """``(2 views, all images, DIM)``."""
    return torch.randn(2, IMAGES_PER_RANK * WORLD_SIZE, DIM, generator=torch.Generator().manual_seed(1))


def rows_of_rank(rank: int) -> torch.Tensor:
    """This rank's images of both views, crop-major ``(2 * IMAGES_PER_RANK, DIM)``."""
    start = rank * IMAGES_PER_RANK
    return make_features()[:, start : start + IMAGES_PER_RANK].reshape(-1, DIM)


def heads(out: torch.Tensor) -> List[torch.Tensor]:
    return [out[:, :EMBEDDING_DIM], out[:, EMBEDDING_DIM:]]


def objective(name: str):
    loss = build_loss({"name": name, "temperature": 0.2})
    return lambda out: loss(heads(out), None)


def vissl_simclr(world_size: int):
    buffer_params = {
        "world_size": world_size,
        "embedding_dim": EMBEDDING_DIM,
        "effective_batch_size": 2 * IMAGES_PER_RANK * WORLD_SIZE,  # the global batch, both views
    }
    return SimclrInfoNCELoss(AttrDict({"temperature": 0.2, "buffer_params": buffer_params}))


def one_head(loss):
    return lambda out: loss(out[:, :EMBEDDING_DIM], None)


def shared_head(name: str):
    loss = build_loss({"name": name, "temperature": 0.2})
    return lambda out: loss([out[:, :EMBEDDING_DIM]] * 2, None)


def ranks_work(rank: int) -> Dict[str, Dict[str, object]]:
    inputs = rows_of_rank(rank)
    results = {name: ddp_loss_and_grads(make_model(), inputs, objective(name)) for name in LOSSES}
    results["shared_head"] = ddp_loss_and_grads(make_model(), inputs, shared_head("asymmetric_simclr_loss"))
    results["vissl_simclr"] = ddp_loss_and_grads(make_model(), inputs, one_head(vissl_simclr(WORLD_SIZE)))
    return results


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> List[Dict[str, Dict[str, object]]]:
    return run_on_ranks(ranks_work, tmp_path_factory.mktemp("cissl_ddp"), WORLD_SIZE)


def whole_batch(objective) -> Dict[str, object]:
    assert not dist.is_initialized()
    return loss_and_grads(make_model(), make_features().reshape(-1, DIM), objective)


@pytest.mark.parametrize("name", LOSSES)
def test_ddp_loss_and_gradients_equal_whole_batch(rank_results, name):
    expected = whole_batch(objective(name))
    for result in rank_results:
        assert_matches(result[name], expected, "mean_value")


@pytest.mark.parametrize("name", LOSSES)
def test_each_rank_scores_against_every_ranks_teacher(rank_results, name):
    # Without the gather each rank would see only its own 2 * IMAGES_PER_RANK columns.
    local = objective(name)(make_model()(rows_of_rank(0)))
    assert not torch.allclose(local, rank_results[0][name]["value"], atol=1e-4)


def test_one_head_equals_vissls_simclr_loss_on_two_ranks(rank_results):
    set_cpu_device()
    expected = whole_batch(one_head(vissl_simclr(world_size=1)))
    for result in rank_results:
        assert_matches(result["vissl_simclr"], expected, "mean_value")
        assert_matches(result["shared_head"], result["vissl_simclr"], "value")
