"""The plugin's trunks as plain torchvision ResNets: the authors' torch.hub layout, and conversion
of VISSL checkpoints to it.

The same weights in three layouts:

- VISSL (a checkpoint's ``classy_state_dict.base_model.model.trunk``): ``_feature_blocks.<block>.``
  keys, with the resizer as block ``resizer`` between ``layer4`` and ``avgpool``;
- torchvision (what :func:`build_resnet`'s model loads): torchvision's ResNet keys with ``fc`` an
  ``Identity`` and the resizer as ``avgpool.0`` (``avgpool = Sequential(BottleneckExpand,
  AdaptiveAvgPool2d(1))``, keys ``avgpool.0.{conv1,bn1,conv2,bn2,conv3,bn3}``);
- release (the authors' ``<name>.torch`` files): torchvision's, with the resizer under ``resizer.``.

VISSL -> torchvision renames ``_feature_blocks.resizer.`` to ``avgpool.0.`` and strips
``_feature_blocks.``; release <-> torchvision swaps ``resizer.`` and ``avgpool.0.``.

Only torch, torchvision and the standard library are imported (PyYAML only to read a
``train_config.yaml``): ``hubconf.py`` loads this file by path where VISSL is not installed, and the
``vissl_issl`` package's ``__init__`` imports VISSL. For the same reason the resizer comes from
``trunks/resizer.py`` by file path.
"""
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Type, Union

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, Path]

VISSL_PREFIX = "_feature_blocks."
VISSL_RESIZER_PREFIX = "_feature_blocks.resizer."
TORCHVISION_RESIZER_PREFIX = "avgpool.0."
RELEASE_RESIZER_PREFIX = "resizer."
TRUNK_KEYS = ("classy_state_dict", "base_model", "model", "trunk")
TRAIN_CONFIG_NAME = "train_config.yaml"

