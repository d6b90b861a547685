"""Weights a user already has, as a trunk: the one place that reads a weights spec for the probe
(``tools/probe.py --checkpoint``), the feature compressor's frozen trunk
(``MODEL.WEIGHTS_INIT.PARAMS_FILE``) and the hub (``hubconf.from_checkpoint``).

A weights spec is a file, or ``hub:<release>:<file>``. The file's format is detected from its
content, and its weights are brought to torchvision's layout (:mod:`vissl_issl.hub`):

- a VISSL checkpoint (a ``classy_state_dict`` key): a run of this plugin, or of VISSL's own
  ``resnet`` trunk (VISSL's model zoo); the trunk under ``classy_state_dict.base_model.model``;
- a VISSL trunk state dict (``_feature_blocks.`` keys; also in VISSL's model zoo);
- the authors' release layout (a resizer under ``resizer.``);
- a torchvision state dict (``conv1.weight``, ``layer1.0.``...; a resizer under ``avgpool.0.``;
  a classifier ``fc.`` is dropped, the trunk's ``fc`` being an ``Identity``);
- ``hub:<release>:<file>``: a hubconf release entrypoint's architecture (``dissl_resnet50_...``)
  with the weights of ``<file>``, in any format above; nothing is downloaded.

The architecture is, in this order: the release's for ``hub:``; the ``train_config.yaml`` beside a
VISSL checkpoint; else the weight shapes (depth, stem, resizer), which cannot tell whether the stem
had a maxpool (``maxpool``, default True). Where a VISSL config builds the trunk (the probe's
``--config``, the compressor), the config is the architecture. Weights that do not fit their
architecture raise one :class:`CheckpointError` naming the missing, unexpected and misshapen keys.

Files are unpickled as VISSL checkpoints must be: read only files you trust. No VISSL import.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from torchvision.models.resnet import ResNet

from vissl_issl import hub
from vissl_issl.architectures.resnet import ResNetArch, build_resnet
from vissl_issl.checkpoints import CheckpointError, StateDict, VisslModel, read_model_or_state_dict

HUB_PREFIX = "hub:"
FC_PREFIX = "fc."
VISSL_CHECKPOINT, VISSL_TRUNK, RELEASE, TORCHVISION = "VISSL checkpoint", "VISSL trunk", "release", "torchvision"


@dataclass(frozen=True)
class Weights:
    """A spec's trunk weights in torchvision's layout, their architecture and the detected format."""

    state: StateDict
    arch: ResNetArch
    layout: str
    file: Path


def parse_spec(spec: str) -> Tuple[Optional[str], Path]:
    """``(release, file)`` of a spec; release is None unless the spec is ``hub:<release>:<file>``."""
    if not spec.startswith(HUB_PREFIX):
        return None, Path(spec)
    release, _, file = spec[len(HUB_PREFIX) :].partition(":")
    if not file:
        raise CheckpointError(
            f"{spec!r}: a hub spec is hub:<release>:<local file>, e.g. hub:{next(iter(hub.RELEASES))}:w.torch."
        )
    if file.startswith(("http://", "https://")):
        raise CheckpointError(f"{spec!r}: nothing is downloaded here; download the file, then name the local copy.")
    hub.release_arch(release)  # an unknown name fails before the file is read
    return release, Path(file)


def torchvision_state(content: Union[VisslModel, StateDict], file: Path) -> Tuple[StateDict, str]:
    """A file's trunk weights in torchvision's layout, and the layout they were in."""
    if isinstance(content, VisslModel):
        return hub.vissl_to_torchvision(content.trunk, file), VISSL_CHECKPOINT
    if any(key.startswith(hub.VISSL_PREFIX) for key in content):
        return hub.vissl_to_torchvision(content, file), VISSL_TRUNK
    if any(key.startswith(hub.RELEASE_RESIZER_PREFIX) for key in content):
        return hub.release_to_torchvision(content), RELEASE
    return {key: value for key, value in content.items() if not key.startswith(FC_PREFIX)}, TORCHVISION


def read_weights(spec: str, maxpool: Optional[bool] = None) -> Weights:
    """The trunk weights of ``spec`` and their architecture (see the module docstring)."""
    release, file = parse_spec(spec)
    state, layout = torchvision_state(read_model_or_state_dict(file), file)
    if release is not None:
        arch = hub.release_arch(release)
        if maxpool is not None and maxpool != arch.maxpool:
            raise CheckpointError(f"{spec}: maxpool={maxpool}, but the release {release} has maxpool={arch.maxpool}.")
    elif layout == VISSL_CHECKPOINT:
        arch = hub.checkpoint_arch(file, state, maxpool)
    else:
        arch = hub.arch_from_state_dict(state, maxpool=True if maxpool is None else maxpool, source=file)
    return Weights(state, arch, layout, file)


def load_trunk(spec: str, maxpool: Optional[bool] = None) -> Tuple[ResNet, Weights]:
    """The trunk of ``spec`` as :func:`build_resnet`'s torchvision ResNet (``fc = Identity``,
    weights loaded strictly, train mode) and its weights."""
    weights = read_weights(spec, maxpool)
    model = build_resnet(weights.arch)
    hub.load_weights(model, weights.state, spec)
    return model, weights


def vissl_trunk_state(spec: str) -> StateDict:
    """The trunk weights of ``spec`` in VISSL's layout, to load into a trunk built from a VISSL
    config: a VISSL checkpoint's trunk as stored (any VISSL trunk), the other formats converted."""
    release, file = parse_spec(spec)
    content = read_model_or_state_dict(file)
    if release is None and isinstance(content, VisslModel):
        return content.trunk
    return hub.torchvision_to_vissl(torchvision_state(content, file)[0])


def as_vissl_checkpoint(spec: str, config: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """``spec`` as a VISSL checkpoint whose trunk loads into the trunk of the VISSL ``config``
    (``MODEL.TRUNK`` ``resnet``, ``resnet_resizer`` or ``tv_resnet``), for VISSL's
    ``MODEL.WEIGHTS_INIT``; None when ``spec`` is a VISSL checkpoint, which VISSL reads itself."""
    release, file = parse_spec(spec)
    content = read_model_or_state_dict(file)
    if release is None and isinstance(content, VisslModel):
        return None
    state, _ = torchvision_state(content, file)
    hub.load_weights(build_resnet(hub.arch_from_config(config, "the config")), state, spec)
    trunk = hub.torchvision_to_vissl(state)
    return {"type": "consolidated", "classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": {}}}}}


def identity(spec: str) -> Dict[str, Any]:
    """What names the weights of ``spec`` for a feature cache: its file's resolved path,
    modification time and size, and the release of a ``hub:`` spec."""
    release, file = parse_spec(spec)
    path = file.resolve()  # checkpoint.torch is a symlink to the latest phase
    if not path.is_file():
        raise CheckpointError(f"{spec}: no such file {file}")
    stat = path.stat()
    release_field = {} if release is None else {"release": release}
    return {"checkpoint": str(path), "mtime_ns": stat.st_mtime_ns, "bytes": stat.st_size, **release_field}
