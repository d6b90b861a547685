"""The quick start's comparison: every method pretrains through the launcher and is probed the same way."""
import subprocess
import sys

from conftest import REPO


def test_quick_start_compares_methods_with_one_probe(tmp_path):
    command = [
        sys.executable,
        str(REPO / "tools" / "quick_start.py"),
        "--method", "cissl", "simclr",
        "--epochs", "1",
        "--out", str(tmp_path),
        "config.DATA.TRAIN.DATA_LIMIT=256",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("Linear probe, digits test split") :].splitlines()
    rows = {line.split("top-1")[0].strip(): float(line.split("top-1")[1].split("%")[0]) for line in table if "top-1" in line}
    assert set(rows) == {"random init trunk", "CISSL (1 epochs)", "SimCLR (VISSL's loss) (1 epochs)"}
    assert all(10.0 < top1 <= 100.0 for top1 in rows.values())  # 10 classes: above chance
    for method in ("cissl", "simclr"):
        assert (tmp_path / method / "model_final_checkpoint_phase0.torch").is_file()
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
