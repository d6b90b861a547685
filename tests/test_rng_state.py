"""RngStateHook: each rank gets its own generator states back, where the training loop took them."""

import random
from types import SimpleNamespace

from vissl_issl.plugin.hooks.rng_state import RngStateHook

import numpy as np
import torch
from ddp import run_on_ranks


def draws():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def task(iteration, frequency=2, checkpoint=None):
    config = {"CHECKPOINT": {"CHECKPOINT_ITER_FREQUENCY": frequency}}
    return SimpleNamespace(train=True, iteration=iteration, config=config, checkpoint=checkpoint)


def checkpoint_of(hook):
    # What VISSL's checkpoint hook saves (task.get_classy_state()["hooks"]), after a pickle round trip.
    return {"classy_state_dict": {"hooks": {"RngStateHook": hook.get_classy_state()}}}


def snapshot_and_restore_on_each_rank(rank):
    random.seed(rank), np.random.seed(rank), torch.manual_seed(rank)
    saving = RngStateHook()
    saving.on_phase_end(task(4))  # a phase checkpoint: restored at the start of the resumed run
    expected = draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # the resumed process's own seeds
    resuming = RngStateHook()
    resuming.on_start(task(4, checkpoint=checkpoint_of(saving)))
    return {"expected": expected, "resumed": draws()}


def test_two_ranks_each_resume_their_own_generator_states(tmp_path):
    results = run_on_ranks(snapshot_and_restore_on_each_rank, tmp_path)
    for result in results:
        assert result["resumed"] == result["expected"]
    assert results[0]["expected"] != results[1]["expected"]  # not rank 0's state everywhere


def test_an_iteration_checkpoint_is_restored_after_the_resumed_phase_makes_its_data_iterator():
    saving = RngStateHook()
    saving.on_step(task(6))  # iteration 6 is a multiple of the frequency: snapshot
    expected = draws()
    resuming = RngStateHook()
    resuming.on_start(task(6, checkpoint=checkpoint_of(saving)))
    torch.rand(())  # the data iterator made for the resumed phase draws its base seed
    resuming.on_phase_start(task(6))
    assert draws() == expected


def test_no_snapshot_between_checkpoint_instants_and_none_restored_without_one():
    hook = RngStateHook()
    hook.on_step(task(5))
    assert hook.get_classy_state() == {}
    before = torch.get_rng_state()
    RngStateHook().on_start(task(0, checkpoint={"classy_state_dict": {"hooks": {}}}))
    assert torch.equal(torch.get_rng_state(), before)
