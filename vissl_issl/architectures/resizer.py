"""The ISSL dimension resizer: a residual bottleneck that widens a ResNet's last feature map
(e.g. 2048 -> 8192 channels) before the global average pool, so the representation d grows
without a d x d layer.

Same block, names and init as the authors' ``BottleneckExpand`` (FORK ``resnext.py``, ISSL
``cnn.py``, hub ``resnet_dim.py``), so the hub's ``avgpool.0.{conv1,bn1,conv2,bn2,conv3,bn3}``
weights load into it by name.
"""

import math

import torch
import torch.nn as nn

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it makes the truncated
# draw have exactly the target std (timm's ``variance_scaling_``, which the authors copied).
_TRUNCATED_UNIT_NORMAL_STD = 0.87962566103423978


def variance_scaling_(weight: torch.Tensor) -> None:
    """Truncated-normal fan-in variance scaling: std sqrt(1 / fan_in), truncated at 2 std."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_UNIT_NORMAL_STD
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class BottleneckExpand(nn.Module):
    """``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + tile(x))``, with conv1/conv3
    1x1, conv2 3x3 and the input tiled ``out // in`` times along channels (``x.repeat``: the
    authors' channel order), so the output is non-negative and starts close to the input."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        if out_channels % in_channels != 0:
            raise ValueError(
                f"resizer out_channels={out_channels} must be a multiple of in_channels="
                f"{in_channels}: the residual tiles the input out_channels // in_channels times."
            )
        self.expansion = out_channels // in_channels
        self.conv1 = nn.Conv2d(in_channels, hidden_channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden_channels)
        self.conv2 = nn.Conv2d(hidden_channels, hidden_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden_channels)
        self.conv3 = nn.Conv2d(hidden_channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # conv1 is a random projection to the bottleneck: Johnson-Lindenstrauss scaling keeps
        # pairwise distances, as in the authors' code.
        nn.init.normal_(self.conv1.weight, std=1 / math.sqrt(self.conv1.out_channels))
        variance_scaling_(self.conv2.weight)
        variance_scaling_(self.conv3.weight)
        for bn in (self.bn1, self.bn2, self.bn3):
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + x.repeat(1, self.expansion, 1, 1))
