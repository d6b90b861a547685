"""DISSL, CISSL, W-MSE and VISSL's SimCLR baseline train through tools/run_distributed_engines.py,
and SLURM jobs run the plugin (resuming: test_kill_anywhere.py).
Runs on 2 processes: DISSL in test_multinode.py, BYOL in test_byol.py; each loss's 2-rank result
equals the whole-batch one in its own test_*_distributed / DDP tests."""

import math
import socket

import pytest
import torch
import yaml

from conftest import TINY_DISSL, logged, run_tool

pytestmark = pytest.mark.slow  # engine, launcher or subprocess runs


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_tensors(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_tensors(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_one_process_trains_and_writes_a_final_checkpoint(run_launcher):
    out = run_launcher(["config.OPTIMIZER.num_epochs=1"])
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)  # 64 images / 16 per step
    assert (out / "model_final_checkpoint_phase0.torch").is_file()
    assert "num_crops: 2" in (out / "train_config.yaml").read_text()  # plugin inference was saved


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurm_path_runs_the_plugin_job(tmp_path):
    """Without a SLURM cluster, submitit's AutoExecutor runs the submitted job locally: the
    plugin's job class is pickled, unpickled in submitit's process and trains there."""
    out = tmp_path / "run"
    overrides = [
        *TINY_DISSL,
        f"config.CHECKPOINT.DIR={out}",
        "config.OPTIMIZER.num_epochs=1",
        "config.SLURM.USE_SLURM=true",
        "config.SLURM.PARTITION=local",
        f"config.SLURM.LOG_FOLDER={tmp_path / 'submitit'}",
        f"config.SLURM.PORT_ID={free_port()}",
    ]
    script = tmp_path / "submit.py"
    script.write_text(
        "import vissl_issl.plugin\n"
        "from vissl_issl.plugin.launcher import hydra_main\n"
        f"job = hydra_main({overrides!r})\n"
        "job.result()\n"
        "print(type(job.submission().function).__module__, type(job.submission().function).__name__)\n"
    )
    result = run_tool([script], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["vissl_issl.plugin.launcher", "SlurmJob"]
    assert (out / "model_final_checkpoint_phase0.torch").is_file()


def test_cissl_trains_through_the_launcher(run_launcher):
    out = run_launcher(["config.OPTIMIZER.num_epochs=1"], config="pretrain/cissl/cissl_resnet18_digits")
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)  # 64 images / 16 per rank
    assert (out / "model_final_checkpoint_phase0.torch").is_file()
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["LOSS"]["name"] == "cissl_loss" and saved["MODEL"]["HEAD_CROPS"] == [None, None]


def test_vissls_simclr_digits_baseline_trains(run_launcher):
    out = run_launcher(["config.OPTIMIZER.num_epochs=1"], config="pretrain/simclr/simclr_resnet18_digits")
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert (out / "model_final_checkpoint_phase0.torch").is_file()


def test_w_mse_trains_through_the_launcher(run_launcher):
    # 16 images per step whiten as one group: w_size must exceed the 32-d embedding, so 16 is
    # too few; 2 steps of 32 images in groups of 32 need a 16-d head.
    overrides = [
        "config.OPTIMIZER.num_epochs=1",
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=32",
        "config.LOSS.w_mse_loss.w_size=32",
        "config.MODEL.HEAD.PARAMS.1.1.dims=[1024,16]",
    ]
    out = run_launcher(overrides, config="pretrain/w_mse/w_mse_resnet18_digits")
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)  # 64 images / 32 per step
    assert (out / "model_final_checkpoint_phase0.torch").is_file()
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["LOSS"]["w_mse_loss"]["embedding_dim"] == 16 and saved["LOSS"]["w_mse_loss"]["num_samples"] == 2
