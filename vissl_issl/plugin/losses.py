"""The plugin's losses registered with VISSL (classy_vision's loss registry).

VISSL builds a loss as ``LOSS_REGISTRY[config.LOSS.name].from_config(config.LOSS[name])`` and
treats it as a ``ClassyLoss``; each core loss (:data:`vissl_issl.losses.LOSSES`, plain
``nn.Module``) is registered as a subclass of both, under its ``NAME``, and exported here under
its class name (so that it pickles by reference).
"""

from classy_vision.losses import ClassyLoss, register_loss

from vissl_issl.losses import LOSSES

for _core in LOSSES:
    _registered = type(_core.__name__, (_core, ClassyLoss), {"__module__": __name__, "__doc__": _core.__doc__})
    register_loss(_core.NAME)(_registered)
    globals()[_core.__name__] = _registered
