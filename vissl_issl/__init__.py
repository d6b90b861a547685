"""vissl_issl: invariant and compressive self-supervised learning for VISSL.

Importing this package makes VISSL 0.1.6 work on today's stack (:mod:`vissl_issl.compat`) and
registers every loss, head, trunk, model and data source with VISSL's registries. VISSL has no
plugin mechanism: registration happens at import, which is why ``tools/run_distributed_engines.py``
imports this package at module top (re-run in every spawned rank) and passes
:func:`vissl_issl.hooks.hook_generator` (pickled by reference, so unpickling imports us too).
"""
from vissl_issl import compat

compat.apply_all()

from vissl_issl import data, heads, losses, models, trunks  # noqa: E402,F401  (registration)
