"""SimCLR's NT-Xent with separate teacher and student heads, for CISSL's head ablations."""

import torch

from vissl_issl.losses.contrastive import ContrastiveISSLLoss
from vissl_issl.maths.gathered_batch import info_nce


class AsymmetricSimCLRLoss(ContrastiveISSLLoss):
    r"""NT-Xent between student rows and gathered teacher columns; the positive is the other view.

    With ``u_r = normalize(student_r)``, ``w_c = normalize(teacher_c)`` over all ``2 * B *
    world_size`` gathered teacher rows and ``s(r, c) = u_r . w_c / temperature``::

        L = mean_r -log( exp s(r, other view of r) / sum_{c != same view of r} exp s(r, c) )

    The denominator holds the positive and every other image's two views: both views of the same
    image are excluded as negatives. With the same head on both sides this is exactly VISSL's
    ``simclr_info_nce_loss`` (same temperature); with a linear student and an MLP teacher it is the
    "SimCLR with probe-matched heads" ablation of CISSL (the VISSL fork's ``simple_cntr_issl_loss``).

    ``forward([teacher, student], target)``: both ``(2 * B, D)``, crop-major, un-normalised; target
    ignored; returns a fp32 scalar.

    Config (``LOSS.asymmetric_simclr_loss``):
        temperature (float): 0.1.
    """

    NAME = "asymmetric_simclr_loss"

    def objective(self, logits: torch.Tensor) -> torch.Tensor:
        return info_nce(logits).mean()
