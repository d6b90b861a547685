"""The ISSL dimension resizer: a bottleneck that maps a ResNet's last feature map to any number of
channels z before the global average pool (e.g. 2048 -> 8192, 512 -> 2048 or 512 -> 128), so the
representation d = z changes without a d x d layer. It is residual, with the input tiled z / in
times, when z is a multiple of the input's channels (z = in included); when z is smaller it is the
same block without the residual; any other z raises.

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


def is_residual(in_channels: int, out_channels: int) -> bool:
    """The authors' rule for the resizer ``in_channels -> out_channels``: residual when
    ``out_channels`` is a multiple of ``in_channels`` (the input tiles into the output), not when
    it is smaller; any other ``out_channels`` raises a ValueError naming both."""
    if out_channels % in_channels == 0:
        return True
    if out_channels < in_channels:
        return False
    raise ValueError(
        f"resizer out_channels={out_channels} is larger than in_channels={in_channels} but not a multiple of "
        f"it: the residual tiles the input a whole number of times. Use a multiple of {in_channels} "
        f"(residual) or fewer than {in_channels} channels (no residual)."
    )


class BottleneckExpand(nn.Module):
    """(N, in, H, W) -> (N, out, H, W). With ``branch = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))``
    (conv1/conv3 1x1, conv2 3x3 padded, ``hidden`` channels in between):

    - residual (``out`` a multiple of ``in``): ``relu(branch + x.repeat(1, out // in, 1, 1))``, the
      input tiled along channels in the authors' order, so the output starts close to the input;
    - otherwise (``out < in``): ``relu(branch)``.

    The output is non-negative either way; ``is_residual`` says which (see :func:`is_residual`)."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        self.is_residual = is_residual(in_channels, out_channels)
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
        if self.is_residual:
            out = out + x.repeat(1, out.shape[1] // x.shape[1], 1, 1)
        return self.relu(out)
