"""Config inference and checks that VISSL's ``infer_and_assert_hydra_config`` does not do for
plugin losses, run by the plugin launcher after VISSL's own inference and before any process
starts, so a bad config fails with the offending key named instead of mid-training.

A loss class opts in with a classmethod ``infer_config(config)`` that fills its inferable keys
(crop counts, output sizes) from the rest of the config and raises :class:`ConfigError` on
inconsistencies.
"""
import importlib.util
import logging
from typing import Any, List

from classy_vision.losses import LOSS_REGISTRY


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key (``config.X.Y``)."""


def count_crops(transforms: List[dict]) -> int:
    """Number of views per image that VISSL's multi-view transforms produce (1 without one)."""
    for transform in transforms:
        if transform["name"] == "ImgPilToMultiCrop":
            return int(transform["total_num_crops"])
        if transform["name"] == "ImgReplicatePil":
            return int(transform.get("num_times", 2))
    return 1


def head_output_dim(head_param: List[Any]) -> int:
    """Output size of one ``MODEL.HEAD.PARAMS`` entry: the last ``dims`` of its last module."""
    last_module = head_param[-1] if isinstance(head_param[0], list) else head_param
    return int(last_module[1]["dims"][-1])


def fall_back_from_apex(config) -> None:
    """Most stock VISSL configs ask for apex AMP and apex SyncBN; without apex use PyTorch's."""
    if importlib.util.find_spec("apex") is not None:
        return
    replaced = []
    amp = config.MODEL.AMP_PARAMS
    if amp.USE_AMP and amp.AMP_TYPE == "apex":
        amp.AMP_TYPE = "pytorch"
        replaced.append("config.MODEL.AMP_PARAMS.AMP_TYPE")
    sync_bn = config.MODEL.SYNC_BN_CONFIG
    if sync_bn.CONVERT_BN_TO_SYNC_BN and sync_bn.SYNC_BN_TYPE == "apex":
        sync_bn.SYNC_BN_TYPE = "pytorch"
        replaced.append("config.MODEL.SYNC_BN_CONFIG.SYNC_BN_TYPE")
    if replaced:
        logging.warning(f"apex is not installed: using PyTorch's implementation for {', '.join(replaced)}")


def infer_and_check(config) -> None:
    """Plugin inference on a VISSL ``AttrDict`` config (``cfg.config``), in place."""
    fall_back_from_apex(config)
    loss_cls = LOSS_REGISTRY.get(config.LOSS.name)
    if hasattr(loss_cls, "infer_config"):
        loss_cls.infer_config(config)
