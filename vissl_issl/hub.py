"""The plugin's trunks as plain torchvision ResNets: the authors' torch.hub layout, and conversion
of VISSL checkpoints to it.

The same weights in three layouts:

- VISSL (a checkpoint's ``classy_state_dict.base_model.model.trunk``): ``_feature_blocks.<block>.``
  keys, with the resizer as block ``resizer`` between ``layer4`` and ``avgpool``;
- torchvision (what :func:`build_resnet`'s model loads): torchvision's ResNet keys with ``fc`` an
  ``Identity`` and the resizer as ``avgpool.0`` (``avgpool = Sequential(BottleneckExpand,
  AdaptiveAvgPool2d(1))``, keys ``avgpool.0.{conv1,bn1,conv2,bn2,conv3,bn3}``);
- release (the authors' ``<name>.torch`` files): torchvision's, with the resizer under ``resizer.``.

VISSL <-> torchvision renames ``_feature_blocks.resizer.`` to ``avgpool.0.`` and strips (adds)
``_feature_blocks.``; release <-> torchvision swaps ``resizer.`` and ``avgpool.0.``.
:mod:`vissl_issl.weights` reads any of these files (and ``hub:<release>:<file>``) into a trunk.

Only torch, torchvision and the standard library are imported (PyYAML only to read a
``train_config.yaml``), so ``hubconf.py`` works where VISSL is not installed. The architecture is
:mod:`vissl_issl.architectures.resnet`, the one the ``tv_resnet`` trunk is built from.
"""

from typing import Any, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from vissl_issl.architectures.resnet import (
    BLOCKS,
    TV_RESNET_DEFAULTS,
    ResNetArch,
    build_resnet,  # noqa: F401  (hub code builds with hub.build_resnet)
)
from vissl_issl.checkpoints import (
    CheckpointError,
    PathLike,
    StateDict,
    check_state_dict,
    listing,
    mismatches,
    read_state_dict,
    read_vissl_model,
    train_config_path,
)

VISSL_PREFIX = "_feature_blocks."
VISSL_RESIZER_PREFIX = "_feature_blocks.resizer."
TORCHVISION_RESIZER_PREFIX = "avgpool.0."
RELEASE_RESIZER_PREFIX = "resizer."
# VISSL's FeatureExtractorModel, which wraps a trunk frozen by MODEL.FEATURE_EVAL_SETTINGS (the
# feature compressor's), saves it one level down.
VISSL_FROZEN_PREFIX = "base_model."

# The only MODEL.TRUNK.RESNETS values under which VISSL's ResNeXt is torchvision's ResNet.
PLAIN_RESNETS = {"WIDTH_MULTIPLIER": 1, "GROUPS": 1, "WIDTH_PER_GROUP": 64, "NORM": "BatchNorm", "LAYER4_STRIDE": 2}
STEM_SHAPES = {(64, 3, 7, 7): False, (64, 3, 3, 3): True}  # conv1.weight -> small-image stem

# The authors' DISSL ImageNet releases (hubconf's entrypoints): name -> (resizer to d = 8192,
# epochs, crops, the authors' linear top-1).
RELEASES = {
    "dissl_resnet50_dNone_e100_m2": (False, 100, "2x224", 66.9),
    "dissl_resnet50_d8192_e100_m2": (True, 100, "2x224", 68.9),
    # In the authors' README but not their hubconf; the URL follows the other releases' pattern.
    "dissl_resnet50_d8192_e100_m6": (True, 100, "2x160 + 4x96", 70.7),
    "dissl_resnet50_dNone_e400_m2": (False, 400, "2x224", 71.1),
    "dissl_resnet50_dNone_e400_m6": (False, 400, "2x160 + 4x96", 73.0),
    "dissl_resnet50_d8192_e400_m6": (True, 400, "2x160 + 4x96", 74.0),
    "dissl_resnet50_d8192_e800_m8": (True, 800, "2x224 + 6x96", 73.9),
}


def release_arch(name: str) -> ResNetArch:
    """The architecture of the release ``name``: ResNet-50, with the 2048->512->8192 resizer or not."""
    if name not in RELEASES:
        raise CheckpointError(f"{name!r} is not a release entrypoint; the releases are {', '.join(RELEASES)}.")
    return ResNetArch(depth=50, resizer=(512, 8192) if RELEASES[name][0] else None)


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
    """A VISSL trunk state dict (``_feature_blocks.`` keys, or ``base_model._feature_blocks.`` of a
    frozen trunk) in torchvision's layout."""
    if trunk and all(key.startswith(VISSL_FROZEN_PREFIX) for key in trunk):
        trunk = _replace_prefix(trunk, VISSL_FROZEN_PREFIX, "")
    renamed = _replace_prefix(trunk, VISSL_RESIZER_PREFIX, TORCHVISION_RESIZER_PREFIX)
    strays = [key for key in renamed if not key.startswith((VISSL_PREFIX, TORCHVISION_RESIZER_PREFIX))]
    if strays:
        raise CheckpointError(
            f"{source}: trunk keys {listing(strays)} are not under {VISSL_PREFIX!r}; only VISSL's resnet, "
            "the plugin's resnet_resizer and tv_resnet convert."
        )
    return _replace_prefix(renamed, VISSL_PREFIX, "")


