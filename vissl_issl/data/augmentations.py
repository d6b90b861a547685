r"""The ISSL TinyImageNet experiments' views: SimCLR augmentations with a strength ``s``, as in the
authors' ``utils/data/augmentations/simclr.py`` (issl_experiments.md, "Augmentations" and "Fig. 7a").

Every view is drawn independently from one image by, in this order (the order of the authors'
default branch and of the spec's "standard" list)::

    RandomResizedCrop(size, scale=(0.2 / s, 1), ratio=(3/4, 4/3), bicubic)
    RandomHorizontalFlip(p=0.5)
    RandomApply([ColorJitter(0.4 s, 0.4 s, 0.4 s, 0.1 s)], p=0.8)   # brightness, contrast, saturation, hue
    RandomGrayscale(p=0.1 s)
    RandomApply([GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5)          # only with blur=True

with ``k = int(0.1 * size)``, made odd by adding 1 when even (7 at 64 px, 1 at 16 px: a 1-tap kernel
leaves the image unchanged, as in the authors' formula). The authors pass only the kernel size, so
sigma is torchvision's default, uniform in (0.1, 2.0) per application; the spec does not state it.

The spec's settings:

=========  ===========  =====================  ===========  ====
s          crop scale   jitter (b/c/s, hue)    grayscale p  blur
=========  ===========  =====================  ===========  ====
0.25       (0.8, 1)     0.1, 0.025             0.025        no
0.5        (0.4, 1)     0.2, 0.05              0.05         no
1          (0.2, 1)     0.4, 0.1               0.1          no    "standard" (:data:`STANDARD`)
2 + blur   (0.1, 1)     0.8, 0.2               0.2          k 7   "coarse", Table 1's "+ aug." (:data:`COARSE`)
=========  ===========  =====================  ===========  ====

``s`` must lie in [0.2, 5]: below 0.2 the crop scale's lower bound 0.2 / s exceeds 1, above 5 the
hue jitter 0.1 s exceeds torchvision's bound of 0.5.

:func:`view_transform` is the per-view torchvision pipeline for plain PyTorch code;
:class:`IsslViews` turns one PIL image into ``total_num_crops`` such views, the list that VISSL's
``ImgPilToMultiCrop`` returns, and :mod:`vissl_issl.plugin.data` registers it with VISSL as
``ImgPilToIsslViews``::

    TRANSFORMS:
      - name: ImgPilToIsslViews
        size: 64          # side of every view in pixels (16 for the embedded digits)
        strength: 1.0     # s
        blur: False       # True forces the blur ("coarse" = strength 2.0, blur True)
        total_num_crops: 2  # views per image; required: VISSL's loss inference reads this key
      - name: ToTensor
      - name: Normalize
        mean: [...]
        std: [...]
"""

import math
from numbers import Integral, Real
from typing import Any, List, Mapping

from PIL import Image
from torchvision import transforms as T

NAME = "ImgPilToIsslViews"
CONFIG_KEYS = ("size", "strength", "blur", "total_num_crops")

CROP_MIN_SCALE = 0.2  # divided by s: stronger augmentations crop smaller parts of the image
FLIP_P = 0.5
JITTER = 0.4  # brightness, contrast and saturation, times s
JITTER_HUE = 0.1  # times s
JITTER_P = 0.8
GRAYSCALE_P = 0.1  # times s
BLUR_KERNEL_FRACTION = 0.1  # of the view's side
BLUR_SIGMA = (0.1, 2.0)  # torchvision's default, which the authors' GaussianBlur(kernel_size) gets
BLUR_P = 0.5
MAX_HUE = 0.5  # torchvision's ColorJitter rejects a larger hue jitter

STANDARD: Mapping[str, Any] = {"strength": 1.0, "blur": False}
COARSE: Mapping[str, Any] = {"strength": 2.0, "blur": True}


