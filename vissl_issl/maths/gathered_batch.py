"""The columns of a gathered view-major batch, and InfoNCE over it.

A rank holds ``2B`` rows, view-major: row ``r = v * B + i`` is view ``v`` of image ``i``. Gathered
from every rank in rank order they form ``2B * world`` columns, this rank's at
``offset = rank * 2B``. Row ``r``'s own column is ``offset + r`` and its positive, the other view
of the same image, is ``offset + (r + B) mod 2B``.
"""

from typing import Tuple

import torch
import torch.nn.functional as F

from vissl_issl.maths.distributed import gather_with_gradient, rank


def check_view_major(rows: torch.Tensor, name: str) -> None:
    """``rows`` must be ``(2B, D)`` with ``B > 0``."""
    if rows.ndim != 2 or len(rows) % 2 or len(rows) == 0:
        raise ValueError(f"{name} got embeddings of shape {tuple(rows.shape)}; expected (2 * B, D), view-major, B > 0")


def other_view(rows: torch.Tensor) -> torch.Tensor:
    """Row ``r`` of local view-major ``(2B, ...)`` rows becomes the other view of its image."""
    return rows.roll(len(rows) // 2, dims=0)


def view_columns(num_rows: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gathered column of each local row itself and of its positive (other view), ``(2B,)`` each."""
    rows = torch.arange(num_rows, device=device)
    offset = rank() * num_rows
    return rows + offset, (rows + num_rows // 2) % num_rows + offset


def similarity_logits(anchors: torch.Tensor, candidates: torch.Tensor, temperature) -> torch.Tensor:
    """``l2n(anchors) @ l2n(gathered candidates).T / temperature``: ``(2B, 2B * world)``, fp32.

    ``temperature`` is a float or a scalar tensor (a learned one keeps its gradient).
    """
    # VISSL calls the loss under autocast, which would run this product in half precision.
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        anchors = F.normalize(anchors.float(), dim=1)
        candidates = F.normalize(candidates.float(), dim=1)
        return anchors @ gather_with_gradient(candidates).t() / temperature


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """InfoNCE per anchor row, nats ``(2B,)``, on ``(2B, 2B * world)`` logits of local view-major
    anchors against every rank's candidates::

        D_r = -log softmax_{c != own(r)}(logits_r)[positive(r)]

    the anchor's own column is excluded, leaving ``2 B_g - 1`` candidates (SimCLR's NT-Xent; its
    mean over rows is VISSL's ``simclr_info_nce_loss``).
    """
    own, positive = view_columns(len(logits), logits.device)
    logits = logits.float().scatter(1, own.unsqueeze(1), float("-inf"))
    return F.cross_entropy(logits, positive, reduction="none")
