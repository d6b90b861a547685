"""Multi-node training without a cluster: VISSL's manual multi-node launch (the same command on each
node with ``node_id=<i>``, TCP rendezvous at ``DISTRIBUTED.RUN_ID=<master>:<port>``), run as 2 'nodes'
x 1 process over loopback with gloo through the plugin launcher, trains exactly as 1 node x 2 processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from test_launcher import assert_same_tensors, free_port, load

from conftest import LAUNCHER, TINY_DISSL, logged

pytestmark = pytest.mark.slow  # engine, launcher or subprocess runs

FINAL = "model_final_checkpoint_phase0.torch"


def tail(log: Path) -> str:
    return f"--- {log.name} ---\n{log.read_text()[-3000:]}\n"


def launch_nodes(overrides: List[List[str]], cwd: Path, timeout: float = 300) -> None:
    """Run one launcher per node concurrently. A node that dies leaves the others blocked in the
    rendezvous or a collective (gloo's default timeout is 30 min), so the first failure ends them all."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logs = [cwd / f"node{i}.log" for i in range(len(overrides))]
    # Files, not pipes: VISSL logs more than a pipe buffer holds, and a node blocked writing to an
    # unread pipe would stall every node at the next collective.
    procs = []
    for node_overrides, log in zip(overrides, logs):
        with log.open("w") as out:
            command = [sys.executable, str(LAUNCHER), *node_overrides]
            # Own session: killing a node must also kill the rank it spawned.
            procs.append(
                subprocess.Popen(
                    command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if any(codes) or codes == [0] * len(procs):
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group: a crashed launcher can leave its rank running
            except ProcessLookupError:
                pass
            p.wait()
    codes = [p.returncode for p in procs]
    assert codes == [0] * len(procs), f"exit codes {codes} (negative: killed)\n" + "".join(tail(log) for log in logs)


def test_two_nodes_train_exactly_as_one_node_with_two_processes(run_launcher, tmp_path):
    one_epoch = ["config.OPTIMIZER.num_epochs=1"]
    # One DataLoader worker per rank: spawned ranks and their (forkserver) workers must all import
    # the plugin. The views are deterministic, so the nodes' in-process loading gives the same batches.
    single = run_launcher(
        [*one_epoch, "config.DISTRIBUTED.NUM_PROC_PER_NODE=2", "config.DATA.NUM_DATALOADER_WORKERS=1"],
        name="single_node",
    )

    # Separate checkpoint directories, as on nodes without a shared disk, show who writes what:
    # checkpoints must come from global rank 0 only, not from every node's local rank 0.
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    run_id = f"127.0.0.1:{free_port()}"
    common = [
        *TINY_DISSL,
        *one_epoch,
        "config.DISTRIBUTED.NUM_NODES=2",
        "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
        "config.DISTRIBUTED.INIT_METHOD=tcp",
        f"config.DISTRIBUTED.RUN_ID={run_id}",
    ]
    launch_nodes([[*common, f"node_id={i}", f"config.CHECKPOINT.DIR={d}"] for i, d in enumerate(nodes)], tmp_path)

    multi = nodes[0]
    assert not list(nodes[1].glob("*.torch"))
    losses = [(r["iter"], r["loss"]) for r in logged(single) if "loss" in r]
    assert len(losses) == 2  # 64 images / (2 ranks x 16)
    assert [(r["iter"], r["loss"]) for r in logged(multi) if "loss" in r] == losses
    a, b = load(single / FINAL)["classy_state_dict"], load(multi / FINAL)["classy_state_dict"]
    assert_same_tensors(a["base_model"], b["base_model"])  # weights and BN statistics
    assert_same_tensors(a["optimizer"], b["optimizer"])
    assert_same_tensors(a["loss"], b["loss"])
