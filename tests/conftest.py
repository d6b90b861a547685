"""Shared helpers: run the plugin launcher as a user would, in a fresh process."""

import atexit
import copy
import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from preloaded import Server

# tools/test.sh runs one pytest worker per core: each worker, and every process it starts, then
# uses one thread, or the workers' thread pools (and the launcher's ranks') oversubscribe the cores.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "tools" / "run_distributed_engines.py"

# A few-second run of a digits config: 64 images, batch 16 per rank, deterministic views (two copies
# of each image) so that runs can be compared bit for bit.
TINY = [
    "config.DATA.TRAIN.DATA_LIMIT=64",
    "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
    "config.DATA.NUM_DATALOADER_WORKERS=0",
    "config.DATA.TRAIN.TRANSFORMS=[{name:ImgReplicatePil,num_times:2},{name:ToTensor}]",
    "config.LOG_FREQUENCY=1",
    "config.CHECKPOINT.CHECKPOINT_FREQUENCY=1",
]
DISSL_DIGITS = "pretrain/dissl/dissl_resnet18_digits"
TINY_DISSL = [f"config={DISSL_DIGITS}", *TINY]


def pytest_collection_modifyitems(config, items):
    """``soak`` tests (long variants) run only when ``-m`` names them: ``pytest -m soak``. Files with
    ``slow`` tests come first: tools/test.sh hands files to the workers in this order, so the last
    ones handed out are short and the two workers finish together."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept within each part
    if "soak" in config.option.markexpr:
        return
    kept = [item for item in items if item.get_closest_marker("soak") is None]
    config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("soak")])
    items[:] = kept


@functools.lru_cache(maxsize=None)
def preloaded() -> Server:
    """This pytest process's server of preloaded interpreters (see preloaded.py), started on first use."""
    server = Server()
    atexit.register(server.close)
    return server


def run_tool(argv: List[Any], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python argv...`` in ``cwd`` with ``env`` added, output captured, the imports preloaded."""
    return preloaded().run(argv, cwd, dict(os.environ, PYTHONUNBUFFERED="1", **env), timeout)


def launch(overrides: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_tool([LAUNCHER, *overrides], cwd)


def logged(checkpoint_dir: Path) -> List[dict]:
    lines = (checkpoint_dir / "stdout.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture
def run_launcher(tmp_path):
    def run(overrides: List[str], name: str = "run", config: str = DISSL_DIGITS) -> Path:
        checkpoint_dir = tmp_path / name
        result = launch([f"config={config}", *TINY, f"config.CHECKPOINT.DIR={checkpoint_dir}", *overrides], tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return checkpoint_dir

    return run


@functools.lru_cache(maxsize=None)
def default_model_config() -> Dict[str, Any]:
    import vissl.config
    from omegaconf import OmegaConf

    # OmegaConf, as VISSL's hydra composition does: plain YAML reads 1e-5 as a string.
    defaults = OmegaConf.load(Path(vissl.config.__file__).with_name("defaults.yaml"))
    return OmegaConf.to_container(defaults.config.MODEL, resolve=True)


def model_config(**head: Any):
    """VISSL's default ``config.MODEL`` (an AttrDict) with ``HEAD`` options overridden."""
    from vissl.config import AttrDict

    config = AttrDict(copy.deepcopy(default_model_config()))
    config.HEAD.update(head)
    return config


@pytest.fixture(scope="module")
def one_torch_thread():
    """For tests of tiny tensors on the shared 2 cores: waking torch's thread pool costs more than
    the maths (25x slower on a busy machine; a 64 px ResNet-50 pass takes seconds with 2 threads
    under load, a fraction of one with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
