"""Config inference and checks that VISSL's ``infer_and_assert_hydra_config`` does not do for
plugin losses, run by the plugin launcher after VISSL's own inference and before any process
starts, so a bad config fails with the offending key named instead of mid-training.

A loss class opts in with a classmethod ``infer_config(config)`` that fills its inferable keys
(crop counts, output sizes) from the rest of the config and raises :class:`ConfigError` on
inconsistencies.
"""
import importlib.util
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

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


def head_modules(head_param: List[Any]) -> List[List[Any]]:
    """The ``[name, kwargs]`` modules of one ``MODEL.HEAD.PARAMS`` entry (one module or a list)."""
    return list(head_param) if isinstance(head_param[0], list) else [head_param]


def head_output_dim(head_param: List[Any]) -> int:
    """Output size of one ``MODEL.HEAD.PARAMS`` entry: the last ``dims`` of its last module."""
    return int(head_modules(head_param)[-1][1]["dims"][-1])


def teacher_student_dim(head_params: List[Any], loss: str) -> int:
    """The common output size of ``MODEL.HEAD.PARAMS = [teacher, student]``."""
    if len(head_params) != 2 or not all(isinstance(p, (list, tuple)) for p in head_params):
        raise ConfigError(
            f"config.MODEL.HEAD.PARAMS must hold exactly 2 heads [teacher, student] for {loss}, got "
            f"{head_params}"
        )
    teacher, student = (head_output_dim(p) for p in head_params)
    if teacher != student:
        raise ConfigError(
            f"config.MODEL.HEAD.PARAMS: the teacher head outputs {teacher} but the student head "
            f"outputs {student}; {loss} needs both the same size"
        )
    return teacher


def check_known_keys(block: Mapping[str, Any], defaults: Mapping[str, Any], key: str) -> None:
    unknown = sorted(set(block) - set(defaults) - {"name"})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{key}.{k}' for k in unknown)}; known: {sorted(defaults)}")


def loss_block(config, loss: str, defaults: Mapping[str, Any]):
    """``config.LOSS.<loss>`` with its keys checked and the missing ones set to ``defaults``."""
    block = config.LOSS.setdefault(loss, type(config.LOSS)({}))
    check_known_keys(block, defaults, f"config.LOSS.{loss}")
    for name, value in defaults.items():
        block.setdefault(name, value)
    return block


def loss_params(
    loss_config: Mapping[str, Any], loss: str, defaults: Mapping[str, Any], inferred: Sequence[str] = ()
) -> Dict[str, Any]:
    """Constructor arguments of a plugin loss from its ``LOSS.<loss>`` block (``from_config``)."""
    key = f"config.LOSS.{loss}"
    check_known_keys(loss_config, defaults, key)
    params = {**defaults, **{k: v for k, v in loss_config.items() if k != "name"}}
    missing = [name for name in inferred if params[name] is None]
    if missing:
        raise ConfigError(
            f"{', '.join(f'{key}.{name}' for name in missing)} must be set (the plugin launcher infers "
            "them from the rest of the config)"
        )
    return params


def fill_or_check(block, key: str, name: str, inferred: int, source: str) -> None:
    """Set ``block[name]`` to the value ``source`` implies, or check that it already equals it."""
    if block[name] is None:
        block[name] = inferred
    elif block[name] != inferred:
        raise ConfigError(f"{key}.{name}={block[name]} but {source} gives {inferred}")


def require(value: Any, expected: Any, key: str, loss: str) -> None:
    if value != expected:
        raise ConfigError(f"{key}={value} but {loss} needs {expected}")


