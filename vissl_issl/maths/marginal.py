"""The marginal of a batch of categorical distributions over the global (all ranks) batch.

Each rank contributes only its per-group sum of probabilities plus its sample count (O(C) floats),
never per-sample probabilities. The gather keeps gradients
(:func:`~vissl_issl.maths.distributed.gather_with_gradient`), whose backward all-reduces: every rank
computes the same global statistic, so after DDP averages the gradients they equal those of one
process holding the whole batch, even for uneven per-rank batches.
"""

import torch

from vissl_issl.maths.distributed import gather_with_gradient


def local_sums_and_count(probs: torch.Tensor) -> torch.Tensor:
    """``probs`` of shape ``(G, B, C)`` -> ``(G, C + 1)``: per-group sums over the batch, then ``B``.

    The count rides as an extra column so that a single gather moves both.
    """
    num_groups, batch_size, _ = probs.shape
    count = probs.new_full((num_groups, 1), float(batch_size))
    return torch.cat([probs.sum(dim=1), count], dim=1)


def global_marginal(probs: torch.Tensor) -> torch.Tensor:
    """Mean over every rank's batch of ``probs`` ``(G, B, C)`` -> ``(G, C)``, differentiable."""
    local = local_sums_and_count(probs)
    gathered = gather_with_gradient(local).view(-1, *local.shape).sum(dim=0)
    return gathered[:, :-1] / gathered[:, -1:]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) over the last dim. As ``torch.distributions.Categorical`` does, the probabilities
    are clamped to ``eps`` inside the log only, so empty classes give 0 instead of ``0 * -inf``."""
    log_probs = probs.clamp(min=torch.finfo(probs.dtype).eps).log()
    return -(probs * log_probs).sum(dim=-1)
