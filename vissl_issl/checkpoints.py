"""Reading the weights a user hands to the hub, the probe or a compressor: VISSL checkpoints and
torchvision / release state dicts, with one error for anything else.

- A VISSL checkpoint (``checkpoint.torch``, ``model_phase<N>.torch``): the model sits under
  ``classy_state_dict.base_model.model`` as ``{"trunk": ..., "heads": ...}`` in VISSL's layout
  (``_feature_blocks.`` keys). FSDP runs write shards (``"type": "shard_list"`` / ``"shard"``);
  VISSL's ``CheckpointFormatConverter.sharded_to_consolidated_checkpoint`` turns them into a
  ``"consolidated"`` checkpoint of the same layout, which reads like a DDP one.
- A state dict (key -> tensor): torchvision's ResNet layout, the authors' release layout, or a
  VISSL trunk's (``_feature_blocks.`` keys), as :mod:`vissl_issl.weights` reads them.

Weights that do not fit what they are loaded into (another method's checkpoint, another trunk)
fail with :func:`check_fits`, which names the file, what it holds (the loss, trunk and heads of the
``train_config.yaml`` VISSL saves beside a checkpoint) and what was expected.

Plain torch only (PyYAML to read a ``train_config.yaml``): the hub reads checkpoints without VISSL.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import torch

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, Path]

MODEL_KEYS = ("classy_state_dict", "base_model", "model")
TRAIN_CONFIG_NAME = "train_config.yaml"
READABLE_TYPES = ("consolidated",)
SHARDED_TYPES = ("shard", "shard_list", "slice", "slice_list")


class CheckpointError(ValueError):
    """A file that is neither a readable VISSL checkpoint nor a state dict, or whose weights do not
    fit what they are loaded into; the message names the file."""


@dataclass
class VisslModel:
    """The model of a VISSL checkpoint, in VISSL's layout."""

    trunk: StateDict
    heads: StateDict


def listing(keys: Iterable[str], limit: int = 10) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(state: Any, source: PathLike) -> StateDict:
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} holds a {type(state).__name__}, not a state dict (key -> tensor).")
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source} is not a state dict: {listing(not_tensors)} are not tensors.")
    return dict(state)


def is_vissl_checkpoint(content: Any) -> bool:
    return isinstance(content, Mapping) and MODEL_KEYS[0] in content


def vissl_model(content: Mapping[str, Any], source: PathLike) -> VisslModel:
    """``{trunk, heads}`` of loaded VISSL checkpoint content."""
    kind = content.get("type", "consolidated")
    if kind in SHARDED_TYPES:
        raise CheckpointError(
            f"{source} is a VISSL {kind!r} checkpoint (FSDP); consolidate it first with VISSL's "
            "vissl.utils.checkpoint.CheckpointFormatConverter.sharded_to_consolidated_checkpoint(<in>, <out>)."
        )
    if kind not in READABLE_TYPES:
        raise CheckpointError(f"{source} has checkpoint type {kind!r}; readable: {list(READABLE_TYPES)}.")
    node: Any = content
    path = (*MODEL_KEYS, "trunk")
    for depth, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            location = "".join(f"[{k!r}]" for k in path[: depth + 1])
            raise CheckpointError(f"{source} has no checkpoint{location}: not a VISSL checkpoint with a trunk.")
        model, node = node, node[key]
    return VisslModel(check_state_dict(node, source), check_state_dict(model.get("heads", {}), source))


def load_file(path: PathLike, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as error:  # torch raises pickle, zip and value errors alike for a non-checkpoint
        raise CheckpointError(
            f"{path} is not a torch checkpoint or state dict ({type(error).__name__}: {error})"
        ) from None


def read_vissl_model(path: PathLike) -> VisslModel:
    """The trunk and heads of a VISSL checkpoint (DDP, or FSDP consolidated)."""
    # VISSL checkpoints pickle more than tensors (optimizer, loss and hook states).
    content = load_file(path, weights_only=False)
    if not is_vissl_checkpoint(content):
        raise CheckpointError(
            f"{path} is not a VISSL checkpoint (no {MODEL_KEYS[0]!r}); a state dict of weights loads with "
            "the hub's read_weights_file."
        )
    return vissl_model(content, path)


def read_model_or_state_dict(path: PathLike) -> Union[VisslModel, StateDict]:
    """A VISSL checkpoint's model, or the state dict a file holds, from one load. Unpickled as
    VISSL checkpoints must be: read only files you trust."""
    content = load_file(path, weights_only=False)
    return vissl_model(content, path) if is_vissl_checkpoint(content) else check_state_dict(content, path)


def read_state_dict(path: PathLike, source: Optional[str] = None) -> StateDict:
    """A plain state dict (key -> tensor) from a file, refusing VISSL checkpoints."""
    content = load_file(path, weights_only=True)
    if is_vissl_checkpoint(content):
        raise CheckpointError(
            f"{source or path} is a VISSL checkpoint, not a state dict: load it with from_checkpoint."
        )
    return check_state_dict(content, source or path)


def mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> List[str]:
    """What keeps ``state`` from loading strictly into a module whose state dict is ``expected``:
    missing keys, unexpected keys, differing shapes; empty when it fits."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key}: {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    labelled = (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", shapes))
    return [f"{label} {listing(keys)}" for label, keys in labelled if keys]


def train_config_path(checkpoint: PathLike) -> Path:
    """Where VISSL writes the run's config: next to its checkpoints."""
    return Path(checkpoint).parent / TRAIN_CONFIG_NAME


def describe_run(config: Mapping[str, Any]) -> str:
    """The loss, trunk and heads of a VISSL config (``cfg.config``, or a ``train_config.yaml``):
    ``loss dissl_loss, trunk tv_resnet (depth 18), heads [mlp, mlp] [mlp]``."""
    model = config["MODEL"]
    trunk = model["TRUNK"]
    depths = {"tv_resnet": "TV_RESNET", "resnet": "RESNETS", "resnet_resizer": "RESNETS"}
    depth = (trunk.get(depths.get(trunk["NAME"], "")) or {}).get("DEPTH")
    params = model["HEAD"]["PARAMS"]
    heads = " ".join(
        "[" + ", ".join(module[0] for module in (head if isinstance(head[0], list) else [head])) + "]"
        for head in params
    )
    return (
        f"loss {config['LOSS']['name']}, trunk {trunk['NAME']}"
        + (f" (depth {depth})" if depth is not None else "")
        + f", heads {heads or 'none'}"
    )


def describe_checkpoint(checkpoint: PathLike) -> str:
    """What a checkpoint's run trained, from the ``train_config.yaml`` beside it."""
    import yaml  # here: the hub's release entrypoints work without PyYAML

    path = train_config_path(checkpoint)
    if not path.is_file():
        return f"no {TRAIN_CONFIG_NAME} beside it says what it trained"
    with open(path) as file:
        return f"its {TRAIN_CONFIG_NAME} trained {describe_run(yaml.safe_load(file))}"


def check_fits(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], part: str, checkpoint: PathLike, into: str
) -> None:
    """Raises a CheckpointError naming ``checkpoint`` when its ``part`` (``trunk``, ``heads``) does
    not load strictly into ``expected``, the state dict of ``into`` (e.g. "the trunk of loss
    cissl_loss, trunk tv_resnet ...")."""
    problems = mismatches(expected, state)
    if problems:
        raise CheckpointError(
            f"{checkpoint}: its {part} does not fit {into} ({'; '.join(problems)}); {describe_checkpoint(checkpoint)}."
        )
