"""The plugin's ResNet trunks as torchvision ResNets: depth, stem, maxpool and resizer.

One architecture, two layouts of its modules: :func:`build_resnet` gives torchvision's model
(``fc = Identity``, the resizer as ``avgpool.0``; the hub's and a user's plain PyTorch trunk) and
:func:`feature_blocks` the same modules as VISSL's ``_feature_blocks`` (``conv1, bn1, conv1_relu,
maxpool, layer1..layer4, [resizer,] avgpool, flatten``), which the ``tv_resnet`` VISSL trunk uses.
Both construct the modules in the same order, so one seed gives the same weights in both.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Type

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from vissl_issl.architectures.resizer import BottleneckExpand, is_residual

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
# The ``tv_resnet`` trunk's options (``config.MODEL.TRUNK.TV_RESNET``) and their defaults: a dumped
# config holds only the keys a run set.
TV_RESNET_DEFAULTS: Dict[str, Any] = {"DEPTH": 50, "SMALL_IMAGE_STEM": False, "MAXPOOL": True, "RESIZER": None}


# VISSL's block names -> torchvision's ResNet attributes, in forward order.
VISSL_BLOCKS = {"conv1": "conv1", "bn1": "bn1", "conv1_relu": "relu", "maxpool": "maxpool"}
VISSL_BLOCKS.update({f"layer{i}": f"layer{i}" for i in range(1, 5)})


class ArchitectureError(ValueError):
    """An architecture that the plugin's ResNets cannot build."""


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
            raise ArchitectureError(f"ResNet depth {self.depth} is not supported; use one of {sorted(BLOCKS)}.")

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


def small_image_conv1() -> nn.Conv2d:
    """The 3x3 stride-1 stem of small images (TinyImageNet, CIFAR); left at PyTorch's default
    init, as both ISSL and W-MSE do when they swap in this conv."""
    return nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)


def build_resizer(in_channels: int, hidden: int, out: int) -> BottleneckExpand:
    """The resizer after layer4 (``in_channels`` = layer4's channels): residual when ``out`` is a
    multiple of ``in_channels``, non-residual when smaller; any other ``out`` raises."""
    try:
        is_residual(in_channels, out)
    except ValueError as error:
        raise ArchitectureError(
            f"the resizer's output channels ({out}) do not fit the trunk's last channel count {in_channels}: {error}"
        ) from error
    return BottleneckExpand(in_channels, hidden, out)


def build_resnet(arch: ResNetArch, **torchvision_kwargs: Any) -> ResNet:
    """torchvision's ResNet of ``arch`` with ``fc = Identity``: (N, 3, H, W) -> (N, arch.feature_dim).
    ``torchvision_kwargs`` go to ``torchvision.models.resnet.ResNet`` (e.g. ``norm_layer``)."""
    block, layers = BLOCKS[arch.depth]
    model = ResNet(block, list(layers), **torchvision_kwargs)
    if arch.small_image_stem:
        model.conv1 = small_image_conv1()
    if not arch.maxpool:
        model.maxpool = nn.Identity()
    if arch.resizer is not None:
        model.avgpool = nn.Sequential(build_resizer(arch.trunk_dim, *arch.resizer), nn.AdaptiveAvgPool2d(1))
    model.fc = nn.Identity()
    return model


def feature_blocks(arch: ResNetArch) -> "OrderedDict[str, nn.Module]":
    """The modules of :func:`build_resnet` in VISSL's trunk layout (its ``_feature_blocks``)."""
    model = build_resnet(arch)
    blocks = OrderedDict((block, getattr(model, attribute)) for block, attribute in VISSL_BLOCKS.items())
    pool = model.avgpool
    if arch.resizer is not None:
        blocks["resizer"], pool = pool[0], pool[1]
    blocks["avgpool"] = pool
    blocks["flatten"] = nn.Flatten(1)
    return blocks
