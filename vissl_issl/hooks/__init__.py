"""The plugin's hook generator.

VISSL builds hooks only through the ``hook_generator`` callable handed to ``launch_distributed``;
it has no hook registry. This module-level function is pickled by reference into spawned ranks and
SLURM jobs, and unpickling it imports ``vissl_issl``, which registers the plugin there.
"""
from typing import List

from classy_vision.hooks import ClassyHook


def hook_generator(cfg) -> List[ClassyHook]:
    """VISSL's default hooks, plus the momentum target for BYOL-style losses and the rate-weight
    annealing for the lossyless compressors."""
    # Imported here, as in VISSL's launcher: importing vissl.hooks at module top breaks the
    # MKL threading layer of submitit processes.
    from classy_vision.losses import LOSS_REGISTRY
    from vissl.hooks import default_hook_generator

    from vissl_issl.hooks.beta_annealing import RateWeightAnnealingHook
    from vissl_issl.hooks.momentum_target import MomentumTargetHook
    from vissl_issl.losses.byol import BYOLLoss
    from vissl_issl.losses.compression import CompressionLoss

    hooks = default_hook_generator(cfg)
    loss_cls = LOSS_REGISTRY.get(cfg.LOSS.name)
    if isinstance(loss_cls, type) and issubclass(loss_cls, BYOLLoss):
        hooks.append(MomentumTargetHook())
    if isinstance(loss_cls, type) and issubclass(loss_cls, CompressionLoss):
        hooks.append(RateWeightAnnealingHook())
    return hooks
