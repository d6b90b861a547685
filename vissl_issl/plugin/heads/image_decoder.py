r"""``image_decoder``: VIC's decoder q(M(X) | z_hat), chained after ``entropy_bottleneck``
(Dubois et al. 2021, ``DirectDistortion`` with the transposed-pyramid ``cnn`` decoder;
compression_ssl.md §A.3).

On the bottleneck's packed output ``[z_hat | z | bits | aux]``::

    h_0 = ReLU(W z_hat + b) reshaped to (c_0, H / 2^K, W / 2^K)
    h_k = ReLU(ConvTranspose2d(4, stride 2, padding 1)(h_{k-1}))     k = 1..K, spatial x 2 each
    logits = Conv2d(3, padding 1)(h_K)                               (C, H, W)

with ``K`` the number of halvings that keep both sides even and at least 4 (16 px: 4 -> 8 -> 16)
and channels ``c_0 = channels * 2^(K-1)`` halving at each step down to ``channels``. The output
packs ``[logits (C*H*W) | bits (1) | aux (1)]``, ``(N, C*H*W + 2)`` fp32; ``vic_loss`` compares
``sigmoid(logits)`` (Gaussian) or the logits (Bernoulli) with the canonical image. The decoder
is part of ``task.base_model`` so that VISSL's optimizer trains it.

Options: ``image_shape: [C, H, W]``; ``z_dim`` (the bottleneck's code size; ``vic_loss`` fills
it from the bottleneck when left out); ``channels`` (32, of the last hidden layer).
"""

from typing import List, Optional

import torch
from torch import nn
from vissl.config import AttrDict
from vissl.models.heads import register_model_head

from vissl_issl.architectures.packed_outputs import check_image_shape, pack_decoder, split_bottleneck

NAME = "image_decoder"
MIN_SIDE = 4


def pyramid_depth(height: int, width: int) -> int:
    """How many times both sides can be halved while staying even-divided and >= 4."""
    depth = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) // 2 >= MIN_SIDE:
        height, width, depth = height // 2, width // 2, depth + 1
    return depth


@register_model_head(NAME)
class ImageDecoder(nn.Module):
    def __init__(self, model_config: AttrDict, image_shape: List[int], z_dim: Optional[int] = None, channels: int = 32):
        super().__init__()
        self.image_shape = check_image_shape(image_shape)
        if z_dim is None or z_dim < 1 or channels < 1:
            raise ValueError(
                f"{NAME} needs z_dim >= 1 (the bottleneck's code size) and channels >= 1; got {z_dim}, {channels}"
            )
        colours, height, width = self.image_shape
        depth = pyramid_depth(height, width)
        widths = [channels * 2 ** (depth - 1 - k) for k in range(depth)] or [channels]
        self.start = (widths[0], height >> depth, width >> depth)
        self.z_dim = int(z_dim)
        self.project = nn.Sequential(nn.Linear(z_dim, widths[0] * self.start[1] * self.start[2]), nn.ReLU(inplace=True))
        layers: List[nn.Module] = []
        for k in range(depth):
            out = widths[min(k + 1, depth - 1)]
            layers += [nn.ConvTranspose2d(widths[k], out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(widths[-1], colours, 3, padding=1))
        self.pyramid = nn.Sequential(*layers)

    def forward(self, bottleneck_output: torch.Tensor) -> torch.Tensor:
        """``(N, 2 z_dim + 2)`` bottleneck output -> ``(N, C*H*W + 2)`` packed, fp32."""
        coded = split_bottleneck(bottleneck_output)
        if coded.z_hat.shape[1] != self.z_dim:
            raise ValueError(f"{NAME} with z_dim {self.z_dim} got codes of size {coded.z_hat.shape[1]}")
        hidden = self.project(coded.z_hat).reshape(-1, *self.start)
        return pack_decoder(self.pyramid(hidden), coded.bits, coded.aux)
