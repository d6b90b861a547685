"""ResNet trunks with the ISSL dimension resizer: ``tv_resnet`` and ``resnet_resizer``.

``resnet_resizer`` is VISSL's own ``resnet`` trunk (``ResNeXt``) with the resizer. The authors'
VISSL fork trained the d = 8192 ImageNet ResNet-50 that way, so for fidelity the d = 8192
recipes use it: same construction, init and forward as VISSL's ``resnet`` (conv1 and layer1-4 are
re-created after torchvision's init loop, so they keep PyTorch's default init, not torchvision's
kaiming init) and every ``config.MODEL.TRUNK.RESNETS`` option (depth 50/101/152/200, width
multiplier, groups, norm, LAB input, layer4 stride). Config: ``config.MODEL.TRUNK.RESNET_RESIZER``
with ``HIDDEN_DIM`` and ``OUT_DIM``, both required; the resizer's input is layer4's channel count
(2048 * WIDTH_MULTIPLIER), and ``OUT_DIM`` must be a multiple of it (residual resizer) or smaller
(non-residual). As in VISSL's forward, padded ``MultiDimensionalTensor`` inputs are un-padded
before ``avgpool``, i.e. after the resizer.

``tv_resnet`` is torchvision's ResNet as a VISSL trunk, for what VISSL's ``resnet`` cannot build:
depths 18/34 and the small-image stem (TinyImageNet, 64 px: conv1 3x3 stride 1, maxpool kept;
CIFAR-style 32 px recipes also drop the maxpool), with torchvision's init as in ISSL's
TinyImageNet code, and the resizer optional.

Parameter names: both lay out their feature blocks exactly like VISSL's ``resnet`` (``conv1, bn1,
conv1_relu, maxpool, layer1..layer4, avgpool, flatten``, same ``feat_eval_mapping``), so without
the resizer a depth-50 ``tv_resnet`` checkpoint has the same state-dict keys and shapes as VISSL's
``resnet`` and loads into VISSL's stock linear benchmarks, and vice versa. The resizer sits
between layer4 and avgpool as block ``resizer`` (the authors' fork's name; feature key
``resizer``); renaming ``_feature_blocks.resizer.`` to ``avgpool.0.`` and stripping
``_feature_blocks.`` gives the authors' torch.hub layout (torchvision ResNet with
``avgpool = Sequential(resizer, pool)``).

``tv_resnet`` config: ``config.MODEL.TRUNK.TV_RESNET`` with ``DEPTH`` (18/34/50/101/152, default
50), ``SMALL_IMAGE_STEM`` (default False), ``MAXPOOL`` (default True) and ``RESIZER`` (default null,
or ``{HIDDEN_DIM, OUT_DIM}`` with ``OUT_DIM`` a multiple of layer4's channels, 512 at depths 18/34
and 2048 above, or smaller than them: e.g. 128, 512, 2048 or 8192 on ResNet-18). VISSL's defaults
have no such block: missing keys take these defaults.
"""

from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
from vissl.config import AttrDict
from vissl.models.model_helpers import get_trunk_forward_outputs, transform_model_input_data_type
from vissl.models.trunks import register_model_trunk
from vissl.models.trunks.resnext import ResNeXt

from vissl_issl.architectures.resizer import is_residual
from vissl_issl.architectures.resnet import (
    TV_RESNET_DEFAULTS,
    ResNetArch,
    build_resizer,
    feature_blocks,
)
from vissl_issl.config import ConfigError

CONFIG_KEY = "config.MODEL.TRUNK.TV_RESNET"
RESNET_RESIZER_CONFIG_KEY = "config.MODEL.TRUNK.RESNET_RESIZER"
RESIZER_KEYS = ("HIDDEN_DIM", "OUT_DIM")
TV_RESNET_DEPTHS = (18, 34, 50, 101, 152)
FEAT_EVAL_MAPPING = {
    "conv1": "conv1_relu",
    "res1": "maxpool",
    "res2": "layer1",
    "res3": "layer2",
    "res4": "layer3",
    "res5": "layer4",
    "res5avg": "avgpool",
    "flatten": "flatten",
}


def read_trunk_config(model_config: AttrDict) -> Dict[str, Any]:
    """``TV_RESNET`` merged over ``TV_RESNET_DEFAULTS``; unknown keys raise (typos would otherwise
    silently train the default architecture)."""
    given: Mapping[str, Any] = model_config.TRUNK.get("TV_RESNET") or {}
    for key in given:
        if key not in TV_RESNET_DEFAULTS:
            raise ConfigError(f"{CONFIG_KEY}.{key} is not a known key; known keys: {sorted(TV_RESNET_DEFAULTS)}.")
    trunk_config = {**TV_RESNET_DEFAULTS, **given}
    if trunk_config["DEPTH"] not in TV_RESNET_DEPTHS:
        raise ConfigError(
            f"{CONFIG_KEY}.DEPTH={trunk_config['DEPTH']} is not supported; use one of {list(TV_RESNET_DEPTHS)}."
        )
    if trunk_config["RESIZER"] is not None:
        trunk_config["RESIZER"] = read_resizer_config(trunk_config["RESIZER"], f"{CONFIG_KEY}.RESIZER")
    if model_config.INPUT_TYPE not in ("rgb", "bgr"):
        raise ConfigError(
            f"config.MODEL.INPUT_TYPE={model_config.INPUT_TYPE!r}: tv_resnet takes 3-channel input (rgb or bgr)."
        )
    return trunk_config


