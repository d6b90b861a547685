"""The quick start's comparison: a method pretrains through the launcher and is probed the same way as
the random trunk."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # engine, launcher or subprocess runs

# One method against the random trunk: each further method is another launcher run of the same code.
ROWS = {"cissl": "CISSL, 1 epochs"}


def test_quick_start_compares_a_method_with_the_random_trunk_by_one_probe(tmp_path):
    command = [
        sys.executable,
        str(REPO / "tools" / "quick_start.py"),
        "--method",
        *ROWS,
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
        "config.DATA.TRAIN.DATA_LIMIT=256",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("Digits test split") :].splitlines()
    rows = {
        line.split("linear top-1")[0].strip(): float(line.split("linear top-1")[1].split("%")[0])
        for line in table
        if "linear top-1" in line
    }
    assert set(rows) == {"random init trunk", *ROWS.values()}
    assert all(10.0 < top1 <= 100.0 for top1 in rows.values())  # 10 classes: above chance
    for method, name in ROWS.items():
        assert (tmp_path / method / "model_final_checkpoint_phase0.torch").is_file()
        # Each row is the probe tool's result, cached beside the run.
        saved = json.loads((tmp_path / method / "probe" / "results.json").read_text())
        assert saved["linear"]["test_top1"] == pytest.approx(rows[name], abs=0.005)
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
