"""Reading and checking VISSL-shaped configs in plain Python: the helpers the losses' config
inference uses (crop counts, head sizes, loss blocks with defaults) and :class:`ConfigError`,
whose message names the offending key (``config.X.Y``). Works on any mapping with attribute
access (VISSL's ``AttrDict``); imports nothing from VISSL.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key (``config.X.Y``)."""


def count_crops(transforms: List[dict]) -> int:
    """Number of views per image that VISSL's multi-view transforms produce (1 without one)."""
    for transform in transforms:
        if transform["name"] in ("ImgPilToMultiCrop", "ImgPilToIsslViews"):
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
            f"config.MODEL.HEAD.PARAMS must hold exactly 2 heads [teacher, student] for {loss}, got {head_params}"
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
