"""The GPU path (run on a lent GPU machine; skipped without CUDA): DISSL's loss keeps fp32 math
under pytorch AMP and never waits on the host; DISSL trains through the launcher with AMP and
pytorch SyncBN; the step benchmark's GPU mode runs every row, DINO's included."""

import math

import vissl_issl.plugin  # noqa: F401  (registration)

import pytest
import torch
from classy_vision.losses import build_loss

from conftest import logged

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

NUM_CROPS, CLASSES, BATCH = 4, 512, 32


def dissl_loss():
    return build_loss({"name": "dissl_loss", "num_crops": NUM_CROPS, "num_classes": CLASSES}).cuda()


def test_dissl_loss_under_autocast_is_the_fp32_loss_of_the_fp16_logits_without_host_syncs():
    torch.manual_seed(0)
    teacher = torch.randn(2 * BATCH, CLASSES, device="cuda").half().requires_grad_()
    student = torch.randn(NUM_CROPS * BATCH, CLASSES, device="cuda").half().requires_grad_()
    loss = dissl_loss()
    loss([teacher, student])  # first call: lazy CUDA initialisation may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.float16):
            value = loss([teacher, student])
        value.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert value.dtype == torch.float32
    reference = dissl_loss()([teacher.detach().float(), student.detach().float()])
    torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_dissl_trains_with_amp_and_pytorch_syncbn_through_the_launcher(run_launcher):
    out = run_launcher(
        [
            "config.OPTIMIZER.num_epochs=1",
            "config.MACHINE.DEVICE=gpu",
            "config.DISTRIBUTED.BACKEND=nccl",
            "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
            "config.MODEL.AMP_PARAMS.USE_AMP=True",
            "config.MODEL.AMP_PARAMS.AMP_TYPE=pytorch",
            "config.MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN=True",
            "config.MODEL.SYNC_BN_CONFIG.SYNC_BN_TYPE=pytorch",
        ]
    )
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert "SyncBatchNorm" in (out / "log.txt").read_text()  # VISSL logs the converted model


def test_step_benchmark_gpu_mode_runs_dino_on_a_resnet(tmp_path):
    import benchmark  # tools/benchmark.py, on pytest's pythonpath

    doc = tmp_path / "benchmarks.md"
    argv = ["step", "--device", "gpu", "--batch", "8", "--crops", "2x64+2x32", "--warmup", "2", "--steps", "2"]
    benchmark.main([*argv, "--repeats", "1", "--methods", "trunk_only", "simclr", "dissl", "dino", "--doc", str(doc)])
    text = doc.read_text()
    assert "peak GPU memory (MiB)" in text and "GPU only" not in text
    for method in ("simclr", "dissl", "dino"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {benchmark.METHODS[method].label} |"))
        assert float(row.split("|")[2]) > 0  # images/s
