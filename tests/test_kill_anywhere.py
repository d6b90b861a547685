"""A run killed at any instant, inside checkpoint writes included, resumes by itself and ends
bit for bit where an uninterrupted run ends; a damaged checkpoint is resumed past.

The digits DISSL recipe with its random augmentations (3 epochs of 4 steps, iteration checkpoints
every 2 steps and phase checkpoints every epoch: 9 checkpoint writes). ``test_soak_...`` kills many
more times (``pytest -m soak tests/test_kill_anywhere.py``; figures in docs/reliability.md).
"""

import os
import random
import shutil
import signal
import time
from pathlib import Path

from vissl_issl.plugin.checkpointing import load_problem

import pytest
from test_launcher import assert_same_tensors, load

from conftest import DISSL_DIGITS, LAUNCHER, REPO, logged, preloaded, run_tool

KILLING_LAUNCHER = REPO / "tests" / "killing_launcher.py"
RUN = [
    f"config={DISSL_DIGITS}",
    "config.DATA.TRAIN.DATA_LIMIT=64",
    "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
    "config.OPTIMIZER.num_epochs=3",
    "config.CHECKPOINT.CHECKPOINT_FREQUENCY=1",
    "config.CHECKPOINT.CHECKPOINT_ITER_FREQUENCY=2",
    "config.LOG_FREQUENCY=1",
]
FINAL = "model_final_checkpoint_phase2.torch"


def train(directory: Path, kill: str = "") -> int:
    """One launcher run on ``directory``: ``kill`` is ``killing_launcher``'s KILL, or ``after:<s>``
    (SIGKILL from outside after s seconds), or empty; returns the exit code."""
    overrides = [*RUN, f"config.CHECKPOINT.DIR={directory}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if kill.startswith("after:"):
        logs = directory.parent / f"{directory.name}.log"
        pid = preloaded().start([LAUNCHER, *overrides], directory.parent, env, logs, logs.with_suffix(".err"))
        time.sleep(float(kill.split(":")[1]))
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had finished
        return preloaded().wait(pid, 600)
    argv = [KILLING_LAUNCHER, *overrides] if kill else [LAUNCHER, *overrides]
    result = run_tool(argv, directory.parent, KILL=kill)
    assert result.returncode in (0, -signal.SIGKILL), result.stdout[-3000:] + result.stderr[-3000:]
    return result.returncode


def assert_no_partial_checkpoint(directory: Path) -> None:
    for path in directory.glob("*.torch"):
        assert load_problem(path) is None, path


def survive(directory: Path, kills) -> int:
    """Runs ``directory`` with each kill in turn, then to the end; returns how many kills landed."""
    landed = 0
    for kill in kills:
        if (directory / FINAL).exists():
            break
        landed += train(directory, kill) == -signal.SIGKILL
        assert_no_partial_checkpoint(directory)
    assert train(directory) == 0
    return landed


def assert_same_final_state(a: Path, b: Path) -> None:
    a, b = load(a / FINAL), load(b / FINAL)
    assert a["iteration"] == b["iteration"] == 12
    a, b = a["classy_state_dict"], b["classy_state_dict"]
    assert_same_tensors(a["base_model"], b["base_model"])  # weights and BN statistics
    assert_same_tensors(a["optimizer"], b["optimizer"])  # Adam moments and step counts
    assert_same_tensors(a["loss"], b["loss"])  # DISSL's counters


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert train(directory) == 0
    return directory


@pytest.mark.slow
def test_a_run_killed_inside_writes_and_between_them_ends_as_an_uninterrupted_one(uninterrupted, tmp_path):
    # Mid-write of the 3rd checkpoint (iteration 6, 20 MB in); before the rename of the 2nd (iteration 4,
    # complete and fsynced); then from outside, 12 s into a run.
    kills = ["write:3:20000000", "rename:2", "after:12"]
    assert survive(tmp_path / "run", kills) >= 2
    assert_same_final_state(uninterrupted, tmp_path / "run")


@pytest.mark.soak
def test_soak_many_kills_at_random_instants(uninterrupted, tmp_path):
    """Rounds of random kills, each round a fresh run killed until it ends, 30 landed kills in all."""
    rng = random.Random(0)

    def kill() -> str:
        kind = rng.choice(["write", "rename", "after"])
        if kind == "write":
            return f"write:{rng.randint(1, 3)}:{rng.randint(1, 150_000_000)}"
        return f"rename:{rng.randint(1, 3)}" if kind == "rename" else f"after:{rng.uniform(2, 20):.1f}"

    landed, rounds = 0, 0
    while landed < 30:
        rounds += 1
        directory = tmp_path / f"round{rounds}"
        landed += survive(directory, [kill() for _ in range(20)])
        assert_same_final_state(uninterrupted, directory)
        shutil.rmtree(directory)  # 1.4 GB a round
    print(f"survived {landed} kills in {rounds} runs, each ending bit for bit as the uninterrupted run")


@pytest.mark.slow
def test_a_truncated_checkpoint_is_skipped_and_the_run_finishes(uninterrupted, tmp_path):
    # The case: a kill while model_phase1.torch was written by a writer that is not atomic
    # (classy_vision's) left it cut at 50 MB, with checkpoint.torch pointing at it.
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "model_phase0.torch").write_bytes((uninterrupted / "model_phase0.torch").read_bytes())
    (directory / "model_phase1.torch").write_bytes((uninterrupted / "model_phase1.torch").read_bytes()[: 50 * 2**20])
    (directory / "checkpoint.torch").symlink_to(directory / "model_phase1.torch")
    overrides = [*RUN, "config.CHECKPOINT.CHECKPOINT_ITER_FREQUENCY=-1", f"config.CHECKPOINT.DIR={directory}"]
    result = run_tool([LAUNCHER, *overrides], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Not resuming from {directory / 'model_phase1.torch'}" in result.stdout + result.stderr
    iterations = [record["iter"] for record in logged(directory) if "loss" in record]
    assert iterations[0] == 4  # resumed from model_phase0.torch, the newest that loads
    assert_same_final_state(uninterrupted, directory)
    assert load_problem(directory / "model_phase1.torch") is None  # written again by the resumed run
