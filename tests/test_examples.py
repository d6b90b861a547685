"""The plain-PyTorch examples (examples/minimal_*.py) train and probe with VISSL not importable."""

import math
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

# Blocks vissl and classy_vision (importing either raises ImportError), runs the example as a script,
# then prints any module of theirs that got imported anyway.
RUNNER = """
import runpy, sys
sys.modules["vissl"] = sys.modules["classy_vision"] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
blocked = ("vissl", "classy_vision")
print("imported:", sorted(m for m, module in sys.modules.items() if m.split(".")[0] in blocked and module))
"""


@pytest.mark.parametrize("method", ["dissl", "cissl"])
def test_example_trains_and_probes_without_vissl(method):
    script = REPO / "examples" / f"minimal_{method}.py"
    # One epoch of 4 steps on 256 digits, and a probe on their 256 features.
    flags = ["--epochs", "1", "--limit", "256", "--batch-size", "64", "--device", "cpu"]
    # One OpenMP thread: on a busy 2-core machine two threads spin-wait on each other, 10x slower.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", RUNNER, str(script), *flags]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [loss] = re.findall(r"^epoch 1/1 loss (\S+) ", result.stdout, re.MULTILINE)
    assert math.isfinite(float(loss))
    [top1] = re.findall(r"^linear probe test top-1: (\S+)%", result.stdout, re.MULTILINE)
    assert 0.0 <= float(top1) <= 100.0
    assert "imported: []" in result.stdout
