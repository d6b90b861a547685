"""Reading the weights a user hands to the hub, the probe or a compressor: VISSL checkpoints and
torchvision / release state dicts, with one error for anything else.

- A VISSL checkpoint (``checkpoint.torch``, ``model_phase<N>.torch``): the model sits under
  ``classy_state_dict.base_model.model`` as ``{"trunk": ..., "heads": ...}`` in VISSL's layout
  (``_feature_blocks.`` keys). FSDP runs write shards (``"type": "shard_list"`` / ``"shard"``);
  VISSL's ``CheckpointFormatConverter.sharded_to_consolidated_checkpoint`` turns them into a
  ``"consolidated"`` checkpoint of the same layout, which reads like a DDP one.
- A state dict (key -> tensor): torchvision's ResNet layout or the authors' release layout, as
  :func:`vissl_issl.hub.read_weights_file` takes it.

Plain torch only: the hub reads checkpoints without VISSL.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import torch

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, Path]

MODEL_KEYS = ("classy_state_dict", "base_model", "model")
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


def read_state_dict(path: PathLike, source: Optional[str] = None) -> StateDict:
    """A plain state dict (key -> tensor) from a file, refusing VISSL checkpoints."""
    content = load_file(path, weights_only=True)
    if is_vissl_checkpoint(content):
        raise CheckpointError(
            f"{source or path} is a VISSL checkpoint, not a state dict: load it with from_checkpoint."
        )
    return check_state_dict(content, source or path)
