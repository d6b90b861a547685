"""VISSL registration: ``import vissl_issl.plugin`` makes VISSL 0.1.6 work on today's stack
(:mod:`vissl_issl.compat`) and registers every loss, head, trunk, model, data source and collator
of the plugin with VISSL's registries; VISSL's task then applies ``config.MODEL.STEP_OPTIONS`` to the
model it builds (:mod:`vissl_issl.plugin.step_options`), and classy's ``adam``/``adamw`` build
torch's fused kernels (:mod:`vissl_issl.plugin.fused_optimizers`).

VISSL has no plugin mechanism: registration happens at import, which is why the plugin's
``tools/run_distributed_engines.py`` imports this package at module top (re-run in every spawned
rank) and passes :func:`vissl_issl.plugin.hooks.hook_generator` (pickled by reference, so
unpickling it imports this package too).
"""

from vissl_issl import compat

compat.apply_all()

from vissl_issl.plugin import (  # noqa: E402,F401
    checkpointing,
    data,
    fused_optimizers,
    heads,
    heads_on_crops,
    hooks,
    losses,
    step_options,
    trunks,
)

checkpointing.install_writers()
fused_optimizers.install()
step_options.install()
