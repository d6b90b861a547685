r"""Annealing of the rate weight of the lossyless compressors (compression_ssl.md §A.1).

The authors anneal their code's ``beta`` (the weight of the *rate*; 1 / beta of the paper) with
``Annealer(final * 1e-5, final, n_steps_anneal=ceil(max_steps / 10), mode="linear")``. In the
paper's convention used here (``L = w R + beta D + aux``, see ``vissl_issl.losses.compression``)
that is the rate weight ``w`` relative to its final value 1::

    n = ceil(fraction * K)                         K = task.max_iteration, fraction = 0.1
    w(k) = start + (1 - start) * min(k / n, 1)     start = 1e-5; w = 1 when n = 0

so the encoder first learns to be informative, then to compress. ``k`` is ``task.iteration``,
the number of optimizer steps already taken; the hook sets ``task.loss.rate_weight`` before every
loss (``on_forward``). ``start`` and ``fraction`` are the loss's ``rate_weight_start`` and
``rate_anneal_fraction`` (fraction 0: no annealing).
"""

import math

from vissl_issl.plugin.hooks.base import PluginHook


def rate_weight(iteration: int, max_iteration: int, start: float = 1e-5, fraction: float = 0.1) -> float:
    """``w(k)`` above for ``k = iteration``, ``K = max_iteration``."""
    steps = math.ceil(fraction * max_iteration)
    if steps <= 0:
        return 1.0
    return start + (1.0 - start) * min(iteration / steps, 1.0)


class RateWeightAnnealingHook(PluginHook):
    """Sets ``task.loss.rate_weight`` from the schedule before each loss (train phases only; in
    test phases the final weight 1)."""

    def on_forward(self, task) -> None:
        loss = task.loss
        if not task.train:
            loss.rate_weight = 1.0
            return
        loss.rate_weight = rate_weight(
            task.iteration, task.max_iteration, loss.rate_weight_start, loss.rate_anneal_fraction
        )
