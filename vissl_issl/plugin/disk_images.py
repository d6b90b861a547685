"""``disk_folder`` and ``disk_filelist``: VISSL's image sources, registered under the same names
(:mod:`vissl_issl.plugin.data`), with a broken image counted instead of fatal or hidden.

VISSL 0.1.6's ``DiskImageDataset.__getitem__`` decodes a ``disk_folder`` image twice, the first
time outside its ``try``: one file that PIL cannot decode stops the run with PIL's error and no
file name. For ``disk_filelist`` it logs a warning per broken image, and with
``ENABLE_QUEUE_DATASET`` it passes an image seen before off as valid. Here every source decodes
each image once; one that cannot be read or decoded is VISSL's stand-in (an image from the queue,
else the grey placeholder) with ``data_valid`` -1, which
:class:`~vissl_issl.plugin.hooks.broken_images.BrokenImagesHook` counts, logs once per phase and
holds to ``config.DATA.<SPLIT>.MAX_BROKEN_FRACTION``.

An image smaller than a fixed-size crop that nothing resizes or pads first (``RandomCrop``,
``FiveCrop``, ``TenCrop``; torchvision's ``CenterCrop`` pads, ``RandomResizedCrop`` and VISSL's
multi-crop resample) raises naming the file, its size and the transform, where torchvision's error
names neither file nor key.
"""

from typing import Any, List, Mapping, Optional, Sequence, Tuple

from iopath.common.file_io import g_pathmgr
from PIL import Image
from vissl.data.data_helper import get_mean_image
from vissl.data.disk_dataset import DiskImageDataset
from vissl.utils.io import load_file

SOURCES = ("disk_folder", "disk_filelist")
# torchvision crops of a fixed size that raise on a smaller image.
FIXED_CROPS = ("RandomCrop", "FiveCrop", "TenCrop")
# PIL transforms that keep the image's size: a fixed crop after only these sees the image as loaded.
SIZE_KEEPING = (
    "ImgReplicatePil", "RandomHorizontalFlip", "RandomVerticalFlip", "ColorJitter", "RandomGrayscale",
    "ImgPilColorDistortion", "ImgPilGaussianBlur", "ImgPilRandomColorJitter", "ImgPilRandomPhotometric",
    "ImgPilRandomSolarize",
)  # fmt: skip

Size = Tuple[int, int]  # (height, width), as torchvision's sizes


class ImageTooSmallError(ValueError):
    """An image smaller than a fixed-size crop of the split's transforms; names the file and the transform."""


def as_size(size: Any) -> Size:
    """torchvision's crop ``size``: an int (square) or ``[height, width]``."""
    return (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[-1]))


def first_fixed_crop(transforms: Sequence[Mapping[str, Any]]) -> Optional[Tuple[int, str, Size]]:
    """``(index, name, size)`` of the first unpadded fixed-size crop that sees images as loaded, or
    None. Transforms of unknown effect on the size end the search: no false alarm."""
    for index, transform in enumerate(transforms):
        name = transform["name"]
        if name in FIXED_CROPS:
            if transform.get("padding") or transform.get("pad_if_needed"):
                return None
            return index, name, as_size(transform["size"])
        if name not in SIZE_KEEPING:
            return None
    return None


class DiskImages(DiskImageDataset):
    """VISSL's ``DiskImageDataset`` (same constructor, same items ``(PIL image, is_valid)``) with
    one decode per image, broken images marked invalid, and the crop size checked."""

    def __init__(self, cfg, data_source: str, path: str, split: str, dataset_name: str):
        super().__init__(cfg, data_source, path, split, dataset_name)
        self.fixed_crop = first_fixed_crop(cfg["DATA"][split]["TRANSFORMS"])

    def image_paths(self, indices: Sequence[int]) -> List[str]:
        """The files of samples ``indices``, without loading them."""
        if self.data_source == "disk_folder":
            return [self.image_dataset.samples[index][0] for index in indices]
        # Workers load the file list lazily; the main process keeps it empty (VISSL frees it there).
        paths = self.image_dataset if len(self.image_dataset) else load_file(self._path, mmap_mode="r")
        return [self._replace_img_path_prefix(str(paths[i]), self._remove_prefix, self._new_prefix) for i in indices]

    def __getitem__(self, idx: int) -> Tuple[Image.Image, bool]:
        if not self.is_initialized:
            self._load_data(self._path)
            self.is_initialized = True
        if self.enable_queue_dataset and not self.queue_init:
            self._init_queues()
        (path,) = self.image_paths([idx])
        try:
            with g_pathmgr.open(path, "rb") as file:
                image = Image.open(file).convert("RGB")
        except Exception:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for damaged files
            stand_in = self.on_failure()[0] if self.enable_queue_dataset else None
            if stand_in is None:
                stand_in = get_mean_image(self.cfg["DATA"][self.split].DEFAULT_GRAY_IMG_SIZE)
            return stand_in, False
        self.check_size(image, path)
        if self.enable_queue_dataset:
            self.on_sucess(image)
        return image, True

    def check_size(self, image: Image.Image, path: str) -> None:
        if self.fixed_crop is None:
            return
        index, name, (height, width) = self.fixed_crop
        if image.height < height or image.width < width:
            raise ImageTooSmallError(
                f"{path} is {image.width}x{image.height} px (width x height), smaller than the {width}x{height} "
                f"{name} of config.DATA.{self.split}.TRANSFORMS[{index}]: resize before it, pad "
                "(pad_if_needed: True), or remove the image"
            )
