"""Device-side augmentation in VISSL (:mod:`vissl_issl.data.device_augmentation`). One key opts a
recipe in::

    DATA:
      TRAIN:
        DEVICE_AUGMENTATION: True   # default False; on the command line +config.DATA.TRAIN.DEVICE_AUGMENTATION=True
                                    # (without the + where the recipe sets it, as the digits part does)

At launch, :func:`infer_device_augmentation` (the plugin's config inference) splits the recipe's
``TRANSFORMS``: ``config.DATA.TRAIN.TRANSFORMS`` becomes the worker part (the geometric transforms,
then ``PILToTensor``) and ``config.DATA.TRAIN.DEVICE_TRANSFORMS``, an inferred key that the dumped
``train_config.yaml`` shows, the device part (the photometric transforms, then ``Normalize``).

Where the device part runs. VISSL's ``standard_train_step`` reads the batch with
``next(task.data_iterator)`` and calls the model right after; no hook event lies between the two
(``on_forward`` comes after the forward). On a GPU ``task.data_iterator`` is VISSL's or classy's
GPU wrapper of the data loader, so its batches are already on the device. At the start of every
train phase, after VISSL made the phase's iterator, :class:`DeviceAugmentationHook` wraps it: each
batch's input is augmented on the device as the train step reads it, before the forward. The
model, its DDP or FSDP wrapping and the train step stay VISSL's, and ``uint8`` crosses to the
device. VISSL's ``read_sample`` time now includes the augmentation.

Random state. Each rank's generator is seeded from ``(SEED_VALUE, rank)`` through NumPy's
``SeedSequence``. VISSL seeds its global generators from ``(SEED_VALUE + rank) * num_epochs``; a
generator seeded from ``SEED_VALUE + rank`` would repeat their draws in some runs. Like
:class:`~vissl_issl.plugin.hooks.rng_state.RngStateHook`, the hook snapshots every rank's generator
state at each instant VISSL checkpoints and restores the rank's own on resume. The generator draws
nothing between a checkpoint and the next train step, so a resumed run draws what the uninterrupted
run would have drawn, also after a resume in the middle of a phase. The hook must run before VISSL's
checkpoint hook.
"""

from typing import Any, Callable, Dict, Iterator, List, Sequence, Union

from vissl_issl.plugin.hooks.base import PluginHook
from vissl_issl.plugin.hooks.rng_state import own_rank_state

import numpy as np
import torch
from classy_vision.hooks import ClassyHook

from vissl_issl.config import ConfigError, count_crops
from vissl_issl.data.device_augmentation import DeviceAugmentation, split_transforms
from vissl_issl.maths.distributed import gather_objects, rank

ENABLE = "DEVICE_AUGMENTATION"
DEVICE_TRANSFORMS = "DEVICE_TRANSFORMS"
KEY = "config.DATA.TRAIN"
STACKED_COLLATORS = ("simclr_collator", "default_collate")  # the views in one tensor, crop-major
COLLATORS = ("multicrop_collator", *STACKED_COLLATORS)

Batch = Dict[str, Any]
Views = Union[torch.Tensor, Sequence[torch.Tensor]]


