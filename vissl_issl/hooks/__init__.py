"""The plugin's hook generator.

VISSL builds hooks only through the ``hook_generator`` callable handed to ``launch_distributed``;
it has no hook registry. This module-level function is pickled by reference into spawned ranks and
SLURM jobs, and unpickling it imports ``vissl_issl``, which registers the plugin there.
"""
from typing import List

from classy_vision.hooks import ClassyHook


def hook_generator(cfg) -> List[ClassyHook]:
    # Imported here, as in VISSL's launcher: importing vissl.hooks at module top breaks the
    # MKL threading layer of submitit processes.
    from vissl.hooks import default_hook_generator

    return default_hook_generator(cfg)
