"""Datasets as uint8 pixel arrays, and back: what a classical codec encodes and what the model reads.

A split is read once through its PIL-level transform (resize / crop: the images *as fed to the
pipeline*) into a ``(N, H, W, C)`` uint8 array; :class:`ArrayImages` serves such an array (e.g. a
codec's decoded images) through the tensor-level transform (``ToTensor``, ``Normalize``), so the
model sees decoded images exactly as it sees the originals.
"""

from typing import Callable, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


def load_images(dataset: Dataset) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, H, W, C), labels int64 (N,))`` of a dataset of ``(PIL image, label)``."""
    images, labels = [], []
    for index in range(len(dataset)):
        image, label = dataset[index]
        if not isinstance(image, Image.Image):
            raise TypeError(f"item {index} is a {type(image).__name__}; expected a PIL image (no ToTensor yet)")
        pixels = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
        images.append(pixels)
        labels.append(int(label))
    if not images:
        raise ValueError("the dataset is empty")
    shapes = {pixels.shape for pixels in images}
    if len(shapes) != 1:
        raise ValueError(f"images of several shapes {sorted(shapes)}; resize/crop them to one size first")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


class ArrayImages(Dataset):
    """``(transform(PIL image of images[i]), labels[i])`` items of a uint8 array."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])
        if image.mode == "L":
            image = image.convert("RGB")
        return self.transform(image), int(self.labels[index])
