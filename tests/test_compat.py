"""Each compat shim is needed on this stack (the import or call fails without it) and sufficient
(it works with it); pkg_resources is setuptools' own, which the plugin requires instead of shimming.
Every case runs in a fresh interpreter: shims patch modules process-wide."""

import importlib.util
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each case runs in a fresh interpreter

# Importing the module applies no shim (``import vissl_issl.plugin`` applies them all), so each
# case applies exactly one.
LOAD_COMPAT = """
from vissl_issl import compat
"""

# setuptools >= 81 has no pkg_resources: block it to see what a user who forces one gets.
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
    without = run(LOAD_COMPAT + "import vissl.models")
    skip_if_not_needed(without, "torchvision's Kinetics400")
    assert "Kinetics400" in without.stderr
    with_shim = run(LOAD_COMPAT + "assert compat.alias_kinetics400()\nimport vissl.models")
    assert with_shim.returncode == 0, with_shim.stderr


def test_plugin_import_leaves_the_real_pkg_resources_api_working():
    # Every pkg_resources use in VISSL, its test suite and the libraries installed with it.
    uses = (
        "import vissl_issl.plugin\n"
        "import importlib.metadata, pathlib, tempfile\n"
        "import pkg_resources\n"
        "setuptools_files = {f.locate().resolve() for f in importlib.metadata.distribution('setuptools').files}\n"
        "assert pathlib.Path(pkg_resources.__file__).resolve() in setuptools_files, pkg_resources.__file__\n"
        # VISSL: its default config, collect_env's versions
        "assert pathlib.Path(pkg_resources.resource_filename('vissl', 'config/defaults.yaml')).is_file()\n"
        "assert pkg_resources.get_distribution('torch').version == importlib.metadata.version('torch')\n"
        "try:\n    pkg_resources.get_distribution('apex')\nexcept pkg_resources.DistributionNotFound:\n    pass\n"
        "else:\n    raise AssertionError('apex found')\n"
        # VISSL's tests/utils.py lists the packaged configs
        "assert pkg_resources.resource_isdir('configs', 'config/pretrain')\n"
        "assert 'swav' in pkg_resources.resource_listdir('configs', 'config/pretrain')\n"
        # omegaconf's pydevd_plugins: declare_namespace
        "import pydevd_plugins.extensions\n"
        # pytest's monkeypatch.syspath_prepend: fixup_namespace_packages once pkg_resources is loaded
        "import pytest\n"
        "patch = pytest.MonkeyPatch()\n"
        "patch.syspath_prepend(tempfile.mkdtemp())\n"
        "patch.undo()\n"
    )
    result = run(uses)
    assert result.returncode == 0, result.stderr


def test_without_pkg_resources_the_plugin_import_fails_naming_the_fix():
    # What setuptools >= 81 leaves: no pkg_resources. VISSL cannot import; the plugin says why and
    # puts nothing in its place.
    vissl = run(BLOCK_PKG_RESOURCES + "import vissl.utils.misc")
    assert vissl.returncode != 0 and "No module named 'pkg_resources'" in vissl.stderr
    plugin = run(
        BLOCK_PKG_RESOURCES
        + "try:\n    import vissl_issl.plugin\n"
        + "except ModuleNotFoundError as error:\n"
        + "    assert error.name == 'pkg_resources' and 'setuptools<81' in str(error), error\n"
        + "    assert 'pkg_resources' not in sys.modules\n"
        + "    print('refused')\n"
    )
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout.strip() == "refused"


def test_numpy_aliases_are_needed_and_sufficient():
    call = (
        "import numpy as np\n"
        "from vissl.utils.svm_utils.evaluate import get_precision_recall\n"
        "P, R, score, ap = get_precision_recall(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.4]))\n"
        "assert abs(ap - 1.0) < 1e-6, ap\n"
    )
    prelude = LOAD_COMPAT + "compat.alias_kinetics400()\n"
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
    prelude = LOAD_COMPAT + "compat.alias_kinetics400()\n"
    without = run(prelude + build)
    assert without.returncode != 0 and "Apex needed for LARC" in without.stderr
    with_shim = run("import vissl_issl.plugin\n" + build)
    assert with_shim.returncode == 0, with_shim.stderr
    assert with_shim.stdout.strip() == "vissl_issl.optim.larc"


# VISSL's own config path (no plugin launcher) on its stock SwAV config, which asks for apex AMP
# (AMP_TYPE's default) and apex SyncBN, on one process: the task that VISSL's trainer builds, then
# the model with its BatchNorm converted as on a GPU run (MACHINE.DEVICE=gpu; conversion needs no GPU).
STOCK_APEX_TASK = """
import importlib.util, sys, tempfile
import torch.distributed as dist
from torch import nn
from vissl.trainer.train_task import AmpType
from vissl.trainer.trainer_main import build_task
from vissl.utils.hydra_config import compose_hydra_configuration, convert_to_attrdict
assert importlib.util.find_spec("apex") is None
folder = tempfile.mkdtemp()
cfg = compose_hydra_configuration([
    "config=pretrain/swav/swav_8node_resnet",
    "config.DISTRIBUTED.NUM_NODES=1",
    "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
    f"config.CHECKPOINT.DIR={folder}",
])
_, config = convert_to_attrdict(cfg)
amp, sync_bn = config.MODEL.AMP_PARAMS, config.MODEL.SYNC_BN_CONFIG
assert amp.USE_AMP and amp.AMP_TYPE == "apex" and sync_bn.CONVERT_BN_TO_SYNC_BN and sync_bn.SYNC_BN_TYPE == "apex"
assert config.MACHINE.DEVICE == "gpu"
dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=0, world_size=1)
"""

BUILD_WITHOUT_SHIM = """
errors = []
try:
    build_task(config)
except RuntimeError as error:
    errors.append(str(error))
amp.USE_AMP = False
try:
    build_task(config)._build_model()
except NameError as error:
    errors.append(str(error))
print(errors)
"""

BUILD_WITH_SHIM = """
task = build_task(config)
assert task.amp_type is AmpType.PYTORCH and isinstance(task.amp_grad_scaler, torch.amp.GradScaler)
model = task._build_model()
assert any(isinstance(module, nn.SyncBatchNorm) for module in model.modules())
assert not any(type(module) is nn.BatchNorm2d for module in model.modules())
assert amp.AMP_TYPE == "pytorch" and sync_bn.SYNC_BN_TYPE == "pytorch"
"""


def test_amp_and_sync_bn_without_apex_are_needed_and_sufficient():
    if importlib.util.find_spec("apex") is not None:
        pytest.skip("this stack has apex")
    prelude = LOAD_COMPAT + "compat.alias_kinetics400()\ncompat.restore_numpy_aliases()\n"
    without = run(prelude + STOCK_APEX_TASK + BUILD_WITHOUT_SHIM)
    assert without.returncode == 0, without.stderr
    assert without.stdout.splitlines()[-1] == str(
        ["Apex is not available. Can't use mixed precision", "name 'apex' is not defined"]
    )
    with_shim = run("import vissl_issl.plugin\nimport torch\n" + STOCK_APEX_TASK + BUILD_WITH_SHIM)
    assert with_shim.returncode == 0, with_shim.stderr
    for key in ("AMP_PARAMS.AMP_TYPE", "SYNC_BN_CONFIG.SYNC_BN_TYPE"):
        assert with_shim.stderr.count(f"apex is not installed: config.MODEL.{key}=apex runs PyTorch's") == 1
