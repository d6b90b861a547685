"""Gradient clipping by value, ``g <- clamp(g, -c, c)`` element-wise, as the ISSL TinyImageNet
runs do (Lightning's ``gradient_clip_val: 2`` with ``gradient_clip_algorithm: value``).

VISSL's own ``MODEL.GRAD_CLIP`` clips the norm. The plugin's key is ``config.MODEL.GRAD_CLIP_VALUE``
(``c``; null: no clipping). Under PyTorch AMP the gradients are unscaled first (as Lightning does),
so ``c`` bounds the true gradient; ``GradScaler.step`` then skips its own unscaling and still
skips the step when the unscaled gradients hold an inf or a NaN.
"""

from vissl_issl.plugin.hooks.base import PluginHook

import torch

from vissl_issl.config import ConfigError

KEY = "config.MODEL.GRAD_CLIP_VALUE"


def clip_value(model_config):
    """``c`` of the config, or None; a value that is not a positive number raises naming the key."""
    value = model_config.get("GRAD_CLIP_VALUE")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{KEY}={value!r} must be a positive number (or null for no clipping)")
    return float(value)


class GradValueClipHook(PluginHook):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def on_backward(self, task) -> None:
        if task.amp_grad_scaler is not None:
            task.amp_grad_scaler.unscale_(task.optimizer)
        torch.nn.utils.clip_grad_value_(task.model.parameters(), self.value)
