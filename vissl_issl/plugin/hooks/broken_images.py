"""Images that could not be read or decoded, counted per phase and per rank, logged, written to
``metrics.json`` and held to ``config.DATA.<SPLIT>.MAX_BROKEN_FRACTION``.

The plugin's image sources (:mod:`vissl_issl.plugin.disk_images`) give such an image a stand-in and
``data_valid`` -1. This hook, always on (:func:`vissl_issl.plugin.hooks.hook_generator`):

- counts on each rank the distinct samples of each batch (``data_idx``: the views of an image
  share it) and the broken ones among them;
- stops a rank as soon as its own count exceeds what the threshold allows for the whole phase, so
  that a badly broken dataset stops within its first batches rather than after an epoch;
- at the phase's end gathers every rank's counts; the primary logs one line (count, share, counts
  per rank, a sample of the files) when any is broken and appends ``<train|test>_broken_images`` to
  ``metrics.json``; then every rank raises :class:`~vissl_issl.data.broken_images.BrokenImagesError`
  when the share exceeds the threshold, before the checkpoint hook saves the phase.

VISSL's ``siamese_collator`` and ``patch_and_image_collator`` (Jigsaw, PIRL) keep neither
``data_idx`` nor a -1 ``data_valid``: with them nothing is counted.

``MAX_BROKEN_FRACTION`` (default 0.001; 0 refuses any broken image) is not in VISSL's defaults: on
the command line it takes a leading ``+`` (``+config.DATA.TRAIN.MAX_BROKEN_FRACTION=0``).
"""

import logging
from typing import Any, Dict, List, Mapping, Sequence

from vissl_issl.plugin.disk_images import DiskImages
from vissl_issl.plugin.hooks.base import PluginHook

import torch
from classy_vision.generic.distributed_util import is_primary
from vissl.utils.io import save_file

from vissl_issl.config import ConfigError
from vissl_issl.data.broken_images import (
    DEFAULT_MAX_FRACTION,
    SAMPLE_SIZE,
    allowed_broken,
    check_max_fraction,
    sample_listing,
    too_many_broken,
)
from vissl_issl.maths.distributed import gather_objects

SPLITS = {"train": "TRAIN", "test": "TEST"}  # VISSL's phase types -> config.DATA splits


def key(split: str) -> str:
    return f"config.DATA.{split}.MAX_BROKEN_FRACTION"


def max_broken_fraction(data_config, split: str) -> float:
    """``config.DATA.<split>.MAX_BROKEN_FRACTION``, default 0.001; anything but a fraction in
    [0, 1] raises ``ConfigError`` naming the key."""
    try:
        return check_max_fraction(data_config[split].get("MAX_BROKEN_FRACTION", DEFAULT_MAX_FRACTION), key(split))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def sample_names(dataset, indices: Sequence[int]) -> List[str]:
    """The files of samples ``indices`` (``data_idx``) of a VISSL ``GenericSSLDataset``; ``sample
    <i>`` where its source has no files."""
    source = dataset.data_objs[0]
    if not isinstance(source, DiskImages):
        return [f"sample {index}" for index in indices]
    # GenericSSLDataset under DATA_LIMIT: data_idx indexes its subset, a seeded choice that the
    # loader's workers make for themselves; VISSL 0.1.6 keeps it in private attributes.
    if dataset.data_limit >= 0 and dataset._can_random_subset_data_sources():
        if not dataset._subset_initialized:
            dataset._init_image_and_label_subset()
        indices = [int(dataset.image_and_label_subset[index]) for index in indices]
    return source.image_paths(indices)


class BrokenImagesHook(PluginHook):
    """Counts, reports and limits the broken images of each phase (see the module's docstring)."""

    def __init__(self, max_fractions: Mapping[str, float]):
        """``max_fractions``: the threshold of each phase type (``train``, ``test``)."""
        super().__init__()
        self.max_fractions = dict(max_fractions)
        self.broken: List[int] = []  # this rank's broken data_idx in this phase
        self.seen = 0  # this rank's samples in this phase
        self.allowed = 0

    def on_phase_start(self, task) -> None:
        self.broken, self.seen = [], 0
        phase = phase_type(task)
        self.allowed = allowed_broken(self.max_fractions[phase], task.num_phase_samples(phase))

    def on_forward(self, task) -> None:
        sample = task.last_batch.sample  # VISSL's collated lists, one entry per data source
        if "data_idx" not in sample:  # VISSL's siamese and patch collators (Jigsaw, PIRL) drop it
            return
        indices, valid = sample["data_idx"][0], sample["data_valid"][0]
        # On a GPU these wait for the forward; VISSL's step waits for its loss right after anyway.
        self.seen += len(torch.unique(indices))
        self.broken += torch.unique(indices[valid < 0]).tolist()
        if len(self.broken) > self.allowed:
            phase = phase_type(task)
            raise too_many_broken(
                len(self.broken), task.num_phase_samples(phase), f"{phase} images of phase {task.phase_idx}",
                self.max_fractions[phase], key(SPLITS[phase]),
                sample_names(task.datasets[phase], self.broken[:SAMPLE_SIZE]),
                complete=False,
            )  # fmt: skip

    def on_phase_end(self, task) -> None:
        phase = phase_type(task)
        per_rank = gather_objects((len(self.broken), self.seen, self.broken[:SAMPLE_SIZE]))
        counts = [count for count, _, _ in per_rank]
        broken, images = sum(counts), sum(seen for _, seen, _ in per_rank)
        sampled = [index for _, _, indices in per_rank for index in indices][:SAMPLE_SIZE]
        names = sample_names(task.datasets[phase], sampled) if sampled else []
        max_fraction = self.max_fractions[phase]
        if is_primary():
            self.report(task, phase, {
                "broken": broken, "images": images, "fraction": broken / max(images, 1), "per_rank": counts,
                "max_fraction": max_fraction, "sample": names,
            })  # fmt: skip
        if broken > allowed_broken(max_fraction, images):
            subject = f"{phase} images of phase {task.phase_idx}"
            raise too_many_broken(broken, images, subject, max_fraction, key(SPLITS[phase]), names, complete=True)

    @staticmethod
    def report(task, phase: str, record: Dict[str, Any]) -> None:
        """One ``metrics.json`` line per phase, as VISSL's meters write theirs, and one log line
        when any image is broken."""
        line = {"iteration": task.iteration, "phase_idx": task.phase_idx, "train_phase_idx": task.train_phase_idx}
        save_file({**line, f"{phase}_broken_images": record}, f"{task.checkpoint_folder}/metrics.json", verbose=False)
        if record["broken"]:
            logging.warning(
                f"{phase} phase {task.phase_idx}: {record['broken']} of {record['images']} images "
                f"({record['fraction']:.3%}) could not be read or decoded and were replaced (per rank "
                f"{record['per_rank']}; {key(SPLITS[phase])}={record['max_fraction']:g}): "
                f"{sample_listing(record['sample'], record['broken'])}"
            )


def phase_type(task) -> str:
    return "train" if task.train else "test"


def broken_images_hook(cfg) -> BrokenImagesHook:
    """The hook with the thresholds of ``cfg``'s TRAIN and TEST splits."""
    return BrokenImagesHook({phase: max_broken_fraction(cfg.DATA, split) for phase, split in SPLITS.items()})