def device_augmentation_enabled(config) -> bool:
    """``config.DATA.TRAIN.DEVICE_AUGMENTATION``, checked (``config``: VISSL's whole config)."""
    enabled = config.DATA.TRAIN.get(ENABLE, False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{KEY}.{ENABLE}={enabled!r} must be True or False")
    return enabled


def infer_device_augmentation(config) -> None:
    """Splits ``config.DATA.TRAIN.TRANSFORMS`` into the workers' and the device's parts when the
    recipe opts in (module docstring); leaves a recipe without the key unchanged."""
    train = config.DATA.TRAIN
    if DEVICE_TRANSFORMS in train:
        raise ConfigError(
            f"{KEY}.{DEVICE_TRANSFORMS} is inferred from {KEY}.TRANSFORMS when {KEY}.{ENABLE}=True; do not set it"
        )
    if not device_augmentation_enabled(config):
        return
    collator = train.COLLATE_FUNCTION
    if collator not in COLLATORS:
        raise ConfigError(f"{KEY}.COLLATE_FUNCTION={collator!r} with {KEY}.{ENABLE}=True must be one of {COLLATORS}")
    views = count_crops(train.TRANSFORMS)
    if collator == "default_collate" and views != 1:
        raise ConfigError(
            f"{KEY}.COLLATE_FUNCTION='default_collate' with {KEY}.{ENABLE}=True takes one view per image, "
            f"{KEY}.TRANSFORMS makes {views}; use multicrop_collator or simclr_collator"
        )
    try:
        worker, device = split_transforms(train.TRANSFORMS, f"{KEY}.TRANSFORMS")
    except ValueError as error:
        raise ConfigError(f"{error} ({KEY}.{ENABLE}=True)") from error
    train.TRANSFORMS = worker
    train[DEVICE_TRANSFORMS] = device


def rank_seed(seed: int, rank: int) -> int:
    """A 32-bit seed for ``rank``'s generator, apart from the seeds of VISSL's ``set_seeds``."""
    return int(np.random.SeedSequence(seed, spawn_key=(rank,)).generate_state(1)[0])


class AugmentedBatches:
    """VISSL's data iterator whose batches have each input entry passed through ``augment`` as they
    are read (``input_keys``: ``task.data_and_label_keys["input"]``; each key holds one entry per
    data source)."""

    def __init__(self, batches: Iterator[Batch], augment: Callable[[Views], Views], input_keys: Sequence[str]):
        self.batches, self.augment, self.input_keys = batches, augment, list(input_keys)

    def __iter__(self) -> "AugmentedBatches":
        return self

    def __len__(self) -> int:
        return len(self.batches)  # classy's num_batches_per_phase

    def __next__(self) -> Batch:
        batch = next(self.batches)
        for key in self.input_keys:
            batch[key] = [self.augment(views) for views in batch[key]]
        return batch


class DeviceAugmentationHook(PluginHook):
    """Runs the device part on every train batch and keeps its generator states in checkpoints
    (module docstring). ``transforms``: ``config.DATA.TRAIN.DEVICE_TRANSFORMS``; ``num_crops``: the
    views per image; ``seed``: ``config.SEED_VALUE``."""

    def __init__(self, transforms: Sequence[Dict[str, Any]], num_crops: int, seed: int):
        super().__init__()
        self.transforms, self.num_crops, self.seed = list(transforms), num_crops, seed
        self.augmentation = DeviceAugmentation(self.transforms, key=f"{KEY}.{DEVICE_TRANSFORMS}")
        self.snapshot: Dict[str, Any] = {}

    def augment(self, views: Views) -> Views:
        """``multicrop_collator``'s list of per-crop tensors, or the stacked views of the other collators."""
        if isinstance(views, torch.Tensor):
            return self.augmentation.augment_stacked(views, self.num_crops)
        return self.augmentation.augment_views(views)

    def on_start(self, task) -> None:
        # Here, not in __init__: VISSL builds the hooks before it starts torch.distributed.
        self.augmentation.generator.manual_seed(rank_seed(self.seed, rank()))
        # VISSL saves every hook's get_classy_state() in its checkpoints but never hands it back.
        checkpoint = getattr(task, "checkpoint", None)
        if checkpoint is not None:
            self.restore(checkpoint["classy_state_dict"].get("hooks", {}).get(self.name(), {}))

    def on_phase_start(self, task) -> None:
        if task.train:
            task.data_iterator = AugmentedBatches(task.data_iterator, self.augment, task.data_and_label_keys["input"])

    def on_step(self, task) -> None:
        frequency = task.config["CHECKPOINT"]["CHECKPOINT_ITER_FREQUENCY"]
        if task.train and frequency > 0 and task.iteration % frequency == 0:
            self.snap()

    def on_phase_end(self, task) -> None:
        if task.train:
            self.snap()

    def snap(self) -> None:
        self.snapshot = {"ranks": gather_objects(self.augmentation.generator_state())}

    def get_classy_state(self) -> Dict[str, Any]:
        return self.snapshot

    def restore(self, state: Dict[str, Any]) -> None:
        own = own_rank_state(state, "device augmentation's generator states")
        if own is not None:
            self.augmentation.set_generator_state(own)


def device_augmentation_hooks(cfg) -> List[ClassyHook]:
    """The hook when ``config.DATA.TRAIN.DEVICE_AUGMENTATION`` is set, else none (``cfg``: VISSL's config)."""
    if not device_augmentation_enabled(cfg):
        return []
    train = cfg.DATA.TRAIN
    if DEVICE_TRANSFORMS not in train:
        raise ConfigError(
            f"{KEY}.{ENABLE}=True but {KEY}.{DEVICE_TRANSFORMS} is missing: the plugin's launcher infers it "
            "(vissl_issl.plugin.launcher, tools/run_distributed_engines.py)"
        )
    return [DeviceAugmentationHook(train[DEVICE_TRANSFORMS], count_crops(train.TRANSFORMS), cfg.SEED_VALUE)]
