"""The plugin's hook generator.

VISSL builds hooks only through the ``hook_generator`` callable handed to ``launch_distributed``;
it has no hook registry. This module-level function is pickled by reference into spawned ranks and
SLURM jobs, and unpickling it imports ``vissl_issl.plugin``, which registers the plugin there.
"""

from typing import Callable, Dict, List

from vissl_issl.plugin.device_augmentation import device_augmentation_hooks
from vissl_issl.plugin.hooks.broken_images import broken_images_hook
from vissl_issl.plugin.hooks.frozen_heap import FrozenHeapHook
from vissl_issl.plugin.hooks.grad_value_clip import GradValueClipHook, clip_value
from vissl_issl.plugin.hooks.momentum_target import MomentumTargetHook
from vissl_issl.plugin.hooks.online_eval import OnlineEvalHook, online_eval_enabled
from vissl_issl.plugin.hooks.rate_weight_annealing import RateWeightAnnealingHook
from vissl_issl.plugin.hooks.rng_state import RngStateHook

from classy_vision.hooks import ClassyHook

# The names a loss lists in its ``HOOKS`` (:class:`vissl_issl.losses.base.MethodLoss`).
HOOKS: Dict[str, Callable[[], ClassyHook]] = {
    "momentum_target": MomentumTargetHook,
    "rate_weight_annealing": RateWeightAnnealingHook,
}


def hook_generator(cfg) -> List[ClassyHook]:
    """VISSL's default hooks with its DINO teacher replaced by the plugin's, after the frozen heap's
    (:mod:`vissl_issl.plugin.hooks.frozen_heap`), the generator states' and, with
    ``DATA.TRAIN.DEVICE_AUGMENTATION``, the device augmentation's (both snapshot before VISSL's
    checkpoint hook saves), plus the hooks the configured loss asks for and gradient clipping by
    value when configured. With ``HOOKS.CHECK_NAN`` VISSL's NaN checks give way to the plugin's
    (:mod:`vissl_issl.plugin.hooks.non_finite`). The online evaluation (``HOOKS.ONLINE_EVAL``)
    comes last, after VISSL's checkpoint hook saved the epoch."""
    # Imported here, as in VISSL's launcher: importing vissl.hooks at module top breaks the
    # MKL threading layer of submitit processes.
    from vissl_issl.plugin.hooks.dino_teacher import DinoTeacherHook
    from vissl_issl.plugin.hooks.non_finite import guard_non_finite

    from classy_vision.losses import LOSS_REGISTRY
    from vissl.hooks import default_hook_generator
    from vissl.hooks.dino_hooks import DINOHook

    # all before VISSL's checkpoint hook
    hooks = [FrozenHeapHook(), RngStateHook(), broken_images_hook(cfg), *device_augmentation_hooks(cfg)]
    hooks += [DinoTeacherHook() if type(hook) is DINOHook else hook for hook in default_hook_generator(cfg)]
    if cfg.HOOKS.CHECK_NAN:
        hooks = guard_non_finite(hooks)
    loss_cls = LOSS_REGISTRY.get(cfg.LOSS.name)
    hooks += [HOOKS[name]() for name in getattr(loss_cls, "HOOKS", ())]
    value = clip_value(cfg.MODEL)
    if value is not None:
        hooks.append(GradValueClipHook(value))
    if online_eval_enabled(cfg):
        hooks.append(OnlineEvalHook(cfg.HOOKS.ONLINE_EVAL))
    return hooks
