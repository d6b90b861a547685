"""``stl10_unlabeled``: STL-10's ``train+unlabeled`` split (105,000 images) for pretraining.

VISSL's ``torchvision_dataset`` source reads only STL-10's 5,000 labelled ``train`` images; the
W-MSE recipes pretrain on ``train+unlabeled`` as the authors did. TRAIN is torchvision's
``STL10(root, split="train+unlabeled")``, TEST its ``test`` split; ``DATA_PATHS`` is the torchvision
root holding ``stl10_binary/`` already (nothing is downloaded: a missing root raises torchvision's
"Dataset not found or corrupted"). Labels (``LABEL_SOURCES: [torchvision_dataset]``) are
torchvision's, -1 for the unlabeled images.

Config::

    DATA_SOURCES: [stl10_unlabeled]
    DATASET_NAMES: [stl10_unlabeled]
    DATA_PATHS: [<torchvision root>]
"""

from typing import Any, List, Mapping, Tuple

from PIL import Image
from torchvision.datasets import STL10

NAME = "stl10_unlabeled"
TORCHVISION_SPLITS = {"TRAIN": "train+unlabeled", "TEST": "test"}


class STL10Unlabeled:
    """Built by ``GenericSSLDataset`` as ``STL10Unlabeled(cfg, path, split, dataset_name, data_source)``."""

    def __init__(self, cfg: Mapping[str, Any], path: str, split: str, dataset_name: str, data_source: str):
        self.dataset = STL10(path, split=TORCHVISION_SPLITS[split.upper()])

    def num_samples(self) -> int:
        return len(self.dataset)

    def __len__(self) -> int:
        return self.num_samples()

    def __getitem__(self, idx: int) -> Tuple[Image.Image, bool]:
        return self.dataset[idx][0], True

    def get_labels(self) -> List[int]:
        return self.dataset.labels.tolist()
