"""scikit-learn's 8x8 handwritten digits, split and upsampled for pretraining and probing.

The 1797 images of :func:`sklearn.datasets.load_digits` ship inside the scikit-learn wheel, so this
source needs no download, no ``DATA_PATHS`` and no dataset catalog file. A fixed stratified split
(``train_test_split(test_size=0.2, stratify=labels, random_state=0)``) gives **TRAIN: 1437** and
**TEST: 360** images, every class in the same proportion as in the full set; each split is kept in
the original ``load_digits`` order (:func:`split_indices`). Pixels 0..16 are scaled to 0..255,
upsampled bilinearly from 8x8 to ``config.DATA.<SPLIT>.DIGITS_IMAGE_SIZE`` (default 16) and the grey
channel is replicated into an RGB PIL image.

Registered with VISSL as the data source ``sklearn_digits`` by :mod:`vissl_issl.plugin.data`.
"""

import functools
import importlib.util
from pathlib import Path
from typing import Any, List, Mapping, Tuple

import numpy as np
from PIL import Image

SOURCE_NAME = "sklearn_digits"
DATASET_NAME = "sklearn_digits"
SPLITS = ("TRAIN", "TEST")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
IMAGE_SIZE_KEY = "DIGITS_IMAGE_SIZE"
DEFAULT_IMAGE_SIZE = 16
NATIVE_SIZE = 8
MAX_PIXEL = 16


def check_split(split: str) -> str:
    """VISSL's split name (``TRAIN``/``TEST``) for ``split``, in any case."""
    if split.upper() not in SPLITS:
        raise ValueError(
            f"{SOURCE_NAME} has the splits {list(SPLITS)} (config.DATA.TRAIN / config.DATA.TEST); got split {split!r}."
        )
    return split.upper()


@functools.lru_cache(maxsize=None)
def split_indices(split: str) -> np.ndarray:
    """Indices into ``load_digits()`` of one split, ascending and read-only."""
    # sklearn is imported here, not at module level: importing it takes ~1 s and every process that
    # imports the plugin (launchers, ranks, tools) would pay it, most without reading a digit.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    train, test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    indices = np.sort(train if check_split(split) == "TRAIN" else test)
    indices.flags.writeable = False
    return indices


@functools.lru_cache(maxsize=None)
def load_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of one split: uint8 ``N x 8 x 8`` in 0..255 and int64 ``N``, read-only."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    indices = split_indices(split)
    images = np.rint(digits.images[indices] * (255 / MAX_PIXEL)).astype(np.uint8)
    labels = digits.target[indices].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_image_size(cfg: Mapping[str, Any], split: str) -> int:
    size = cfg["DATA"][split].get(IMAGE_SIZE_KEY, DEFAULT_IMAGE_SIZE)
    # bool is an int subclass: DIGITS_IMAGE_SIZE: True would otherwise mean 1 px.
    if isinstance(size, bool) or not isinstance(size, int) or size < NATIVE_SIZE:
        raise ValueError(
            f"config.DATA.{split}.{IMAGE_SIZE_KEY} must be an integer >= {NATIVE_SIZE} (the digits "
            f"are {NATIVE_SIZE}x{NATIVE_SIZE} and only upsampled); got {size!r}."
        )
    return size


class DigitsDataset:
    """One split of the digits, built by ``GenericSSLDataset`` as
    ``DigitsDataset(cfg, path, split, dataset_name, data_source)``; ``path`` and ``dataset_name``
    come from the catalog entry and are not needed."""

    def __init__(self, cfg: Mapping[str, Any], path: str, split: str, dataset_name: str, data_source: str):
        self.split = check_split(split)
        self.image_size = read_image_size(cfg, self.split)
        self.images, self.labels = load_split(self.split)

    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        return self.num_samples()

    def __getitem__(self, idx: int) -> Tuple[Image.Image, bool]:
        grey = Image.fromarray(self.images[idx])
        size = (self.image_size, self.image_size)
        return grey.resize(size, Image.Resampling.BILINEAR).convert("RGB"), True

    def get_labels(self) -> List[int]:
        """Class labels 0..9, read by VISSL's ``torchvision_dataset`` label source."""
        return self.labels.tolist()


def bundled_data_file() -> str:
    """The CSV inside the scikit-learn wheel that ``load_digits`` reads, found without importing
    sklearn (the plugin registers it at import)."""
    return str(Path(importlib.util.find_spec("sklearn").origin).parent / "datasets" / "data" / "digits.csv.gz")
