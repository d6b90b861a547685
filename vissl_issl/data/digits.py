"""``sklearn_digits``: scikit-learn's 8x8 handwritten digits as a VISSL data source.

The 1797 images of :func:`sklearn.datasets.load_digits` ship inside the scikit-learn wheel, so this
source needs no download, no ``DATA_PATHS`` and no dataset catalog file. A fixed stratified split
(``train_test_split(test_size=0.2, stratify=labels, random_state=0)``) gives **TRAIN: 1437** and
**TEST: 360** images, every class in the same proportion as in the full set; each split is kept in
the original ``load_digits`` order (:func:`split_indices`). Pixels 0..16 are scaled to 0..255,
upsampled bilinearly from 8x8 to ``config.DATA.<SPLIT>.DIGITS_IMAGE_SIZE`` (default 16) and the grey
channel is replicated into an RGB PIL image.

Config (TRAIN and TEST alike)::

    DATA_SOURCES: [sklearn_digits]
    DATASET_NAMES: [sklearn_digits]
    LABEL_SOURCES: [torchvision_dataset]   # class labels; [] for pretraining (sample_index)
    DIGITS_IMAGE_SIZE: 16                  # optional; on the CLI it needs a leading '+'

Why these keys. VISSL 0.1.6 has no data-source or label-source registry:

- Data sources are the plain dict ``vissl.data.DATASET_SOURCE_MAP``, which :func:`register` fills.
- ``dataset_catalog.get_data_files`` special-cases only ``synthetic``; every other source needs
  ``DATA_PATHS`` or a catalog entry for its ``DATASET_NAMES``, and even with ``DATA_PATHS`` it looks
  the name up in the catalog whenever ``LABEL_PATHS`` is empty. :func:`register` therefore adds a
  catalog entry ``sklearn_digits`` whose data path is the bundled ``digits.csv.gz`` (informative
  only: the source reads through ``load_digits``) and whose label path is empty, so no label file
  is ever passed on.
- ``GenericSSLDataset.load_labels`` hard-codes its label sources. The ``torchvision_dataset``
  branch is the only one that asks the data object itself (``get_labels()``) and never checks the
  object's type, so ``LABEL_SOURCES: [torchvision_dataset]`` gives this source its real labels
  with no patching of VISSL. (``synthetic`` would give all-zero labels, ``disk_folder`` asserts the
  data source is ``disk_folder``, ``disk_filelist`` wants ``.npy`` files.) With ``LABEL_SOURCES:
  []`` VISSL forces ``LABEL_TYPE: sample_index``, which is what pretraining wants.

``DATA_LIMIT`` and ``DATA_LIMIT_SAMPLING`` (balanced too) work: the source is in
``DATA_SOURCES_WITH_SUBSET_SUPPORT``, so ``GenericSSLDataset`` subsamples it like ``synthetic``.
"""
import functools
from importlib import resources
from typing import List, Tuple

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from vissl.config import AttrDict
from vissl.data import DATA_SOURCES_WITH_SUBSET_SUPPORT, DATASET_SOURCE_MAP, VisslDatasetCatalog

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
            f"{SOURCE_NAME} has the splits {list(SPLITS)} (config.DATA.TRAIN / config.DATA.TEST); "
            f"got split {split!r}."
        )
    return split.upper()


@functools.lru_cache(maxsize=None)
def split_indices(split: str) -> np.ndarray:
    """Indices into ``load_digits()`` of one split, ascending and read-only."""
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
    digits = load_digits()
    indices = split_indices(split)
    images = np.rint(digits.images[indices] * (255 / MAX_PIXEL)).astype(np.uint8)
    labels = digits.target[indices].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_image_size(cfg: AttrDict, split: str) -> int:
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

    def __init__(self, cfg: AttrDict, path: str, split: str, dataset_name: str, data_source: str):
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
    return str(resources.files("sklearn.datasets") / "data" / "digits.csv.gz")


def register() -> None:
    DATASET_SOURCE_MAP[SOURCE_NAME] = DigitsDataset
    DATA_SOURCES_WITH_SUBSET_SUPPORT.add(SOURCE_NAME)
    # A user catalog (VISSL_DATASET_CATALOG_PATH) may already define the name; theirs wins, and
    # registering twice would raise.
    if not VisslDatasetCatalog.has_data(DATASET_NAME):
        entry = [bundled_data_file(), ""]
        VisslDatasetCatalog.register_data(DATASET_NAME, {"train": entry, "val": entry})


register()