# Block type and blocks per layer of every depth VISSL's ``resnet`` (50-200) or the plugin's
# ``tv_resnet`` (18-152) builds.
BLOCKS: Dict[int, Tuple[Type[nn.Module], Tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    200: (Bottleneck, (3, 24, 36, 3)),
}
# The tv_resnet trunk's defaults (trunks/resnet.py): a dumped config holds only the keys a run set.
TV_RESNET_DEFAULTS: Dict[str, Any] = {"DEPTH": 50, "SMALL_IMAGE_STEM": False, "MAXPOOL": True, "RESIZER": None}
# The only MODEL.TRUNK.RESNETS values under which VISSL's ResNeXt is torchvision's ResNet.
PLAIN_RESNETS = {"WIDTH_MULTIPLIER": 1, "GROUPS": 1, "WIDTH_PER_GROUP": 64, "NORM": "BatchNorm", "LAYER4_STRIDE": 2}
STEM_SHAPES = {(64, 3, 7, 7): False, (64, 3, 3, 3): True}  # conv1.weight -> small-image stem


class CheckpointError(ValueError):
    """A checkpoint, weights file or train_config.yaml that does not describe a plain ResNet."""


def _load_resizer_module() -> ModuleType:
    path = Path(__file__).resolve().parent / "trunks" / "resizer.py"
    spec = importlib.util.spec_from_file_location("vissl_issl_hub_resizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BottleneckExpand = _load_resizer_module().BottleneckExpand


@dataclass(frozen=True)
class ResNetArch:
    """A torchvision ResNet as the plugin's trunks build it; ``resizer`` is the
    ``(hidden, out)`` channels of the resizer after layer4, or None."""

    depth: int
    small_image_stem: bool = False
    maxpool: bool = True
    resizer: Optional[Tuple[int, int]] = None

    def __post_init__(self) -> None:
        if self.depth not in BLOCKS:
            raise CheckpointError(f"ResNet depth {self.depth} is not supported; use one of {sorted(BLOCKS)}.")

    @property
    def trunk_dim(self) -> int:
        """Channels of layer4's output."""
        return 512 * BLOCKS[self.depth][0].expansion

    @property
    def feature_dim(self) -> int:
        """Size of the pooled feature vector the model returns."""
        return self.trunk_dim if self.resizer is None else self.resizer[1]

    def __str__(self) -> str:
        parts = [f"ResNet-{self.depth}", "3x3 stride-1 stem" if self.small_image_stem else "7x7 stride-2 stem"]
        parts.append("maxpool" if self.maxpool else "no maxpool")
        if self.resizer is not None:
            parts.append(f"resizer {self.trunk_dim}->{self.resizer[0]}->{self.resizer[1]}")
        return ", ".join(parts) + f": {self.feature_dim}-d features"


def build_resnet(arch: ResNetArch, **torchvision_kwargs: Any) -> ResNet:
    """torchvision's ResNet of ``arch`` with ``fc = Identity``: (N, 3, H, W) -> (N, arch.feature_dim).
    ``torchvision_kwargs`` go to ``torchvision.models.resnet.ResNet`` (e.g. ``norm_layer``)."""
    block, layers = BLOCKS[arch.depth]
    model = ResNet(block, list(layers), **torchvision_kwargs)
    if arch.small_image_stem:
        # The tv_resnet trunk's small_image_conv1.
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    if not arch.maxpool:
        model.maxpool = nn.Identity()
    if arch.resizer is not None:
        hidden, out = arch.resizer
        model.avgpool = nn.Sequential(BottleneckExpand(arch.trunk_dim, hidden, out), nn.AdaptiveAvgPool2d(1))
    model.fc = nn.Identity()
    return model


def _replace_prefix(state: Mapping[str, torch.Tensor], old: str, new: str) -> StateDict:
    return {new + key[len(old) :] if key.startswith(old) else key: value for key, value in state.items()}


def release_to_torchvision(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Release layout (resizer under ``resizer.``) -> torchvision's (``avgpool.0.``); a state dict
    already in torchvision's layout is returned as is."""
    return _replace_prefix(state, RELEASE_RESIZER_PREFIX, TORCHVISION_RESIZER_PREFIX)


def torchvision_to_release(state: Mapping[str, torch.Tensor]) -> StateDict:
    """torchvision's layout -> the authors' release layout (resizer under ``resizer.``)."""
    return _replace_prefix(state, TORCHVISION_RESIZER_PREFIX, RELEASE_RESIZER_PREFIX)


def vissl_to_torchvision(trunk: Mapping[str, torch.Tensor], source: PathLike) -> StateDict:
    """A VISSL trunk state dict (``_feature_blocks.`` keys) in torchvision's layout."""
    renamed = _replace_prefix(trunk, VISSL_RESIZER_PREFIX, TORCHVISION_RESIZER_PREFIX)
    strays = [key for key in renamed if not key.startswith((VISSL_PREFIX, TORCHVISION_RESIZER_PREFIX))]
    if strays:
        raise CheckpointError(
            f"{source}: trunk keys {_listing(strays)} are not under {VISSL_PREFIX!r}; only VISSL's resnet, "
            "the plugin's resnet_resizer and tv_resnet convert."
        )
    return _replace_prefix(renamed, VISSL_PREFIX, "")


def read_vissl_trunk(path: PathLike) -> StateDict:
    """``checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]`` of a VISSL checkpoint."""
    # VISSL checkpoints pickle more than tensors (optimizer, loss and hook states).
    node: Any = torch.load(path, map_location="cpu", weights_only=False)
    for depth, key in enumerate(TRUNK_KEYS):
        if not isinstance(node, Mapping) or key not in node:
            location = "".join(f"[{k!r}]" for k in TRUNK_KEYS[: depth + 1])
            raise CheckpointError(f"{path} has no checkpoint{location}: not a VISSL checkpoint with a trunk.")
        node = node[key]
    return _check_state_dict(node, path)


def read_weights_file(weights: str) -> StateDict:
    """A state dict in the release or torchvision layout from an http(s) URL (through torch.hub's
    download cache) or a local file, returned in torchvision's layout."""
    if weights.startswith(("http://", "https://")):
        state = torch.hub.load_state_dict_from_url(weights, map_location="cpu", weights_only=True)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and TRUNK_KEYS[0] in state:
        raise CheckpointError(f"{weights} is a VISSL checkpoint, not a state dict: load it with from_checkpoint.")
    return release_to_torchvision(_check_state_dict(state, weights))


def _check_state_dict(state: Any, source: PathLike) -> StateDict:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} holds a {type(state).__name__}, not a state dict (key -> tensor).")
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source} is not a state dict: {_listing(not_tensors)} are not tensors.")
    return dict(state)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: PathLike) -> None:
    """``model.load_state_dict(state, strict=True)``; any missing, unexpected or wrong-shape key
    raises a CheckpointError naming ``source`` and the keys (in torchvision's layout)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong_shapes = [
        f"{key}: {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if missing or unexpected or wrong_shapes:
        problems = [
            f"{label} {_listing(keys)}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", wrong_shapes))
            if keys
        ]
        raise CheckpointError(
            f"{source} does not fit the model ({'; '.join(problems)}). Keys are in torchvision's layout, where "
            "the resizer is avgpool.0.; only plain ResNets (width multiplier 1, one group, BatchNorm) convert."
        )
    model.load_state_dict(state, strict=True)


def _listing(keys: Iterable[str], limit: int = 10) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _shape(state: Mapping[str, torch.Tensor], key: str, source: PathLike) -> Tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source} has no {key!r} (torchvision's layout): not a ResNet trunk.")
    return tuple(state[key].shape)


def arch_from_state_dict(state: Mapping[str, torch.Tensor], maxpool: bool, source: PathLike) -> ResNetArch:
    """The architecture of torchvision-layout weights: depth from the blocks per layer, stem from
    ``conv1.weight``, resizer dims from ``avgpool.0.conv{1,3}.weight``. Weights cannot tell whether
    the stem had a maxpool, hence ``maxpool``."""
    stem = _shape(state, "conv1.weight", source)
    if stem not in STEM_SHAPES:
        raise CheckpointError(
            f"{source}: conv1.weight has shape {stem}; a plain ResNet's (RGB input, width multiplier 1) "
            f"is one of {list(STEM_SHAPES)}."
        )
    block = Bottleneck if "layer1.0.conv3.weight" in state else BasicBlock
    layers = tuple(len({key.split(".")[1] for key in state if key.startswith(f"layer{i}.")}) for i in range(1, 5))
    depths = [depth for depth, blocks in BLOCKS.items() if blocks == (block, layers)]
    if not depths:
        raise CheckpointError(
            f"{source}: {block.__name__} blocks per layer {layers} match no ResNet depth of {sorted(BLOCKS)}."
        )
    resizer = None
    if TORCHVISION_RESIZER_PREFIX + "conv1.weight" in state:
        hidden = _shape(state, TORCHVISION_RESIZER_PREFIX + "conv1.weight", source)[0]
        out = _shape(state, TORCHVISION_RESIZER_PREFIX + "conv3.weight", source)[0]
        resizer = (hidden, out)
    return ResNetArch(depths[0], small_image_stem=STEM_SHAPES[stem], maxpool=maxpool, resizer=resizer)


def _config_value(config: Mapping[str, Any], dotted_key: str, path: PathLike) -> Any:
    node: Any = config
    for key in dotted_key.split("."):
        if not isinstance(node, Mapping) or key not in node:
            raise CheckpointError(f"{path} has no {dotted_key}.")
        node = node[key]
    return node


def arch_from_train_config(path: PathLike) -> ResNetArch:
    """The trunk architecture of the ``train_config.yaml`` VISSL writes into a checkpoint folder
    (top-level keys ``MODEL``, ``OPTIMIZER``, ...): trunk ``resnet``, ``resnet_resizer`` or
    ``tv_resnet``."""
    import yaml  # here, not at the top: the release entrypoints must work without PyYAML

    with open(path) as file:
        config = yaml.safe_load(file)

    def get(dotted_key: str) -> Any:
        return _config_value(config, dotted_key, path)

    name, input_type = get("MODEL.TRUNK.NAME"), get("MODEL.INPUT_TYPE")
    if input_type != "rgb":
        raise CheckpointError(f"{path}: MODEL.INPUT_TYPE={input_type!r}; torchvision's ResNet takes rgb input.")
    if name in ("resnet", "resnet_resizer"):
        for key, plain in PLAIN_RESNETS.items():
            value = get(f"MODEL.TRUNK.RESNETS.{key}")
            if value != plain:
                raise CheckpointError(
                    f"{path}: MODEL.TRUNK.RESNETS.{key}={value!r}; only {plain!r} is a torchvision ResNet."
                )
        resizer = None
        if name == "resnet_resizer":
            block = "MODEL.TRUNK.RESNET_RESIZER"
            resizer = (int(get(f"{block}.HIDDEN_DIM")), int(get(f"{block}.OUT_DIM")))
        return ResNetArch(int(get("MODEL.TRUNK.RESNETS.DEPTH")), resizer=resizer)
    if name == "tv_resnet":
        tv_resnet = {**TV_RESNET_DEFAULTS, **(get("MODEL.TRUNK").get("TV_RESNET") or {})}
        resizer = None
        if tv_resnet["RESIZER"] is not None:
            block = "MODEL.TRUNK.TV_RESNET.RESIZER"
            resizer = (int(get(f"{block}.HIDDEN_DIM")), int(get(f"{block}.OUT_DIM")))
        return ResNetArch(
            int(tv_resnet["DEPTH"]),
            small_image_stem=bool(tv_resnet["SMALL_IMAGE_STEM"]),
            maxpool=bool(tv_resnet["MAXPOOL"]),
            resizer=resizer,
        )
    raise CheckpointError(
        f"{path}: MODEL.TRUNK.NAME={name!r} does not convert; only resnet, resnet_resizer and tv_resnet do."
    )


def train_config_path(checkpoint: PathLike) -> Path:
    """Where VISSL writes the run's config: next to its checkpoints."""
    return Path(checkpoint).parent / TRAIN_CONFIG_NAME


def load_checkpoint(path: PathLike, maxpool: Optional[bool] = None) -> Tuple[ResNet, ResNetArch]:
    """The trunk of a VISSL checkpoint of this plugin as :func:`build_resnet`'s model (weights
    loaded, train mode), and its architecture. The architecture is read from the folder's
    ``train_config.yaml`` if there is one (``maxpool``, if given, must agree with it), else
    inferred from the weight shapes with ``maxpool`` (default True)."""
    state = vissl_to_torchvision(read_vissl_trunk(path), path)
    config = train_config_path(path)
    if config.is_file():
        arch = arch_from_train_config(config)
        if maxpool is not None and maxpool != arch.maxpool:
            raise CheckpointError(
                f"maxpool={maxpool} contradicts {config}, whose trunk has maxpool={arch.maxpool}; leave "
                "maxpool unset when the checkpoint folder has a train_config.yaml."
            )
    else:
        arch = arch_from_state_dict(state, maxpool=True if maxpool is None else maxpool, source=path)
    model = build_resnet(arch)
    load_weights(model, state, path)
    return model, arch
