"""Each compat shim is needed on this stack (the import or call fails without it) and sufficient
(it works with it). Every case runs in a fresh interpreter: shims patch modules process-wide."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each case runs in a fresh interpreter

# Importing the module applies no shim (``import vissl_issl.plugin`` applies them all), so each
# case applies exactly one.
LOAD_COMPAT = """
from vissl_issl import compat
"""

# setuptools >= 81 has no pkg_resources; block it so the case is the same on any setuptools.
BLOCK_PKG_RESOURCES = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pkg_resources":
            raise ModuleNotFoundError("No module named 'pkg_resources'", name=name)
sys.meta_path.insert(0, Block())
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def skip_if_not_needed(without: subprocess.CompletedProcess, what: str) -> None:
    # Decided in the fresh interpreter: this process has the shims applied already.
    if without.returncode == 0:
        pytest.skip(f"this stack still has {what}")


def test_kinetics400_alias_is_needed_and_sufficient():
    without = run(LOAD_COMPAT + "compat.provide_pkg_resources()\nimport vissl.models")
    skip_if_not_needed(without, "torchvision's Kinetics400")
    assert "Kinetics400" in without.stderr
    with_shim = run(
        LOAD_COMPAT + "compat.provide_pkg_resources()\nassert compat.alias_kinetics400()\nimport vissl.models"
    )
    assert with_shim.returncode == 0, with_shim.stderr


def test_pkg_resources_stand_in_is_needed_and_sufficient():
    prelude = BLOCK_PKG_RESOURCES + LOAD_COMPAT + "compat.alias_kinetics400()\n"
    without = run(prelude + "import vissl.utils.misc")
    assert without.returncode != 0 and "pkg_resources" in without.stderr
    with_shim = run(
        prelude
        + "assert compat.provide_pkg_resources()\n"
        + "import vissl.utils.misc, pkg_resources, importlib.resources as r, pathlib\n"
        + "p = pkg_resources.resource_filename('vissl', 'config/defaults.yaml')\n"
        + "assert pathlib.Path(p).is_file() and p == str(r.files('vissl') / 'config/defaults.yaml'), p\n"
        + "assert pkg_resources.get_distribution('torch').version\n"
        + "try:\n    pkg_resources.get_distribution('apex')\nexcept pkg_resources.DistributionNotFound:\n    pass\n"
        + "else:\n    raise AssertionError('apex found')\n"
    )
    assert with_shim.returncode == 0, with_shim.stderr


def test_numpy_aliases_are_needed_and_sufficient():
    call = (
        "import numpy as np\n"
        "from vissl.utils.svm_utils.evaluate import get_precision_recall\n"
        "P, R, score, ap = get_precision_recall(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.4]))\n"
        "assert abs(ap - 1.0) < 1e-6, ap\n"
    )
    prelude = LOAD_COMPAT + "compat.provide_pkg_resources()\ncompat.alias_kinetics400()\n"
    without = run(prelude + call)
    skip_if_not_needed(without, "np.float")
    assert "np.float" in without.stderr
    with_shim = run(prelude + "assert compat.restore_numpy_aliases()\n" + call)
    assert with_shim.returncode == 0, with_shim.stderr


def test_larc_without_apex_is_needed_and_sufficient():
    build = (
        "import torch\n"
        "from classy_vision.optim import build_optimizer\n"
        "opt = build_optimizer({'name': 'sgd', 'use_larc': True, 'momentum': 0.9, 'weight_decay': 1e-6,\n"
        "    'larc_config': {'clip': False, 'trust_coefficient': 0.001, 'eps': 1e-8}, 'num_epochs': 1,\n"
        "    'param_schedulers': {'lr': {'name': 'constant', 'value': 0.1}}})\n"
        "opt.set_param_groups([torch.nn.Parameter(torch.ones(3))])\n"
        "print(type(opt.optimizer).__module__)\n"
    )
    prelude = LOAD_COMPAT + "compat.provide_pkg_resources()\ncompat.alias_kinetics400()\n"
    without = run(prelude + build)
    assert without.returncode != 0 and "Apex needed for LARC" in without.stderr
    with_shim = run("import vissl_issl.plugin\n" + build)
    assert with_shim.returncode == 0, with_shim.stderr
    assert with_shim.stdout.strip() == "vissl_issl.optim.larc"
