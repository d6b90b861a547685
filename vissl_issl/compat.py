"""Shims that let VISSL 0.1.6 (2021) run on today's Python, torch, numpy and setuptools.

``import vissl_issl.plugin`` calls :func:`apply_all` before anything imports VISSL. Each shim is one
small function that checks whether it is needed and does nothing otherwise, so the same code runs
on stacks that still have what VISSL expects (and on stacks with apex).
"""

import importlib.util
import sys
import types
import warnings
from importlib import metadata, resources


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def alias_kinetics400() -> bool:
    """torchvision >= 0.14 removed ``Kinetics400``; classy_vision (bundled in the vissl wheel)
    imports it from every ``vissl.models/data/hooks/trainer`` import. ``Kinetics`` is its
    replacement and VISSL never calls it."""
    import torchvision.datasets.kinetics as kinetics

    if hasattr(kinetics, "Kinetics400"):
        return False
    kinetics.Kinetics400 = kinetics.Kinetics
    return True


def provide_pkg_resources() -> bool:
    """setuptools >= 81 no longer ships ``pkg_resources``, which ``vissl.utils.misc`` imports
    (so every VISSL import fails). VISSL only calls ``resource_filename`` and
    ``get_distribution``; both have exact standard-library equivalents."""
    if sys.modules.get("pkg_resources") is not None or _importable("pkg_resources"):
        return False

    class DistributionNotFound(Exception):
        pass

    def resource_filename(package: str, resource: str) -> str:
        return str(resources.files(package) / resource)

    def get_distribution(name: str):
        try:
            return types.SimpleNamespace(version=metadata.version(name), project_name=name)
        except metadata.PackageNotFoundError as error:
            raise DistributionNotFound(name) from error

    module = types.ModuleType("pkg_resources")
    module.__doc__ = "vissl_issl's stand-in for the two pkg_resources calls VISSL makes."
    module.resource_filename = resource_filename
    module.get_distribution = get_distribution
    module.DistributionNotFound = DistributionNotFound
    sys.modules["pkg_resources"] = module
    return True


def restore_numpy_aliases() -> bool:
    """numpy >= 1.24 removed ``np.float``/``np.int``/``np.bool``, which VISSL's VOC mAP meter,
    cutmix collator, SVM and retrieval utilities (and classy's AutoAugment) still use. They were
    plain aliases of the Python builtins."""
    import numpy as np

    restored = False
    for name, builtin in (("float", float), ("int", int), ("bool", bool), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, builtin)
            restored = True
    return restored


def fused_sgd_supported(param_groups) -> bool:
    """torch's fused SGD kernel takes floating-point CPU and CUDA tensors."""
    groups = param_groups if isinstance(param_groups[0], dict) else [{"params": param_groups}]
    params = [p for group in groups for p in group["params"]]
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def larc_without_apex() -> bool:
    """VISSL asserts apex for ``OPTIMIZER.use_larc`` and classy's ``sgd`` wraps apex's LARC; apex
    has no builds for modern torch. Without apex, ``sgd`` with ``use_larc`` wraps the
    pure-PyTorch :class:`vissl_issl.optim.larc.LARC` (apex semantics) instead, so stock configs
    run unchanged. With apex installed nothing changes.

    The SGD underneath is torch's fused one (one pass over each parameter instead of the several
    of the per-tensor loop that classy builds on CPU: 3x faster on CPU in ``tools/benchmark.py``).
    """
    if _importable("apex"):
        return False
    import torch
    from classy_vision.optim import build_optimizer
    from classy_vision.optim.sgd import SGD
    from vissl.trainer.train_task import SelfSupervisionTask

    from vissl_issl.optim.larc import LARC

    def prepare(self, param_groups):
        self.optimizer = torch.optim.SGD(
            param_groups,
            lr=self._lr,
            nesterov=self._nesterov,
            momentum=self._momentum,
            weight_decay=self._weight_decay,
            fused=fused_sgd_supported(param_groups) or None,
        )
        if self._use_larc:
            self.optimizer = LARC(self.optimizer, **self._larc_config)

    def build_optimizer_without_apex_assert(self):
        return build_optimizer(self.config["OPTIMIZER"])

    SGD.prepare = prepare
    SelfSupervisionTask._build_optimizer = build_optimizer_without_apex_assert
    return True


def broadcast_checkpoints_as_buffers() -> bool:
    """classy_vision's ``broadcast_object``, which every checkpoint load (AUTO_RESUME included)
    goes through, builds its byte tensor with ``torch.ByteTensor(memoryview)``: one Python object
    per byte, about 20 s for a 156 MB digits DISSL checkpoint on the 2-core machine, on one rank as
    on many. The same length-then-bytes broadcast, with the tensor made over the pickle's buffer."""
    import io
    import tempfile

    import torch
    from classy_vision.generic import distributed_util, util

    if util.broadcast_object is not distributed_util.broadcast_object:
        return False

    def broadcast_object(obj, src: int = distributed_util._PRIMARY_RANK, use_disk: bool = True):
        if distributed_util.get_world_size() == 1:
            return obj
        if distributed_util.get_rank() == src:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            data = torch.frombuffer(bytearray(buffer.getbuffer()), dtype=torch.uint8)
            distributed_util.broadcast(torch.LongTensor([data.numel()]), src=src)
            distributed_util.broadcast(data, src=src)
            return obj
        length = distributed_util.broadcast(torch.LongTensor([0]), src=src)
        data = distributed_util.broadcast(torch.empty([int(length.item())], dtype=torch.uint8), src=src)
        if not use_disk:
            return torch.load(io.BytesIO(data.numpy()), weights_only=False)
        with tempfile.TemporaryFile("r+b") as file:  # one copy in memory, as classy's
            file.write(data.numpy())
            del data
            file.seek(0)
            return torch.load(file, weights_only=False)

    util.broadcast_object = broadcast_object
    return True


def apply_all() -> None:
    """Apply every shim that the installed stack needs, in import order."""
    with warnings.catch_warnings():
        # Importing VISSL warns on every run about APIs it uses that are deprecated upstream.
        warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated.*")
        alias_kinetics400()
        provide_pkg_resources()
        restore_numpy_aliases()
        larc_without_apex()
        broadcast_checkpoints_as_buffers()