def trunk_feature_dim(model_config: AttrDict) -> int:
    """Size of the ``tv_resnet`` trunk's pooled features (z) under ``model_config``."""
    trunk_config = read_trunk_config(model_config)
    resizer = trunk_config["RESIZER"]
    return ResNetArch(
        trunk_config["DEPTH"], resizer=None if resizer is None else (resizer["HIDDEN_DIM"], resizer["OUT_DIM"])
    ).feature_dim


def read_resizer_config(given: Any, config_key: str) -> Dict[str, int]:
    """``{HIDDEN_DIM, OUT_DIM}``, both required; a missing or unknown key raises naming
    ``<config_key>.<KEY>``."""
    if not isinstance(given, Mapping):
        raise ConfigError(f"{config_key} must be a mapping with the keys {list(RESIZER_KEYS)}; got {given!r}.")
    for key in given:
        if key not in RESIZER_KEYS:
            raise ConfigError(f"{config_key}.{key} is not a known key; known keys: {list(RESIZER_KEYS)}.")
    for key in RESIZER_KEYS:
        if given.get(key) is None:
            raise ConfigError(f"{config_key}.{key} is required (keys: {list(RESIZER_KEYS)}).")
    return {key: int(given[key]) for key in RESIZER_KEYS}


def check_resizer(in_channels: int, resizer_config: Mapping[str, int], config_key: str) -> None:
    """Raises a ConfigError naming ``<config_key>.OUT_DIM`` unless it is a multiple of the trunk's
    last channel count ``in_channels`` (residual resizer) or smaller (non-residual)."""
    out = resizer_config["OUT_DIM"]
    try:
        is_residual(in_channels, out)
    except ValueError as error:
        raise ConfigError(
            f"{config_key}.OUT_DIM={out} does not fit the trunk's last channel count {in_channels}: {error}"
        ) from error


def insert_resizer(
    feature_blocks: nn.ModuleDict, feat_eval_mapping: Dict[str, str], resizer: nn.Module
) -> nn.ModuleDict:
    """``feature_blocks`` with ``resizer`` inserted as block ``resizer`` right before ``avgpool``
    (same module objects, new dict); adds the ``resizer`` feature key to ``feat_eval_mapping``."""
    blocks = []
    for name, block in feature_blocks.items():
        if name == "avgpool":
            blocks.append(("resizer", resizer))
        blocks.append((name, block))
    if "resizer" not in dict(blocks):
        raise ValueError(f"no avgpool block to put the resizer before; blocks: {list(feature_blocks)}")
    feat_eval_mapping["resizer"] = "resizer"
    return nn.ModuleDict(blocks)


@register_model_trunk("tv_resnet")
class TorchvisionResNet(nn.Module):
    def __init__(self, model_config: AttrDict, model_name: str):
        super().__init__()
        self.model_config = model_config
        trunk_config = read_trunk_config(model_config)
        checkpointing = model_config.ACTIVATION_CHECKPOINTING
        self.use_checkpointing = checkpointing.USE_ACTIVATION_CHECKPOINTING
        self.num_checkpointing_splits = checkpointing.NUM_ACTIVATION_CHECKPOINTING_SPLITS

        resizer = trunk_config["RESIZER"]
        arch = ResNetArch(
            trunk_config["DEPTH"],
            small_image_stem=trunk_config["SMALL_IMAGE_STEM"],
            maxpool=trunk_config["MAXPOOL"],
            resizer=None if resizer is None else (resizer["HIDDEN_DIM"], resizer["OUT_DIM"]),
        )
        if resizer is not None:
            check_resizer(arch.trunk_dim, resizer, f"{CONFIG_KEY}.RESIZER")
        self._feature_blocks = nn.ModuleDict(feature_blocks(arch))
        self.feat_eval_mapping = dict(FEAT_EVAL_MAPPING)
        if resizer is not None:
            self.feat_eval_mapping["resizer"] = "resizer"

    def forward(self, x: torch.Tensor, out_feat_keys: Optional[List[str]] = None) -> List[torch.Tensor]:
        return get_trunk_forward_outputs(
            feat=transform_model_input_data_type(x, self.model_config.INPUT_TYPE),
            # an empty list means "the last block"; VISSL's mapping step cannot take None
            out_feat_keys=out_feat_keys or [],
            feature_blocks=self._feature_blocks,
            feature_mapping=self.feat_eval_mapping,
            use_checkpointing=self.use_checkpointing,
            checkpointing_splits=self.num_checkpointing_splits,
        )


@register_model_trunk("resnet_resizer")
class ResNeXtResizer(ResNeXt):
    """VISSL's ``resnet`` trunk with the resizer between layer4 and avgpool (see the module
    docstring); everything else, init and forward included, is VISSL's ``ResNeXt``."""

    def __init__(self, model_config: AttrDict, model_name: str):
        # Read first so a bad block fails before the (large) trunk is built.
        resizer_config = read_resizer_config(model_config.TRUNK.get("RESNET_RESIZER") or {}, RESNET_RESIZER_CONFIG_KEY)
        super().__init__(model_config, model_name)
        # Built after the trunk, so the trunk consumes the RNG exactly as VISSL's resnet does.
        in_channels = self._feature_blocks["layer4"][-1].conv3.out_channels  # 2048 * WIDTH_MULTIPLIER
        check_resizer(in_channels, resizer_config, RESNET_RESIZER_CONFIG_KEY)
        resizer = build_resizer(in_channels, resizer_config["HIDDEN_DIM"], resizer_config["OUT_DIM"])
        self._feature_blocks = insert_resizer(self._feature_blocks, self.feat_eval_mapping, resizer)