def torchvision_to_vissl(state: Mapping[str, torch.Tensor]) -> StateDict:
    """torchvision's layout -> VISSL's trunk layout (``_feature_blocks.``, the resizer as block
    ``resizer``): what the ``tv_resnet``, ``resnet`` and ``resnet_resizer`` trunks load."""
    renamed = _replace_prefix(state, TORCHVISION_RESIZER_PREFIX, "resizer.")
    return {VISSL_PREFIX + key: value for key, value in renamed.items()}


def read_vissl_trunk(path: PathLike) -> StateDict:
    """``checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]`` of a VISSL checkpoint."""
    return read_vissl_model(path).trunk


def read_weights_file(weights: str) -> StateDict:
    """A state dict in the release or torchvision layout from an http(s) URL (through torch.hub's
    download cache) or a local file, returned in torchvision's layout."""
    if weights.startswith(("http://", "https://")):
        state = check_state_dict(
            torch.hub.load_state_dict_from_url(weights, map_location="cpu", weights_only=True), weights
        )
    else:
        state = read_state_dict(weights)
    return release_to_torchvision(state)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: PathLike) -> None:
    """``model.load_state_dict(state, strict=True)``; any missing, unexpected or wrong-shape key
    raises a CheckpointError naming ``source`` and the keys (in torchvision's layout)."""
    expected = model.state_dict()
    problems = mismatches(expected, state)
    if problems:
        raise CheckpointError(
            f"{source} does not fit the model ({'; '.join(problems)}): the file holds {describe_weights(state)}, "
            f"the model is {describe_weights(expected)}. Keys are in torchvision's layout, where the resizer is "
            "avgpool.0.; only plain ResNets (width multiplier 1, one group, BatchNorm) convert."
        )
    model.load_state_dict(state, strict=True)


def describe_weights(state: Mapping[str, torch.Tensor]) -> str:
    """The ResNet that torchvision-layout weights are, in words (the maxpool, which weights cannot
    tell, left out)."""
    try:
        arch = arch_from_state_dict(state, maxpool=True, source="the weights")
    except CheckpointError:
        return "no ResNet that this hub builds"
    stem = "3x3 stride-1 stem" if arch.small_image_stem else "7x7 stride-2 stem"
    resizer = f"resizer {arch.trunk_dim}->{arch.resizer[0]}->{arch.resizer[1]}" if arch.resizer else "no resizer"
    return f"a ResNet-{arch.depth}, {stem}, {resizer}: {arch.feature_dim}-d features"


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
    (top-level keys ``MODEL``, ``OPTIMIZER``, ...)."""
    import yaml  # here, not at the top: the release entrypoints must work without PyYAML

    with open(path) as file:
        return arch_from_config(yaml.safe_load(file), path)


def arch_from_config(config: Mapping[str, Any], source: PathLike) -> ResNetArch:
    """The trunk architecture of a VISSL config (``cfg.config``, or a loaded ``train_config.yaml``)
    read from ``source``: trunk ``resnet``, ``resnet_resizer`` or ``tv_resnet``."""

    def get(dotted_key: str) -> Any:
        return _config_value(config, dotted_key, source)

    name, input_type = get("MODEL.TRUNK.NAME"), get("MODEL.INPUT_TYPE")
    if input_type != "rgb":
        raise CheckpointError(f"{source}: MODEL.INPUT_TYPE={input_type!r}; torchvision's ResNet takes rgb input.")
    if name in ("resnet", "resnet_resizer"):
        for key, plain in PLAIN_RESNETS.items():
            value = get(f"MODEL.TRUNK.RESNETS.{key}")
            if value != plain:
                raise CheckpointError(
                    f"{source}: MODEL.TRUNK.RESNETS.{key}={value!r}; only {plain!r} is a torchvision ResNet."
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
        f"{source}: MODEL.TRUNK.NAME={name!r} does not convert; only resnet, resnet_resizer and tv_resnet do."
    )


def checkpoint_arch(path: PathLike, state: Mapping[str, torch.Tensor], maxpool: Optional[bool]) -> ResNetArch:
    """The trunk architecture of the VISSL checkpoint ``path`` whose trunk is ``state`` (torchvision's
    layout): from the folder's ``train_config.yaml`` if there is one (``maxpool``, if given, must
    agree with it), else from the weight shapes with ``maxpool`` (default True)."""
    config = train_config_path(path)
    if not config.is_file():
        return arch_from_state_dict(state, maxpool=True if maxpool is None else maxpool, source=path)
    arch = arch_from_train_config(config)
    if maxpool is not None and maxpool != arch.maxpool:
        raise CheckpointError(
            f"maxpool={maxpool} contradicts {config}, whose trunk has maxpool={arch.maxpool}; leave "
            "maxpool unset when the checkpoint folder has a train_config.yaml."
        )
    return arch
