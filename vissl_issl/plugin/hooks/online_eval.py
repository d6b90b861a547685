"""Online evaluation during pretraining: cosine k-NN (and, if asked, the linear probe) of the
trunk's frozen features every N epochs, without changing what training computes.

``config.HOOKS.ONLINE_EVAL`` (not in VISSL's defaults: absent, the hook is off; on the command line
a new key takes a leading ``+``)::

    ENABLED: True
    EVERY_N_EPOCHS: 10    # after epochs N, 2N, ...
    KNN_K: 20             # neighbours; votes exp(s / 0.07), as tools/probe.py
    LINEAR_PROBE: null    # or fields of evaluation.linear_probe.ProbeConfig ({} = its defaults)
    TRAIN: {...}          # labelled images: the k-NN's neighbours, the probe's training rows
    TEST: {...}           # labelled images scored

``TRAIN`` and ``TEST`` are VISSL data blocks (the keys of ``config.DATA.<SPLIT>``, one data source
and one label source each) laid over VISSL's defaults of ``config.DATA.TEST`` by the launcher's
config inference (:func:`online_eval_config`), which also refuses bad values, naming the key,
before any process starts.

After every N-th training epoch (VISSL's checkpoint of that epoch already written) each rank
runs the trunk in eval mode, without gradients, over its shard of each split
(``DistributedSampler(shuffle=False)``); the shards are gathered into float16 features in dataset
order, the same rows and rounding as ``tools/probe.py``'s feature cache, and
the primary rank computes :func:`~vissl_issl.evaluation.knn.knn_accuracy` top-1/top-5 and, if
configured, :func:`~vissl_issl.evaluation.linear_probe.linear_probe`. It appends ``online_eval``
(with its wall-clock ``seconds``) to ``metrics.json``, logs one line and writes
``OnlineEval/*`` scalars to VISSL's TensorBoard when that hook is on.

Training is left bit-identical to a run without the hook: the trunk's train/eval flags are
restored module by module, eval mode leaves BatchNorm statistics alone, the model is called
directly (not through DDP, whose forward would broadcast buffers), the loss is not touched, and
Python's, NumPy's, torch's and CUDA's generator states are restored afterwards (data loaders draw
a base seed and the probe initialises layers from them).
"""

import contextlib
import copy
import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from vissl_issl.plugin.hooks.base import PluginHook
from vissl_issl.plugin.hooks.rng_state import generator_states, set_generator_states

import numpy as np
import torch
import torch.nn as nn
from classy_vision.generic.distributed_util import is_primary
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from vissl.config import AttrDict
from vissl.data import build_dataset
from vissl.utils.io import save_file

from vissl_issl.config import ConfigError, check_known_keys
from vissl_issl.evaluation.features import Features, check_range, trunk_output
from vissl_issl.evaluation.knn import DEFAULT_TEMPERATURE, knn_accuracy
from vissl_issl.evaluation.linear_probe import ProbeConfig, linear_probe
from vissl_issl.maths.distributed import gather_objects, rank, world_size

KEY = "config.HOOKS.ONLINE_EVAL"
SPLITS = ("TRAIN", "TEST")
DEFAULTS: Dict[str, Any] = {
    "ENABLED": False,
    "EVERY_N_EPOCHS": 1,
    "KNN_K": 20,
    "LINEAR_PROBE": None,
    "TRAIN": None,
    "TEST": None,
}


@functools.lru_cache(maxsize=None)
def vissl_test_block() -> Dict[str, Any]:
    """VISSL's defaults of ``config.DATA.TEST``."""
    import vissl.config

    defaults = OmegaConf.load(Path(vissl.config.__file__).with_name("defaults.yaml"))
    return OmegaConf.to_container(defaults.config.DATA.TEST, resolve=True)