def check_view_parameters(size: int, strength: float, blur: bool) -> None:
    """Raise a ``ValueError`` naming the first parameter of a view that cannot work, and its value."""
    if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
        raise ValueError(f"{NAME}: size={size!r} must be an integer >= 1 (the side of every view in pixels)")
    if isinstance(strength, bool) or not isinstance(strength, Real) or not math.isfinite(strength) or strength <= 0:
        raise ValueError(f"{NAME}: strength={strength!r} must be a finite number > 0")
    if strength < CROP_MIN_SCALE:
        raise ValueError(
            f"{NAME}: strength={strength!r} must be >= {CROP_MIN_SCALE}: the crop scale's lower bound "
            f"{CROP_MIN_SCALE} / strength = {CROP_MIN_SCALE / strength:.3g} would exceed 1"
        )
    if JITTER_HUE * strength > MAX_HUE:
        raise ValueError(
            f"{NAME}: strength={strength!r} must be <= {MAX_HUE / JITTER_HUE:g}: the hue jitter "
            f"{JITTER_HUE} * strength = {JITTER_HUE * strength:.3g} would exceed torchvision's bound {MAX_HUE}"
        )
    if not isinstance(blur, bool):
        raise ValueError(f"{NAME}: blur={blur!r} must be True or False")


def blur_kernel_size(size: int) -> int:
    """The authors' blur kernel: a tenth of the view's side, rounded down, made odd (7 at 64 px)."""
    kernel = int(BLUR_KERNEL_FRACTION * size)
    return kernel + 1 if kernel % 2 == 0 else kernel


def view_transform(size: int, strength: float = 1.0, blur: bool = False) -> T.Compose:
    """The torchvision pipeline that makes one view (module docstring) from a PIL image."""
    check_view_parameters(size, strength, blur)
    jitter = T.ColorJitter(JITTER * strength, JITTER * strength, JITTER * strength, JITTER_HUE * strength)
    steps: List[Any] = [
        T.RandomResizedCrop(size, scale=(CROP_MIN_SCALE / strength, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=FLIP_P),
        T.RandomApply([jitter], p=JITTER_P),
        T.RandomGrayscale(p=GRAYSCALE_P * strength),
    ]
    if blur:
        steps.append(T.RandomApply([T.GaussianBlur(blur_kernel_size(size), sigma=BLUR_SIGMA)], p=BLUR_P))
    return T.Compose(steps)


class IsslViews:
    """One PIL image -> ``total_num_crops`` independent views of :func:`view_transform` (PIL images).

    Returns a list like VISSL's ``ImgPilToMultiCrop``, so that VISSL's transform wrapper flattens it
    into the sample's views, the transforms after it apply to each view, and ``multicrop_collator``
    stacks view ``i`` of every sample into the batch's ``i``-th tensor.
    """

    def __init__(self, size: int, strength: float = 1.0, blur: bool = False, total_num_crops: int = 2):
        if isinstance(total_num_crops, bool) or not isinstance(total_num_crops, Integral) or total_num_crops < 1:
            raise ValueError(f"{NAME}: total_num_crops={total_num_crops!r} must be an integer >= 1")
        self.total_num_crops = int(total_num_crops)
        self.view = view_transform(size, strength, blur)

    def __call__(self, image: Image.Image) -> List[Image.Image]:
        return [self.view(image) for _ in range(self.total_num_crops)]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "IsslViews":
        """From one ``TRANSFORMS`` entry without its ``name`` (what VISSL's ``build_transform`` passes)."""
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"{NAME}: unknown key(s) {unknown}; known: {list(CONFIG_KEYS)}")
        if "size" not in config:
            raise ValueError(f"{NAME}: size is required (the side of every view in pixels, e.g. 64 for TinyImageNet)")
        if "total_num_crops" not in config:
            # VISSL's loss inference (DINO, SwAV...) counts the views from this key alone.
            raise ValueError(f"{NAME}: total_num_crops is required (views per image, e.g. 2)")
        return cls(**config)
