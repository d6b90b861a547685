"""Load a VISSL compressor checkpoint and run its ``entropy_bottleneck`` head over a dataset.

The model is VISSL's ``build_model(config.MODEL, config.OPTIMIZER)`` with the checkpoint's
``classy_state_dict.base_model.model`` ``{"trunk", "heads"}`` loaded into it. The coder's CDF
tables (CompressAI buffers whose shapes depend on the last ``update()``) are not taken from the
checkpoint: :func:`load_model` skips them and calls the head's ``update()``, which rebuilds them
from the learned parameters (spec A.8, "coder lifecycle").

The head's input is what it sees in the model's forward: the trunk features passed through the
heads before it (VISSL chains heads when there is one trunk output), or the trunk features
themselves for a ``heads_on_crops_model`` with ``HEAD_CROPS`` (its heads run side by side).

Everything runs in eval mode, fp32 (no autocast: the coder must see exactly the codes that the
eval forward rounds), without gradients.
"""

import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from vissl_issl.plugin.heads.entropy_bottleneck import EntropyBottleneckHead

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from vissl.config import AttrDict
from vissl.models import build_model
from vissl.models.model_helpers import get_trunk_output_feature_names

from vissl_issl.architectures.packed_outputs import split_bottleneck
from vissl_issl.checkpoints import CheckpointError, check_fits, describe_checkpoint, describe_run, read_vissl_model
from vissl_issl.evaluation.features import trunk_output
from vissl_issl.maths.rate import MalformedRecord

# CompressAI's coder tables, rebuilt by update(): EntropyBottleneck / GaussianConditional buffers.
CODER_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def find_bottleneck(model: nn.Module) -> int:
    """Index in ``model.heads`` of the single ``entropy_bottleneck`` head."""
    indices = [index for index, head in enumerate(model.heads) if isinstance(head, EntropyBottleneckHead)]
    if len(indices) != 1:
        names = [type(head).__name__ for head in model.heads]
        raise ValueError(f"the model needs exactly one entropy_bottleneck head; its heads are {names}")
    return indices[0]


