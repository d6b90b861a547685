"""The packed outputs of the compressors' heads, and their unpacking by the losses.

VISSL heads return one tensor per head, so each head packs its parts along the feature axis, fp32:

- ``entropy_bottleneck``: ``[z_hat (D) | z (D) | bits (1) | aux (1)]``, ``(N, 2D + 2)``;
- ``bince_projection``: ``[projection (P) | bits | aux | logit_scale]``, ``(N, P + 3)``, every row
  carrying the same ``logit_scale``;
- ``image_decoder``: ``[logits (C*H*W) | bits | aux]``, ``(N, C*H*W + 2)``.
"""

from typing import NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

PROJECTION_EXTRA_COLUMNS = 3  # bits, aux, logit_scale
DECODER_EXTRA_COLUMNS = 2  # bits, aux


class BottleneckOutput(NamedTuple):
    z_hat: Tensor  # (N, D) quantised (evaluation) or noisy (training) code
    z: Tensor  # (N, D) code before quantisation
    bits: Tensor  # (N,) estimated code length
    aux: Tensor  # (N,) quantile loss / N


def split_bottleneck(output: Tensor) -> BottleneckOutput:
    """``(N, 2D + 2)`` packed head output -> its parts (views, no copy)."""
    if output.dim() != 2 or output.shape[1] < 4 or output.shape[1] % 2:
        raise ValueError(f"an entropy_bottleneck output has shape (N, 2D + 2), got {tuple(output.shape)}")
    dim = (output.shape[1] - 2) // 2
    return BottleneckOutput(output[:, :dim], output[:, dim : 2 * dim], output[:, 2 * dim], output[:, 2 * dim + 1])


class ProjectionOutput(NamedTuple):
    projection: torch.Tensor  # (N, P)
    bits: torch.Tensor  # (N,)
    aux: torch.Tensor  # (N,)
    logit_scale: torch.Tensor  # () the (shared) learnable log inverse temperature


def pack_projection(
    projection: torch.Tensor, bits: torch.Tensor, aux: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """``[p | bits | aux | logit_scale]``: ``(N, P), (N,) or (N, 1), same, () -> (N, P + 3)`` fp32."""
    column = logit_scale.float().reshape(1, 1).expand(len(projection), 1)
    return torch.cat([projection.float(), bits.float().reshape(-1, 1), aux.float().reshape(-1, 1), column], dim=1)


def split_projection(output: torch.Tensor) -> ProjectionOutput:
    """Inverse of :func:`pack_projection`; ``logit_scale`` is read from the first row, so its
    gradient is the sum over the rows' columns."""
    if output.ndim != 2 or output.shape[1] <= PROJECTION_EXTRA_COLUMNS or len(output) == 0:
        raise ValueError(
            f"bince_projection output of shape {tuple(output.shape)}; expected (N, P + 3) = [projection | bits | aux | "
            "logit_scale], N > 0"
        )
    return ProjectionOutput(output[:, :-3], output[:, -3], output[:, -2], output[0, -1])


class DecoderOutput(NamedTuple):
    logits: torch.Tensor  # (N, C, H, W)
    bits: torch.Tensor  # (N,)
    aux: torch.Tensor  # (N,)


def check_image_shape(image_shape: Sequence[int]) -> Tuple[int, int, int]:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_decoder needs image_shape [C, H, W] of positive sizes; got {image_shape}")
    return tuple(int(s) for s in image_shape)


def pack_decoder(logits: torch.Tensor, bits: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
    """``[logits | bits | aux]``: ``(N, C, H, W), (N,) or (N, 1), same -> (N, CHW + 2)`` fp32."""
    return torch.cat([logits.float().flatten(1), bits.float().reshape(-1, 1), aux.float().reshape(-1, 1)], dim=1)


def split_decoder(output: torch.Tensor, image_shape: Sequence[int]) -> DecoderOutput:
    """Inverse of :func:`pack_decoder`."""
    shape = check_image_shape(image_shape)
    size = shape[0] * shape[1] * shape[2]
    if output.ndim != 2 or output.shape[1] != size + DECODER_EXTRA_COLUMNS:
        raise ValueError(
            f"image_decoder output of shape {tuple(output.shape)}; expected (N, C*H*W + 2) = "
            f"(N, {size + DECODER_EXTRA_COLUMNS}) for image_shape {list(shape)}"
        )
    return DecoderOutput(output[:, :size].reshape(-1, *shape), output[:, size], output[:, size + 1])
