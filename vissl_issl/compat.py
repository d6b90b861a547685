"""Shims that let VISSL 0.1.6 (2021) run on today's Python, torch and numpy, without apex.

``import vissl_issl.plugin`` calls :func:`apply_all` before anything imports VISSL. Each shim is one
small function that checks whether it is needed and does nothing otherwise, so the same code runs
on stacks that still have what VISSL expects (and on stacks with apex). No shim stands in for a
whole module: each adds only what VISSL calls, to the module it calls it on.
"""

import importlib.util
import logging
import sys
import warnings
from importlib import metadata


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


def _setuptools() -> str:
    try:
        return f"setuptools {metadata.version('setuptools')}"
    except metadata.PackageNotFoundError:
        return "no setuptools"


def require_pkg_resources() -> None:
    """``vissl.utils.misc`` imports ``pkg_resources`` on every VISSL import, VISSL's own test suite
    and other libraries use much more of it (``resource_isdir``/``resource_listdir``,
    ``declare_namespace``, ``fixup_namespace_packages``, ...), and setuptools 81 removed it.

    The plugin therefore requires ``setuptools<81`` (``setup.py``): the real module serves every
    library in the process. A complete equivalent would be a copy of setuptools' 3,700-line module,
    and a partial stand-in under that name in ``sys.modules`` turns the ``ImportError`` that other
    code handles into an ``AttributeError``. If setuptools >= 81 is forced anyway, this raises a
    ``ModuleNotFoundError`` for ``pkg_resources`` naming the fix, instead of VISSL's bare one from
    deep in its imports; it changes nothing in the process either way.
    """
    if sys.modules.get("pkg_resources") is not None or _importable("pkg_resources"):
        return
    raise ModuleNotFoundError(
        f"vissl_issl: VISSL 0.1.6 imports pkg_resources, which this environment lacks ({_setuptools()} installed; "
        "setuptools 81 removed it): install 'setuptools<81', a requirement of vissl_issl (tools/env.sh installs it)",
        name="pkg_resources",
    )


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


def fused_kernel_supported(param_groups) -> bool:
    """torch's fused SGD, Adam and AdamW kernels take floating-point CPU and CUDA tensors."""
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
            fused=fused_kernel_supported(param_groups) or None,
        )
        if self._use_larc:
            self.optimizer = LARC(self.optimizer, **self._larc_config)

    def build_optimizer_without_apex_assert(self):
        return build_optimizer(self.config["OPTIMIZER"])

    SGD.prepare = prepare
    SelfSupervisionTask._build_optimizer = build_optimizer_without_apex_assert
    return True


def _pytorch_for_apex(config, section: str, enabled_key: str, type_key: str) -> None:
    """Switches ``config.MODEL.<section>.<type_key>`` from apex to pytorch where it is enabled."""
    keys = config["MODEL"][section]
    if keys[enabled_key] and keys[type_key] == "apex":
        keys[type_key] = "pytorch"
        logging.warning(f"apex is not installed: config.MODEL.{section}.{type_key}=apex runs PyTorch's implementation")


def amp_and_sync_bn_without_apex() -> bool:
    """Many stock VISSL configs ask for apex AMP (``MODEL.AMP_PARAMS.AMP_TYPE`` defaults to apex) or
    apex SyncBN; without apex VISSL's task raises "Apex is not available" when built, or fails
    converting BatchNorm. Without apex, every ``SelfSupervisionTask`` (FSDP and SDP tasks
    included) switches those keys of its config to "pytorch" right where VISSL reads them
    (``set_amp_args``, ``_build_model``), with one warning per key switched. So a config from VISSL's
    own ``convert_to_attrdict`` (its tools, tests, notebooks) runs as one from the plugin launcher
    does: PyTorch's AMP (``task.amp_type``, ``task.amp_grad_scaler``) and PyTorch's SyncBN. VISSL's
    config inference is left as it is; the task's config, which later readers (the FSDP task's
    mixed-precision check) see, says what runs. With apex installed nothing changes.
    """
    if _importable("apex"):
        return False
    from vissl.trainer.train_task import SelfSupervisionTask

    set_amp_args = SelfSupervisionTask.set_amp_args
    build_model = SelfSupervisionTask._build_model

    def set_amp_args_without_apex(self) -> None:
        _pytorch_for_apex(self.config, "AMP_PARAMS", "USE_AMP", "AMP_TYPE")
        set_amp_args(self)

    def build_model_without_apex(self):
        _pytorch_for_apex(self.config, "SYNC_BN_CONFIG", "CONVERT_BN_TO_SYNC_BN", "SYNC_BN_TYPE")
        return build_model(self)

    SelfSupervisionTask.set_amp_args = set_amp_args_without_apex
    SelfSupervisionTask._build_model = build_model_without_apex
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
        require_pkg_resources()
        alias_kinetics400()
        restore_numpy_aliases()
        larc_without_apex()
        amp_and_sync_bn_without_apex()
        broadcast_checkpoints_as_buffers()
