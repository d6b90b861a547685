"""Loaded checkpoints reach every rank through the plugin's ``broadcast_object`` (a compat shim over
classy_vision's, which builds its byte tensor one Python object per byte): the same objects, by
classy's own length-then-bytes protocol."""

from pathlib import Path

import vissl_issl.plugin  # noqa: F401  (compat shims)

import pytest
import torch
from classy_vision.generic import distributed_util, util
from ddp import run_on_ranks

CHECKPOINT = {
    "classy_state_dict": {"base_model": {"model": {"trunk": {"w": torch.arange(6.0).reshape(2, 3)}}}},
    "iteration": 8,
    "phase_idx": 1,
    "type": "consolidated",
}


def assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    else:
        assert a == b


def send_with_the_shim(rank: int):
    return util.broadcast_object(CHECKPOINT if rank == 0 else None)


def receive_with_classys_own(rank: int):
    if rank == 0:
        return util.broadcast_object(CHECKPOINT)
    return distributed_util.broadcast_object(None)


def test_the_shim_replaces_classys_function_for_checkpoint_loads():
    assert util.broadcast_object is not distributed_util.broadcast_object
    assert util.broadcast_object.__module__ == "vissl_issl.compat"


@pytest.mark.parametrize("receiver", [send_with_the_shim, receive_with_classys_own])
def test_every_rank_gets_the_checkpoint(tmp_path: Path, receiver):
    sent, received = run_on_ranks(receiver, tmp_path)
    assert_same(sent, CHECKPOINT)
    assert_same(received, CHECKPOINT)


def test_one_process_gets_the_object_itself():
    assert util.broadcast_object(CHECKPOINT) is CHECKPOINT
