"""Images that cannot be read or decoded: how many a pass over a split may hold, the error that
names them, and torchvision's ``ImageFolder`` made to count them instead of stopping at the first.

One rule for pretraining (:mod:`vissl_issl.plugin.hooks.broken_images`), probes and compression
(:class:`BrokenImageFolder`): a broken image becomes a grey placeholder and is counted; once the
broken ones exceed ``max_fraction`` of the images of the pass, work stops with
:class:`BrokenImagesError`, which names the count, the share, the threshold, the setting that holds
it and a sample of the files. ``max_fraction = 0`` refuses any broken image.
"""

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torchvision.datasets import ImageFolder

DEFAULT_MAX_FRACTION = 0.001
SAMPLE_SIZE = 10  # file names an error or a summary lists
GREY = (128, 128, 128)  # VISSL's placeholder colour (vissl.data.data_helper.get_mean_image)
PLACEHOLDER_SIZE = 224  # VISSL's DEFAULT_GRAY_IMG_SIZE; the transforms bring it to their size


class BrokenImagesError(RuntimeError):
    """More images of a pass over a split could not be read or decoded than its threshold allows."""


def check_max_fraction(value: Any, setting: str) -> float:
    """``value`` as a fraction in [0, 1]; anything else raises ``ValueError`` naming ``setting``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{setting}={value!r} must be a fraction in [0, 1] (0: refuse any broken image)")
    return float(value)


def allowed_broken(max_fraction: float, images: int) -> int:
    """The most broken images a pass over ``images`` may hold: the largest count whose share is at
    most ``max_fraction``."""
    return math.floor(max_fraction * images)


def sample_listing(names: Sequence[str], count: int) -> str:
    """Up to :data:`SAMPLE_SIZE` of ``names``, and how many of ``count`` are left out."""
    shown = list(names[:SAMPLE_SIZE])
    more = count - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def too_many_broken(
    count: int, images: int, subject: str, max_fraction: float, setting: str, names: Sequence[str], complete: bool
) -> BrokenImagesError:
    """The error for ``count`` broken images among ``images`` of ``subject`` (e.g. "train images of
    phase 0"), ``names`` a sample of their files; ``complete``: the pass is over, so ``count`` is all
    of them rather than those found so far."""
    bound = "" if complete else "at least "
    return BrokenImagesError(
        f"{bound}{count} of the {images} {subject} cannot be read or decoded ({count / images:.3%}), more than "
        f"{setting}={max_fraction:g} allows ({allowed_broken(max_fraction, images)} of {images}): "
        f"{sample_listing(names, count)}; "
        f"repair or remove these files, or raise {setting}"
    )


class BrokenImageFolder(ImageFolder):
    """torchvision's ``ImageFolder`` whose files that PIL cannot open or decode become a grey
    placeholder and are marked in :attr:`broken`.

    :attr:`broken` is a shared-memory ``(N,)`` bool tensor, so marks made in ``DataLoader`` worker
    processes reach the main process and every worker. ``__getitem__`` raises
    :class:`BrokenImagesError` as soon as the marks exceed what ``max_fraction`` of the folder
    allows: a badly broken folder stops at once, not after a whole pass.
    """

    def __init__(self, root: str, transform: Optional[Any], max_fraction: float, setting: str):
        super().__init__(root, transform)
        self.max_fraction = check_max_fraction(max_fraction, setting)
        self.setting = setting
        self.broken = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        path, target = self.samples[index]
        try:
            image = self.loader(path)
        except Exception:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for damaged files
            self.broken[index] = True
            self.check()
            image = Image.new("RGB", (PLACEHOLDER_SIZE, PLACEHOLDER_SIZE), GREY)
        if self.transform is not None:
            image = self.transform(image)
        return image, target

    def broken_files(self) -> List[str]:
        """The files marked broken so far, in folder order."""
        return [self.samples[index][0] for index in torch.nonzero(self.broken).flatten().tolist()]

    def check(self) -> None:
        """Raises :class:`BrokenImagesError` when the marked files exceed the folder's allowance."""
        count = int(self.broken.sum())
        if count > allowed_broken(self.max_fraction, len(self)):
            subject = f"images of {self.root}"
            raise too_many_broken(
                count, len(self), subject, self.max_fraction, self.setting, self.broken_files(), complete=False
            )