def route_heads_to_crops(config, head_crops: List[Optional[List[int]]], loss: str) -> None:
    """Use ``heads_on_crops_model`` with crops per head as a list (``multicrop_collator``), and
    set or check ``MODEL.HEAD_CROPS``."""
    require(config.MODEL.BASE_MODEL_NAME, "heads_on_crops_model", "config.MODEL.BASE_MODEL_NAME", loss)
    require(config.DATA.TRAIN.COLLATE_FUNCTION, "multicrop_collator", "config.DATA.TRAIN.COLLATE_FUNCTION", loss)
    if config.MODEL.get("HEAD_CROPS") is None:
        config.MODEL.HEAD_CROPS = head_crops
    require(config.MODEL.HEAD_CROPS, head_crops, "config.MODEL.HEAD_CROPS", loss)


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


FOLDER_SOURCES = {"disk_folder", "torchvision_dataset"}


def label_paths_from_data_paths(config) -> None:
    """Splits of folders given by ``DATA_PATHS`` alone: use the same folders as ``LABEL_PATHS``.

    VISSL 0.1.6 looks an empty ``LABEL_PATHS`` up in its dataset catalog by ``DATASET_NAMES``,
    which fails (``Dataset 'imagenet1k_folder' is not registered``) without a catalog file. For
    ``disk_folder`` (labels: the class sub-folders) and ``torchvision_dataset`` (labels: the
    dataset under the same root) the label path is the data path.
    """
    for split in ("TRAIN", "TEST"):
        data = config.DATA[split]
        if data.DATA_PATHS and not data.LABEL_PATHS and set(data.DATA_SOURCES) <= FOLDER_SOURCES:
            data.LABEL_PATHS = list(data.DATA_PATHS)


def check_fsdp_world_size(config) -> None:
    """FSDP with mixed precision needs more than one process.

    VISSL's ``self_supervision_fsdp_task`` wraps the whole model in one root FSDP only when more
    than one process trains; alone, each ``_fsdp`` module is its own root, and a mixed-precision
    root casts its input to fp16 under ``no_grad`` (fairscale 0.3.7): no gradient would cross an
    FSDP module, so the trunk and all but the last module of each head would not train.
    """
    if config.TRAINER.TASK_NAME != "self_supervision_fsdp_task" or not config.MODEL.FSDP_CONFIG.mixed_precision:
        return
    if config.DISTRIBUTED.NUM_NODES * config.DISTRIBUTED.NUM_PROC_PER_NODE == 1:
        raise ConfigError(
            "config.MODEL.FSDP_CONFIG.mixed_precision=True (FSDP with config.MODEL.AMP_PARAMS.USE_AMP) "
            "needs config.DISTRIBUTED.NUM_NODES * NUM_PROC_PER_NODE > 1: on one process every FSDP "
            "head module would cut the gradient to its input; use more processes, "
            "config.MODEL.AMP_PARAMS.USE_AMP=False, or DDP"
        )


def use_fsdp_heads(config) -> None:
    """Under FSDP, swap every head module that has a registered ``<name>_fsdp`` variant for it.

    VISSL's ``infer_fsdp`` does this for its own heads, and only in a flat ``MODEL.HEAD.PARAMS``;
    the ISSL recipes give each head as a list of modules, so any recipe runs sharded with
    ``config.MODEL.FSDP_CONFIG.AUTO_SETUP_FSDP=True`` (``parts/fsdp.yaml``) and nothing else.
    """
    from vissl.models.heads import MODEL_HEADS_REGISTRY

    if config.TRAINER.TASK_NAME != "self_supervision_fsdp_task":
        return
    for head_param in config.MODEL.HEAD.PARAMS:
        for module in head_modules(head_param):
            if f"{module[0]}_fsdp" in MODEL_HEADS_REGISTRY:
                module[0] = f"{module[0]}_fsdp"


def infer_and_check(config) -> None:
    """Plugin inference on a VISSL ``AttrDict`` config (``cfg.config``), in place."""
    fall_back_from_apex(config)
    label_paths_from_data_paths(config)
    check_fsdp_world_size(config)
    use_fsdp_heads(config)
    loss_cls = LOSS_REGISTRY.get(config.LOSS.name)
    if hasattr(loss_cls, "infer_config"):
        loss_cls.infer_config(config)