def is_coder_buffer(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in CODER_BUFFERS


def load_heads(heads: nn.ModuleList, state: Mapping[str, torch.Tensor], checkpoint: str) -> None:
    """Load every head parameter and buffer except the coder tables; anything else missing or
    unexpected is an error (a checkpoint of another architecture)."""
    kept = {key: value for key, value in state.items() if not is_coder_buffer(key)}
    missing, unexpected = heads.load_state_dict(kept, strict=False)
    missing = [key for key in missing if not is_coder_buffer(key)]
    if missing or unexpected:
        raise CheckpointError(
            f"{checkpoint}: the heads do not match the config (missing {missing}, unexpected {unexpected}); "
            f"{describe_checkpoint(checkpoint)}."
        )


def load_model(checkpoint: str, config: AttrDict) -> nn.Module:
    """The pretraining model with the checkpoint's trunk and heads, in eval mode, coder updated.
    A config without an ``entropy_bottleneck`` head, or weights that do not fit its model, raise a
    ``CheckpointError`` naming the checkpoint, what it trained and what was expected."""
    torch.manual_seed(config.SEED_VALUE)
    model = build_model(config.MODEL, config.OPTIMIZER)
    run = describe_run(config)
    if not any(isinstance(head, EntropyBottleneckHead) for head in model.heads):
        raise CheckpointError(
            f"{checkpoint}: the config ({run}) has no entropy_bottleneck head to code with; compression takes "
            f"the checkpoint of a compressor (a recipe with one, e.g. pretrain/feature_compressor/); "
            f"{describe_checkpoint(checkpoint)}."
        )
    state = read_vissl_model(checkpoint)
    check_fits(model.trunk.state_dict(), state.trunk, "trunk", checkpoint, f"the trunk of the config, {run}")
    model.trunk.load_state_dict(state.trunk)
    load_heads(model.heads, state.heads, checkpoint)
    model.eval()
    model.heads[find_bottleneck(model)].update()
    return model


def head_inputs(model: nn.Module, index: int, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(trunk features, input of heads[index])`` of a batch, as the model's forward computes them
    (a frozen trunk, VISSL's FeatureExtractorModel, needs the feature names the model passes)."""
    names = get_trunk_output_feature_names(model.model_config)
    features = trunk_output(lambda batch: model.trunk(batch, names), images)
    inputs = features
    if getattr(model, "head_crops", None) is None:
        for head in model.heads[:index]:
            inputs = head(inputs)
    return features, inputs


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Encoded:
    """A split through the trunk and the bottleneck, in dataset order."""

    features: np.ndarray  # (N, d) float32 trunk features
    z: np.ndarray  # (N, k) float32 codes before quantisation
    z_hat: np.ndarray  # (N, k) float32 quantised codes of the eval forward
    estimated_bits: np.ndarray  # (N,) -log2 q(z_hat) under the learned prior, eval forward
    labels: np.ndarray  # (N,) int64
    records: Optional[List[bytes]]  # one entropy-coded byte string per image (None: not coded)
    encode_seconds: float  # trunk + heads before the bottleneck + compress, data loading excluded


def concat(parts: List[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).float().cpu().numpy()


@torch.no_grad()
def encode_dataset(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, num_workers: int = 0, compress: bool = True
) -> Encoded:
    """Run ``model``'s trunk and bottleneck over ``dataset`` (items ``(image tensor, label)``):
    features, codes, eval-forward ``z_hat`` and estimated bits, and (``compress``) the records."""
    index = find_bottleneck(model)
    head = model.heads[index]
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    outputs: Dict[str, List[torch.Tensor]] = {"features": [], "z": [], "z_hat": [], "bits": [], "labels": []}
    records: List[bytes] = []
    seconds = 0.0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        synchronize(device)
        start = time.perf_counter()
        features, inputs = head_inputs(model, index, images)
        if compress:
            records.extend(head.compress(inputs))
        synchronize(device)
        seconds += time.perf_counter() - start
        coded = split_bottleneck(head(inputs))
        for key, value in (("features", features), ("z", coded.z), ("z_hat", coded.z_hat), ("bits", coded.bits)):
            outputs[key].append(value.float().cpu())
        outputs["labels"].append(torch.as_tensor(labels, dtype=torch.int64))
    if not outputs["labels"]:
        raise ValueError("the dataset is empty")
    return Encoded(
        features=concat(outputs["features"]),
        z=concat(outputs["z"]),
        z_hat=concat(outputs["z_hat"]),
        estimated_bits=concat(outputs["bits"]).reshape(-1),
        labels=torch.cat(outputs["labels"]).numpy(),
        records=records if compress else None,
        encode_seconds=seconds,
    )


def code_dim(model: nn.Module) -> int:
    """``k``: the length of the codes of the model's ``entropy_bottleneck`` head."""
    return model.heads[find_bottleneck(model)].log_scale.numel()


@torch.no_grad()
def decode_records(model: nn.Module, records: List[bytes], batch_size: int = 256) -> Tuple[np.ndarray, float]:
    """``(z_hat (N, k) float32, seconds)``: the bottleneck's ``decompress`` over ``records``. A record
    its coder cannot have written raises :class:`MalformedRecord` with its index in ``records``."""
    head = model.heads[find_bottleneck(model)]
    device = next(model.parameters()).device
    parts, seconds = [], 0.0
    for start in range(0, len(records), batch_size):
        synchronize(device)
        began = time.perf_counter()
        try:
            z_hat = head.decompress(records[start : start + batch_size])
        except MalformedRecord as error:
            raise MalformedRecord(start + error.index, error.problem) from None
        synchronize(device)
        seconds += time.perf_counter() - began
        parts.append(z_hat.float().cpu().reshape(len(z_hat), -1))
    if not parts:
        raise ValueError("no records to decode")
    return torch.cat(parts).numpy(), seconds


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")
