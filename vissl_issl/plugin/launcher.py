"""The plugin's launcher: VISSL's ``hydra_main`` with the plugin loaded in every process.

VISSL's own ``tools/run_distributed_engines.py`` spawns ranks that never import the plugin and
passes VISSL's default hook generator; this one imports ``vissl_issl`` (the caller's module top),
runs the plugin's config inference before launching, and uses the plugin's hook generator for
local ranks and SLURM jobs alike.

``MODEL.WEIGHTS_INIT.PARAMS_FILE`` (e.g. the feature compressor's frozen trunk) takes any weights
spec of :mod:`vissl_issl.weights`: weights that are not a VISSL checkpoint are checked against the
config's trunk and written as one, ``<CHECKPOINT.DIR>/init_weights.torch``, which the dumped
``train_config.yaml`` names instead.
"""

from pathlib import Path
from typing import List
from unittest import mock

from vissl_issl.plugin import checkpointing
from vissl_issl.plugin.hooks import hook_generator
from vissl_issl.plugin.inference import infer_and_check
from vissl_issl.plugin.input_checks import check_data_paths, check_loss_overrides

import torch
from omegaconf import OmegaConf
from vissl.config import AttrDict, check_cfg_version
from vissl.utils import distributed_launcher
from vissl.utils.hydra_config import (
    compose_hydra_configuration,
    convert_fsdp_dtypes,
    infer_and_assert_hydra_config,
    save_attrdict_to_disk,
)

from vissl_issl import weights
from vissl_issl.atomic_files import write_atomically

checkpointing.install_resume()


class SlurmJob(distributed_launcher._ResumableSlurmJob):
    """VISSL's resumable submitit job, running with the plugin's hooks. Unpickling it in the
    submitit process imports ``vissl_issl``, which registers the plugin there."""

    def __call__(self):
        with mock.patch.object(distributed_launcher, "default_hook_generator", hook_generator):
            super().__call__()

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmJob(self.engine_name, self.config))


INIT_WEIGHTS_NAME = "init_weights.torch"


def convert_init_weights(config) -> None:
    """Points ``MODEL.WEIGHTS_INIT.PARAMS_FILE`` at a VISSL checkpoint of its weights (see the
    module docstring) unless it is one, or names none, or is read with another state dict key."""
    init = config.MODEL.WEIGHTS_INIT
    if not init.PARAMS_FILE or init.STATE_DICT_KEY_NAME != "classy_state_dict":
        return
    checkpoint = weights.as_vissl_checkpoint(init.PARAMS_FILE, config)
    if checkpoint is None:
        return
    path = Path(config.CHECKPOINT.DIR).resolve() / INIT_WEIGHTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: torch.save(checkpoint, file))
    print(f"MODEL.WEIGHTS_INIT.PARAMS_FILE {init.PARAMS_FILE} -> {path}")
    init.PARAMS_FILE = str(path)


def compose(overrides: List[str], dump_config: bool = False):
    """VISSL's ``convert_to_attrdict`` steps, interpolations resolved, with the plugin's inference added before the
    ``train_config.yaml`` dump (which must precede VISSL's FSDP dtype conversion).
    Returns ``(args, config)`` like VISSL's."""
    # Resolved, unlike VISSL's conversion, so configs may interpolate (``${config.X.Y}``); VISSL's
    # own configs have no interpolations.
    args = AttrDict(OmegaConf.to_container(compose_hydra_configuration(overrides), resolve=True))
    check_cfg_version(args)
    config = args.config
    infer_and_assert_hydra_config(config)
    infer_and_check(config)
    check_loss_overrides(overrides, config)
    if dump_config:
        convert_init_weights(config)
        save_attrdict_to_disk(config)
    convert_fsdp_dtypes(config)
    return args, config


def hydra_main(overrides: List[str]):
    print(f"####### overrides: {overrides}")
    args, config = compose(overrides, dump_config=True)
    if config.SLURM.USE_SLURM:
        with mock.patch.object(distributed_launcher, "_ResumableSlurmJob", SlurmJob):
            return distributed_launcher.launch_distributed_on_slurm(cfg=config, engine_name=args.engine_name)
    # Here, not for SLURM: the submitting machine need not see the data.
    check_data_paths(config)
    distributed_launcher.launch_distributed(
        cfg=config,
        node_id=args.node_id,
        engine_name=args.engine_name,
        hook_generator=hook_generator,
    )


if __name__ == "__main__":
    # ``python -m vissl_issl.plugin.launcher config=...``: the launcher without the repository's tools/.
    import sys

    import vissl_issl.plugin  # noqa: F401  (spawned ranks re-import this module and register)

    hydra_main(overrides=sys.argv[1:])