def positive_int(block: Mapping[str, Any], name: str) -> int:
    value = block[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{KEY}.{name}={value!r} must be an integer >= 1")
    return value


def probe_config(block: Mapping[str, Any]) -> Optional[ProbeConfig]:
    """``LINEAR_PROBE`` as a :class:`ProbeConfig`, None when off."""
    fields = block["LINEAR_PROBE"]
    if fields is None:
        return None
    if not isinstance(fields, Mapping):
        raise ConfigError(f"{KEY}.LINEAR_PROBE={fields!r} must be null or a mapping of ProbeConfig fields")
    known = {field.name for field in dataclasses.fields(ProbeConfig)}
    check_known_keys(fields, dict.fromkeys(known), f"{KEY}.LINEAR_PROBE")
    try:
        return ProbeConfig(**fields)
    except ValueError as error:
        raise ConfigError(f"{KEY}.LINEAR_PROBE: {error}") from None


def data_block(block: Mapping[str, Any], split: str) -> AttrDict:
    """The split's block over VISSL's ``config.DATA.TEST`` defaults."""
    given = block[split]
    if not isinstance(given, Mapping):
        raise ConfigError(f"{KEY}.{split} must be a VISSL data block (the keys of config.DATA.{split}); got {given!r}")
    merged = AttrDict({**copy.deepcopy(vissl_test_block()), **given})
    for sources in ("DATA_SOURCES", "LABEL_SOURCES"):
        if len(merged[sources]) != 1:
            raise ConfigError(
                f"{KEY}.{split}.{sources}={list(merged[sources])} must name exactly one source: the online "
                "evaluation reads one labelled dataset per split"
            )
    return merged


def online_eval_config(config) -> None:
    """Checks ``config.HOOKS.ONLINE_EVAL`` (when present) and fills in its defaults and its data
    blocks, in place; a bad value raises ``ConfigError`` naming its key."""
    block = config.HOOKS.get("ONLINE_EVAL")
    if block is None:
        return
    check_known_keys(block, DEFAULTS, KEY)
    for name, value in DEFAULTS.items():
        block.setdefault(name, value)
    if not isinstance(block.ENABLED, bool):
        raise ConfigError(f"{KEY}.ENABLED={block.ENABLED!r} must be True or False")
    if not block.ENABLED:
        return
    positive_int(block, "EVERY_N_EPOCHS")
    positive_int(block, "KNN_K")
    probe_config(block)
    for split in SPLITS:
        block[split] = data_block(block, split)


def online_eval_enabled(config) -> bool:
    return bool((config.HOOKS.get("ONLINE_EVAL") or {}).get("ENABLED", False))


class LabelledImages(Dataset):
    """``(image, label)`` items of a VISSL dataset with one data source and one label source."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        item = self.dataset[index]
        return item["data"][0], int(item["label"][0])


def build_split(config, block: Mapping[str, Any], split: str) -> LabelledImages:
    """The split's dataset, built as VISSL builds ``config.DATA.<split>`` (data sources read the
    split's name: digits' and torchvision's TRAIN and TEST are different images)."""
    view = copy.deepcopy(config)
    view.DATA[split] = block[split]
    try:
        return LabelledImages(build_dataset(view, split))
    except Exception as error:  # VISSL's asserts say what is wrong but not in which block
        raise ConfigError(f"{KEY}.{split}: VISSL cannot build this dataset: {error!r}") from error


@contextlib.contextmanager
def generators_kept() -> Iterator[None]:
    state = generator_states()
    try:
        yield
    finally:
        set_generator_states(state)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    # Module by module: a frozen part may be kept in eval mode while the rest trains.
    modes = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for child, training in modes:
            child.training = training


@torch.no_grad()
def split_features(trunk: nn.Module, dataset: Dataset, batch_size: int, workers: int, name: str) -> Features:
    """Float16 features ``(N, d)`` and labels of ``dataset`` in its order, each rank computing
    its shard (call it on every rank; ``trunk`` in eval mode)."""
    device = next(trunk.parameters()).device
    # Padded to equal shards (FSDP needs every rank in every forward); the padding is cut below.
    sampler = DistributedSampler(dataset, world_size(), rank(), shuffle=False)
    loader = DataLoader(dataset, batch_size, sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda")
    features, labels = [], []
    start = 0
    for images, targets in loader:
        with torch.autocast("cuda", torch.float16, enabled=device.type == "cuda"):  # as the probe's cache
            batch = trunk_output(trunk, images.to(device, non_blocking=True)).float()
        check_range(batch, f"{name} (rank {rank()}'s shard)", start)
        start += len(batch)
        features.append(batch.cpu().numpy().astype(np.float16))
        labels.append(targets.numpy())
    shards = gather_objects((np.concatenate(features), np.concatenate(labels)))
    # Rank r holds rows r, r + W, r + 2W, ... of the padded order: interleave them back.
    rows = np.stack([shard for shard, _ in shards], axis=1).reshape(-1, shards[0][0].shape[1])
    row_labels = np.stack([shard for _, shard in shards], axis=1).reshape(-1)
    return Features(rows[: len(dataset)], row_labels[: len(dataset)])


def tensorboard_writer(task):
    """The writer of VISSL's TensorBoard hook, None when that hook is off."""
    from vissl.hooks.tensorboard_hook import SSLTensorboardHook

    return next((hook.tb_writer for hook in task.hooks if isinstance(hook, SSLTensorboardHook)), None)


class OnlineEvalHook(PluginHook):
    """Evaluates the trunk after every ``EVERY_N_EPOCHS``-th training epoch (module docstring)."""

    def __init__(self, block: Mapping[str, Any]):
        super().__init__()
        self.every = block["EVERY_N_EPOCHS"]
        self.k = block["KNN_K"]
        self.probe = probe_config(block)
        self.block = block
        self.datasets: Dict[str, LabelledImages] = {}

    def on_start(self, task) -> None:
        # Built before the first step, so that a dataset that cannot be read stops the run then.
        with generators_kept():
            self.datasets = {split: build_split(task.config, self.block, split) for split in SPLITS}
        if self.k > len(self.datasets["TRAIN"]):
            raise ConfigError(f"{KEY}.KNN_K={self.k} exceeds the {len(self.datasets['TRAIN'])} images of {KEY}.TRAIN")

    def on_phase_end(self, task) -> None:
        if not task.train or (task.train_phase_idx + 1) % self.every:
            return
        start = time.perf_counter()
        trunk = task.base_model.trunk
        workers = task.config.DATA.NUM_DATALOADER_WORKERS
        with generators_kept():
            with eval_mode(trunk):
                splits = {
                    split: split_features(trunk, dataset, self.block[split].BATCHSIZE_PER_REPLICA, workers, split)
                    for split, dataset in self.datasets.items()
                }
            if not is_primary():
                return
            record = self.evaluate(splits["TRAIN"], splits["TEST"])
        record["seconds"] = time.perf_counter() - start
        self.report(task, record)

    def evaluate(self, train: Features, test: Features) -> Dict[str, Any]:
        top1, top5 = knn_accuracy(train, test, [self.k])[self.k]
        record: Dict[str, Any] = {
            "train_count": len(train),
            "test_count": len(test),
            "knn": {"k": self.k, "temperature": DEFAULT_TEMPERATURE, "top1": top1, "top5": top5},
        }
        if self.probe is not None:
            result = linear_probe(train, test, self.probe)
            scores = {"top1": result.test_top1, "top5": result.test_top5}
            record[self.probe.head] = {**scores, "lr": result.lr, "wd": result.wd}
        return record

    def report(self, task, record: Dict[str, Any]) -> None:
        epoch = task.train_phase_idx + 1
        line = {"iteration": task.iteration, "phase_idx": task.phase_idx, "train_phase_idx": task.train_phase_idx}
        path = f"{task.checkpoint_folder}/metrics.json"
        save_file({**line, "online_eval": {"epoch": epoch, **record}}, path, verbose=False)
        scores = {f"knn_{top}": record["knn"][top] for top in ("top1", "top5")}
        if self.probe is not None:
            scores.update({f"{self.probe.head}_{top}": record[self.probe.head][top] for top in ("top1", "top5")})
        logging.info(
            f"Online evaluation after epoch {epoch} ({record['train_count']} train / {record['test_count']} test "
            f"images, k = {self.k}, {record['seconds']:.1f} s): "
            + ", ".join(f"{name} {value:.2f}%" for name, value in scores.items())
        )
        writer = tensorboard_writer(task)
        if writer is not None:
            for name, value in scores.items():
                writer.add_scalar(f"OnlineEval/{name}", value, global_step=task.train_phase_idx)
