"""Checks of what a user hands the launcher, each failing with a ``ConfigError`` that names the
key or the file, before any process starts:

- :func:`check_max_broken_fractions`: ``config.DATA.<SPLIT>.MAX_BROKEN_FRACTION`` is a fraction
  (config inference, :func:`vissl_issl.plugin.inference.infer_and_check`);
- :func:`check_loss_overrides`: no override sets a key of a loss other than ``config.LOSS.name``,
  which would have no effect (composition, :func:`vissl_issl.plugin.launcher.compose`);
- :func:`check_data_paths`: the folders and files of the splits a run reads exist and hold images
  (the launcher, before it starts the ranks).
"""

import os
from pathlib import Path
from typing import List, Sequence, Tuple

from vissl_issl.plugin.hooks.broken_images import SPLITS, max_broken_fraction

from hydra.core.override_parser.overrides_parser import OverridesParser
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from vissl.data import VisslDatasetCatalog

from vissl_issl.config import ConfigError

# Sources whose path is an image folder, a file list, or a root that torchvision reads.
FOLDER_SOURCE, FILELIST_SOURCE = "disk_folder", "disk_filelist"
ROOT_SOURCES = ("torchvision_dataset", "stl10_unlabeled")
LISTED = 5  # names an error lists


def check_max_broken_fractions(config) -> None:
    """Each split's threshold (:func:`~vissl_issl.plugin.hooks.broken_images.max_broken_fraction`)."""
    for split in SPLITS.values():
        max_broken_fraction(config.DATA, split)


def check_loss_overrides(overrides: Sequence[str], config) -> None:
    """Refuses an override of ``config.LOSS.<loss>...`` for a loss other than ``config.LOSS.name``.

    Only overrides are checked: VISSL's defaults hold a block for each of its losses, and recipes
    compose parts that bring the blocks of related losses (C-BYOL's recipes BYOL's)."""
    used = config.LOSS.name
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        parts = override.key_or_group.split(".")
        if override.is_delete() or parts[:2] != ["config", "LOSS"] or len(parts) < 3 or parts[2] in ("name", used):
            continue
        raise ConfigError(
            f"{override.input_line}: config.LOSS.{parts[2]} has no effect, the loss is config.LOSS.name={used}; "
            f"set config.LOSS.{used}.<key>, or config.LOSS.name={parts[2]} to train that loss"
        )


def used_splits(config) -> List[str]:
    """The splits VISSL builds datasets for (``SelfSupervisionTask.set_available_splits``)."""
    return (["TEST"] if config.TEST_MODEL else []) + ([] if config.TEST_ONLY else ["TRAIN"])


def check_data_paths(config) -> None:
    """Every path a used split reads: an image folder (``disk_folder``) has class sub-folders each
    holding an image, a file list (``disk_filelist``) exists, a torchvision root exists. A split
    without ``DATA_PATHS`` takes its paths from VISSL's dataset catalog, which must know its
    ``DATASET_NAMES``. Other sources (``sklearn_digits``, ``synthetic``, a user's) are not checked."""
    for split in used_splits(config):
        data = config.DATA[split]
        for index, source in enumerate(data.DATA_SOURCES):
            if source not in (FOLDER_SOURCE, FILELIST_SOURCE, *ROOT_SOURCES):
                continue
            if data.DATA_PATHS:
                path, key = data.DATA_PATHS[index], f"config.DATA.{split}.DATA_PATHS[{index}]"
            else:
                path, key = catalog_path(data, split, index)
            check_path(Path(path), source, key)


def catalog_path(data, split: str, index: int) -> Tuple[str, str]:
    """``(path, description)`` of a split's data in VISSL's dataset catalog."""
    name = data.DATASET_NAMES[index]
    if not VisslDatasetCatalog.has_data(name):
        raise ConfigError(
            f"config.DATA.{split}.DATA_PATHS is empty and config.DATA.{split}.DATASET_NAMES[{index}]={name!r} is not "
            f"in VISSL's dataset catalog: set config.DATA.{split}.DATA_PATHS=[<path>]"
        )
    path = VisslDatasetCatalog.get(name)["train" if split == "TRAIN" else "val"][0]
    return path, f"the {split} path of {name!r} in VISSL's dataset catalog (config.DATA.{split}.DATA_PATHS is empty)"


def check_path(path: Path, source: str, key: str) -> None:
    if source == FILELIST_SOURCE:
        if not path.is_file():
            raise ConfigError(f"{key}={path}: no such file ({source} reads a .npy list of image files)")
    elif not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise ConfigError(f"{key}={path}: {what} ({source} reads a folder)")
    elif source == FOLDER_SOURCE:
        check_image_folder(path, key)


def check_image_folder(root: Path, key: str) -> None:
    """``root`` as torchvision's ``ImageFolder`` (VISSL's ``disk_folder``) reads it: class
    sub-folders, each with at least one image file somewhere below it."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    layout = f"disk_folder reads <folder>/<class>/<image> ({', '.join(IMG_EXTENSIONS)})"
    if not classes:
        images = [name for name in os.listdir(root) if has_file_allowed_extension(name, IMG_EXTENSIONS)]
        found = f"it holds {len(images)} image file(s) directly" if images else "it holds no image"
        raise ConfigError(f"{key}={root} has no class sub-folder: {layout}; {found}")
    empty = [name for name in classes if not holds_image(root / name)]
    if len(empty) == len(classes):
        raise ConfigError(f"{key}={root} holds no image in its {len(classes)} class folder(s): {layout}")
    if empty:
        more = f" and {len(empty) - LISTED} more" if len(empty) > LISTED else ""
        raise ConfigError(
            f"{key}={root}: class folder(s) {', '.join(empty[:LISTED])}{more} hold no image, which ImageFolder "
            f"refuses; remove them or add images ({layout})"
        )


def holds_image(folder: Path) -> bool:
    """Whether any file below ``folder`` has an image extension (sub-folders followed, as
    ``ImageFolder`` does). Stops at the first: a directory is read only as far as its first image,
    so an ImageNet-sized folder costs one short read per class."""
    folders = [folder]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    folders.append(Path(entry.path))
                elif has_file_allowed_extension(entry.name, IMG_EXTENSIONS):
                    return True
    return False
