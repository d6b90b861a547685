r"""VISSL's photometric augmentations, batched on the training device, with the distribution of VISSL's
PIL pipeline.

A recipe's ``DATA.TRAIN.TRANSFORMS`` splits in two (:func:`split_transforms`):

- the worker part: the geometric transforms in their order (crops, resizes, flips), then
  ``PILToTensor``. Data loader workers decode, crop and flip, and emit ``uint8`` tensors.
- the device part (:class:`DeviceAugmentation`): the photometric transforms in their order, then
  ``Normalize``, on a ``(N, 3, H, W)`` ``uint8`` batch on the training device. Every image gets its
  own random parameters, drawn on the CPU from one ``torch.Generator`` whose state is the module's
  whole random state (:meth:`DeviceAugmentation.generator_state`).

A flip may follow a photometric transform (W-MSE's ImageNet-100 part flips after the colour
distortion): the worker then flips first. That leaves the distribution unchanged, because every
device step is pointwise or a blur with a symmetric kernel and replicated borders, and both commute
with mirroring. Any other geometric transform after a photometric one is an error.

The device works on ``x = uint8 / 255`` in float32, as VISSL's ``ToTensor`` does, and never rounds;
PIL rounds to ``uint8`` after every operation. For fixed parameters each step matches torchvision's
functional op within these bounds (``tests/test_device_augmentation.py`` checks them on random
images):

==========  ===================================================  =======================  =====================
step        device op (kornia)                                   vs torchvision, tensor   vs PIL (VISSL), /255
==========  ===================================================  =======================  =====================
brightness  ``enhance.adjust_brightness_accumulative``: ``x f``  exact                    max 1
contrast    ``enhance.adjust_contrast_with_mean_subtraction``    1.5e-4 (1)               max 1.5 (2)
saturation  ``enhance.adjust_saturation_with_gray_subtraction``  1.5e-4 (1)               max 1.5
hue         ``enhance.adjust_hue`` at angle ``2 pi h``           1e-5                     mean 1.5, max 16 (3)
grayscale   ``color.rgb_to_grayscale``                           1.5e-4 (1)               max 0.51
blur        ``filters.filter2d_separable``, PIL's kernel (4)     --                       mean 1.2, max 3 (5)
solarize    ``enhance.solarize`` at ``(t - 1/2) / 255`` (6)      exact                    exact
normalize   ``enhance.normalize``                                1e-6                     --
==========  ===================================================  =======================  =====================

(1) kornia's grey is ITU-R 601 ``0.299 R + 0.587 G + 0.114 B``, PIL's ``convert("L")``;
torchvision's tensor ops use 0.2989 for red. (2) PIL's contrast blends with the grey mean rounded to
an integer. (3) PIL shifts hue in 8-bit HSV: hue, saturation and value quantised to 1/255, the shift
truncated to ``int(255 h)`` steps. (4) Not a sampled Gaussian: PIL's ``GaussianBlur(radius)`` is
three box blurs per axis whose total variance is ``radius ** 2`` (:func:`pil_box_kernel`); a
Gaussian of std ``radius`` sampled on the pixel grid is nearly the identity for radii below 0.5 and
differs from PIL by up to 30/255 on noise. (5) PIL rounds after each of its six passes. (6) VISSL's
threshold ``t`` is an integer in [0, 256]; PIL inverts the values ``v >= t``.

Sampling, per image, exactly as VISSL and torchvision sample (the same test checks the
distributions):

- ``ColorJitter(b, c, s, h)`` applied with probability ``p``: an order of the four adjustments
  uniform over the 24 permutations (torchvision's ``randperm(4)`` per image) and factors uniform
  in torchvision's ranges (``[max(0, 1 - v), 1 + v]`` or a given pair; hue ``[-h, h]``).
  ``ImgPilColorDistortion(s)`` is ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` with ``p = 0.8``,
  then grayscale with ``p = 0.2``; ``ImgPilRandomColorJitter(s, p)`` is its jitter with ``p``.
- ``RandomGrayscale(p)``: grey in all three channels with probability ``p``.
- ``ImgPilGaussianBlur(p, radius_min, radius_max)``: with probability ``p``, radius uniform in
  ``[radius_min, radius_max]``.
- ``ImgPilRandomSolarize(p)``: with probability ``p``, threshold uniform on the integers 0..256.
- ``ImgPilMultiCropRandomApply(transforms, prob)``: crop ``k``'s images get the inner steps with
  probability ``prob[k]``, each inner step then with its own draws.

kornia's augmentation classes do not give this distribution, so the module composes kornia's
functional ops with its own sampling: ``kornia.augmentation.ColorJitter`` has torchvision's formulas
but draws one order per batch, not per image; ``ColorJiggle`` adds ``factor - 1`` for brightness,
scales contrast without the mean and saturation in HSV; ``RandomGaussianBlur`` samples a Gaussian
kernel, and ``RandomSolarize`` draws continuous thresholds around 0.5. Every kornia augmentation
draws from torch's global generator, which has no state of its own to checkpoint.
"""

import math
from numbers import Real
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import kornia
import torch
from torch import Tensor, nn
from torchvision import transforms as T

Params = Dict[str, Any]

TO_UINT8: Mapping[str, Any] = {"name": "PILToTensor"}  # the workers' last step: torchvision's, no float
# The workers' transforms: VISSL's multi-view ones and torchvision's geometric ones.
GEOMETRIC = frozenset(
    {"ImgPilToMultiCrop", "ImgReplicatePil", "RandomResizedCrop", "RandomCrop", "CenterCrop", "Resize"}
    | {"RandomHorizontalFlip", "RandomVerticalFlip"}
)
MIRRORS = frozenset({"RandomHorizontalFlip", "RandomVerticalFlip"})  # commute with every device step

# VISSL's ImgPilColorDistortion (SimCLR): ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) with p 0.8, grey p 0.2.
DISTORTION_JITTER = 0.8
DISTORTION_HUE = 0.2
DISTORTION_JITTER_P = 0.8
DISTORTION_GRAYSCALE_P = 0.2
PIL_BLUR_PASSES = 3  # Pillow's GaussianBlur: three box blurs per axis
SOLARIZE_THRESHOLDS = 257  # VISSL's RandomSolarizeTransform: randint over the closed [0, 256]
REQUIRED = object()

# Each photometric transform's keys and VISSL's (or torchvision's) defaults, as its from_config reads them.
DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "ImgPilColorDistortion": {"strength": 1.0},
    "ImgPilRandomColorJitter": {"strength": 1.0, "p": 0.8},
    "ColorJitter": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0},
    "RandomGrayscale": {"p": 0.1},
    "ImgPilGaussianBlur": {"p": 0.5, "radius_min": 0.1, "radius_max": 2.0},
    "ImgPilRandomSolarize": {"p": 0.66},
    "ImgPilMultiCropRandomApply": {"transforms": REQUIRED, "prob": REQUIRED},
    "Normalize": {"mean": REQUIRED, "std": REQUIRED},
}


def apply_where(images: Tensor, chosen: Tensor, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Writes ``op(images[index], index)`` into the rows ``index`` where ``chosen`` holds.

    ``chosen`` is a ``(N,)`` bool tensor on the CPU: the device never waits for the host to learn
    which images a step touches. ``op`` gets the rows and their CPU indices (to pick the rows'
    parameters). ``images`` is modified in place and returned.
    """
    index = chosen.nonzero().squeeze(1)
    if len(index):
        rows = index.to(images.device, non_blocking=True)
        images[rows] = op(images[rows], index)
    return images


class Step:
    """One photometric step: :meth:`sample` draws every image's parameters on the CPU, :meth:`apply`
    runs them on a float ``(N, 3, H, W)`` batch in [0, 1]. ``crops`` is the ``(N,)`` crop index of
    each image (only per-crop probabilities read it)."""

    def sample(self, crops: Tensor, generator: torch.Generator) -> Params:
        return {}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        raise NotImplementedError


def bernoulli(p: float, n: int, generator: torch.Generator) -> Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) < p


def adjust_hue_turns(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's hue factor is a fraction of a turn, kornia's an angle in radians."""
    return kornia.enhance.adjust_hue(images, factor * (2 * math.pi))


class ColorJitter(Step):
    """torchvision's ``RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)``.

    Params: ``applied`` ``(N,)`` bool, ``order`` ``(N, 4)`` a permutation of (brightness, contrast,
    saturation, hue) per image, ``factors`` ``(N, 4)``. An adjustment whose jitter is 0 is skipped,
    as torchvision skips it.
    """

    ADJUSTMENTS = (
        kornia.enhance.adjust_brightness_accumulative,
        kornia.enhance.adjust_contrast_with_mean_subtraction,
        kornia.enhance.adjust_saturation_with_gray_subtraction,
        adjust_hue_turns,
    )

    def __init__(self, brightness: Any, contrast: Any, saturation: Any, hue: Any, p: float):
        jitter = T.ColorJitter(brightness, contrast, saturation, hue)  # torchvision's checks and ranges
        self.ranges = [jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue]  # None: not jittered
        self.p = p

    def sample(self, crops: Tensor, generator: torch.Generator) -> Params:
        n = len(crops)
        low = torch.tensor([span[0] if span else 0.0 for span in self.ranges], dtype=torch.float64)
        high = torch.tensor([span[1] if span else 0.0 for span in self.ranges], dtype=torch.float64)
        return {
            "applied": bernoulli(self.p, n, generator),
            # The ranks of 4 iid uniforms: a uniform permutation per image.
            "order": torch.rand(n, 4, generator=generator, dtype=torch.float64).argsort(dim=1),
            "factors": low + (high - low) * torch.rand(n, 4, generator=generator, dtype=torch.float64),
        }

    def apply(self, images: Tensor, params: Params) -> Tensor:
        factors = params["factors"].float()
        for position in range(4):
            for adjustment, (adjust, span) in enumerate(zip(self.ADJUSTMENTS, self.ranges)):
                if span is None:
                    continue
                chosen = params["applied"] & (params["order"][:, position] == adjustment)
                images = apply_where(
                    images, chosen, lambda rows, index: adjust(rows, factors[index, adjustment].to(rows.device))
                )
        return images


class Grayscale(Step):
    """torchvision's ``RandomGrayscale(p)``: the ITU-R 601 grey in all three channels. Params:
    ``applied`` ``(N,)`` bool."""

    def __init__(self, p: float):
        self.p = p

    def sample(self, crops: Tensor, generator: torch.Generator) -> Params:
        return {"applied": bernoulli(self.p, len(crops), generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        return apply_where(
            images, params["applied"], lambda rows, _: kornia.color.rgb_to_grayscale(rows).expand_as(rows)
        )


def pil_box_radius(radius: Tensor) -> Tensor:
    """Pillow's ``_gaussian_blur_radius`` (BoxBlur.c, after Gwosdek et al. 2011): the fractional
    radius ``l + a`` of the box whose three passes have variance ``radius ** 2``.

    With ``s2 = radius ** 2 / 3``: ``l = floor((sqrt(12 s2 + 1) - 1) / 2)`` and
    ``a = (2 l + 1) (l (l + 1) - 3 s2) / (6 (s2 - (l + 1) ** 2))``.
    """
    s2 = radius.double() ** 2 / PIL_BLUR_PASSES
    whole = torch.floor((torch.sqrt(12 * s2 + 1) - 1) / 2)
    fraction = (2 * whole + 1) * (whole * (whole + 1) - 3 * s2) / (6 * (s2 - (whole + 1) ** 2))
    return whole + fraction


def pil_box_kernel(radius: Tensor, size: int) -> Tensor:
    """``(N,)`` blur radii -> ``(N, size)``: one pass of PIL's box of fractional radius
    ``r = l + a`` (:func:`pil_box_radius`): ``1 / (2 r + 1)`` on ``|i| <= l``, ``a / (2 r + 1)``
    on ``|i| = l + 1``, 0 beyond; ``size`` is odd and at least ``2 l + 3``."""
    box = pil_box_radius(radius)[:, None]
    whole = torch.floor(box)
    offset = (torch.arange(size, dtype=torch.float64) - size // 2).abs()[None]
    weight = torch.where(offset <= whole, 1.0, torch.where(offset == whole + 1, box - whole, 0.0))
    return (weight / (2 * box + 1)).float()


def pil_gaussian_blur(images: Tensor, radius: Tensor, size: int) -> Tensor:
    """PIL's ``GaussianBlur(radius[i])`` on image ``i`` of ``(N, 3, H, W)``, without its rounding.

    Pillow blurs each axis with three passes of :func:`pil_box_kernel`, edge pixels replicated
    beyond the border, all rows first, then all columns. Passes along different axes commute, so
    three (rows, columns) pairs give the same result.
    """
    kernel = pil_box_kernel(radius, size).to(images.device)
    for _ in range(PIL_BLUR_PASSES):
        images = kornia.filters.filter2d_separable(images, kernel, kernel, border_type="replicate")
    return images


class GaussianBlur(Step):
    """VISSL's ``ImgPilGaussianBlur(p, radius_min, radius_max)``. Params: ``applied`` ``(N,)``
    bool, ``radius`` ``(N,)``."""

    def __init__(self, p: float, radius_min: float, radius_max: float):
        self.p, self.radius_min, self.radius_max = p, radius_min, radius_max
        # The box radius grows with the blur radius: the largest box fits.
        self.size = 2 * int(pil_box_radius(torch.tensor(float(radius_max)))) + 3

    def sample(self, crops: Tensor, generator: torch.Generator) -> Params:
        n = len(crops)
        applied = bernoulli(self.p, n, generator)
        uniform = torch.rand(n, generator=generator, dtype=torch.float64)
        return {"applied": applied, "radius": self.radius_min + (self.radius_max - self.radius_min) * uniform}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        return apply_where(
            images, params["applied"], lambda rows, index: pil_gaussian_blur(rows, params["radius"][index], self.size)
        )


class Solarize(Step):
    """VISSL's ``ImgPilRandomSolarize(p)``. Params: ``applied`` ``(N,)`` bool, ``threshold``
    ``(N,)`` integers in [0, 256]."""

    def __init__(self, p: float):
        self.p = p

    def sample(self, crops: Tensor, generator: torch.Generator) -> Params:
        n = len(crops)
        applied = bernoulli(self.p, n, generator)
        return {"applied": applied, "threshold": torch.randint(SOLARIZE_THRESHOLDS, (n,), generator=generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        # PIL inverts v >= t; on x = v / 255 that is x >= (t - 1/2) / 255, and a value between two
        # levels goes as its nearest level would.
        thresholds = (params["threshold"].float() - 0.5) / 255
        return apply_where(
            images,
            params["applied"],
            lambda rows, index: kornia.enhance.solarize(rows, thresholds[index].to(rows.device)),
        )


class PerCrop(Step):
    """VISSL's ``ImgPilMultiCropRandomApply(transforms, prob)``: one draw per image decides whether
    all the inner steps may apply (``prob`` of its crop). Params: ``gate`` ``(N,)`` bool, ``steps``
    the inner steps' params."""

    def __init__(self, steps: Sequence[Step], prob: Sequence[float], key: str):
        self.steps, self.prob, self.key = list(steps), torch.tensor(prob, dtype=torch.float64), key

    def sample(self, crops: Tensor, generator: torch.Generator) -> Params:
        if len(crops) and int(crops.max()) >= len(self.prob):
            raise ValueError(f"{self.key}.prob={self.prob.tolist()} has no probability for crop {int(crops.max())}")
        gate = torch.rand(len(crops), generator=generator, dtype=torch.float64) < self.prob[crops]
        return {"gate": gate, "steps": [step.sample(crops, generator) for step in self.steps]}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        for step, inner in zip(self.steps, params["steps"]):
            images = step.apply(images, {**inner, "applied": inner["applied"] & params["gate"]})
        return images


class Normalize(Step):
    """torchvision's ``Normalize(mean, std)``: ``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def apply(self, images: Tensor, params: Params) -> Tensor:
        return kornia.enhance.normalize(images, self.mean.to(images.device), self.std.to(images.device))


def probability(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(f"{key}={value!r} must be a probability in [0, 1]")
    return float(value)


def non_negative(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < math.inf:
        raise ValueError(f"{key}={value!r} must be a finite number >= 0")
    return float(value)


def channels(value: Any, key: str, positive: bool) -> List[float]:
    valid = isinstance(value, Sequence) and len(value) == 3
    valid = valid and all(not isinstance(v, bool) and isinstance(v, Real) and (v > 0 or not positive) for v in value)
    if not valid:
        raise ValueError(f"{key}={value!r} must be 3 numbers (R, G, B){', all > 0' if positive else ''}")
    return [float(v) for v in value]


def color_jitter(values: Mapping[str, Any], key: str, p: float) -> ColorJitter:
    try:
        return ColorJitter(values["brightness"], values["contrast"], values["saturation"], values["hue"], p)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{key}: {error}") from error


def strength_jitter(strength: Any, key: str, p: float) -> ColorJitter:
    """VISSL's ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` of strength ``s``."""
    jitter = DISTORTION_JITTER * non_negative(strength, key)
    hue = DISTORTION_HUE * strength
    return color_jitter({"brightness": jitter, "contrast": jitter, "saturation": jitter, "hue": hue}, key, p)


def color_distortion(values: Mapping[str, Any], key: str) -> List[Step]:
    jitter = strength_jitter(values["strength"], f"{key}.strength", DISTORTION_JITTER_P)
    return [jitter, Grayscale(DISTORTION_GRAYSCALE_P)]


def random_color_jitter(values: Mapping[str, Any], key: str) -> List[Step]:
    return [strength_jitter(values["strength"], f"{key}.strength", probability(values["p"], f"{key}.p"))]


def gaussian_blur(values: Mapping[str, Any], key: str) -> List[Step]:
    low = non_negative(values["radius_min"], f"{key}.radius_min")
    high = non_negative(values["radius_max"], f"{key}.radius_max")
    if low > high:
        raise ValueError(f"{key}.radius_min={low!r} must be <= {key}.radius_max={high!r}")
    return [GaussianBlur(probability(values["p"], f"{key}.p"), low, high)]


def per_crop(values: Mapping[str, Any], key: str) -> List[Step]:
    inner, prob = values["transforms"], values["prob"]
    if not isinstance(inner, Sequence) or not inner:
        raise ValueError(f"{key}.transforms={inner!r} must be a non-empty list of photometric transforms")
    if not isinstance(prob, Sequence) or not prob:
        raise ValueError(f"{key}.prob={prob!r} must be a list of probabilities, one per crop")
    steps = []
    for index, transform in enumerate(inner):
        at = f"{key}.transforms[{index}]"
        if transform.get("name") in ("Normalize", "ImgPilMultiCropRandomApply"):
            raise ValueError(f"{at}.name={transform['name']!r} cannot be applied per crop on the device")
        steps += build_steps(transform, at)
    return [PerCrop(steps, [probability(p, f"{key}.prob[{i}]") for i, p in enumerate(prob)], key)]


BUILDERS: Mapping[str, Callable[[Mapping[str, Any], str], List[Step]]] = {
    "ImgPilColorDistortion": color_distortion,
    "ImgPilRandomColorJitter": random_color_jitter,
    "ColorJitter": lambda values, key: [color_jitter(values, key, 1.0)],
    "RandomGrayscale": lambda values, key: [Grayscale(probability(values["p"], f"{key}.p"))],
    "ImgPilGaussianBlur": gaussian_blur,
    "ImgPilRandomSolarize": lambda values, key: [Solarize(probability(values["p"], f"{key}.p"))],
    "ImgPilMultiCropRandomApply": per_crop,
    "Normalize": lambda values, key: [
        Normalize(channels(values["mean"], f"{key}.mean", False), channels(values["std"], f"{key}.std", True))
    ],
}


def build_steps(transform: Mapping[str, Any], key: str) -> List[Step]:
    """The device steps of one photometric ``TRANSFORMS`` entry at ``key``; errors name the key."""
    name = transform.get("name")
    if name not in BUILDERS:
        raise ValueError(
            f"{key}.name={name!r} cannot run on the device; photometric transforms: {sorted(BUILDERS)}, "
            f"geometric ones (workers): {sorted(GEOMETRIC)}, and ToTensor"
        )
    defaults = DEFAULTS[name]
    unknown = sorted(set(transform) - set(defaults) - {"name"})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(f'{key}.{k}' for k in unknown)}; known: {sorted(defaults)}")
    values = {**defaults, **{k: v for k, v in transform.items() if k != "name"}}
    missing = [k for k, v in values.items() if v is REQUIRED]
    if missing:
        raise ValueError(f"{', '.join(f'{key}.{k}' for k in missing)} must be set")
    return BUILDERS[name](values, key)


def split_transforms(
    transforms: Sequence[Mapping[str, Any]], key: str = "TRANSFORMS"
) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """``(worker, device)``: the geometric transforms then ``PILToTensor``, and the photometric
    transforms then ``Normalize`` (module docstring). ``transforms`` holds VISSL's ``TRANSFORMS``
    entries (dicts with a ``name``); errors name the entry (``{key}[i]``)."""
    worker: List[Dict[str, Any]] = []
    device: List[Dict[str, Any]] = []
    tensor_at: Optional[str] = None  # where ToTensor is
    for index, transform in enumerate(transforms):
        at, name = f"{key}[{index}]", transform.get("name")
        if device and device[-1]["name"] == "Normalize":
            raise ValueError(f"{at}.name={name!r} follows Normalize, which must come last")
        if name == "ToTensor":
            if tensor_at is not None:
                raise ValueError(f"{at}.name='ToTensor' repeats {tensor_at}")
            tensor_at = at
        elif name in GEOMETRIC:
            if tensor_at is not None:
                raise ValueError(f"{at}.name={name!r} follows ToTensor ({tensor_at}): VISSL crops PIL images")
            if device and name not in MIRRORS:
                raise ValueError(
                    f"{at}.name={name!r} follows the photometric {device[-1]['name']!r}: only flips commute "
                    "with the device steps and can move to the workers ahead of them"
                )
            worker.append(dict(transform))
        else:
            build_steps(transform, at)
            if (name == "Normalize") != (tensor_at is not None):
                where = "after" if name == "Normalize" else "before"
                raise ValueError(f"{at}.name={name!r} must come {where} ToTensor")
            device.append(dict(transform))
    if tensor_at is None:
        raise ValueError(f"{key} has no ToTensor: the device part takes tensors")
    return [*worker, dict(TO_UINT8)], device


class DeviceAugmentation(nn.Module):
    """The device part of a recipe's transforms: ``(N, 3, H, W)`` ``uint8`` -> float32, each
    image with its own random parameters.

    ``transforms``: the photometric ``TRANSFORMS`` entries in order, then ``Normalize``
    (:func:`split_transforms`'s device part); ``seed`` seeds the module's CPU generator;
    ``key`` names the entries in errors. :meth:`forward` draws and applies; :meth:`sample` and
    :meth:`apply` do each half, for tests and replays.
    """

    def __init__(self, transforms: Sequence[Mapping[str, Any]], seed: int = 0, key: str = "DEVICE_TRANSFORMS"):
        super().__init__()
        self.steps = [step for index, t in enumerate(transforms) for step in build_steps(t, f"{key}[{index}]")]
        self.generator = torch.Generator().manual_seed(seed)

    def generator_state(self) -> Tensor:
        """The whole random state: restoring it with :meth:`set_generator_state` replays the draws."""
        return self.generator.get_state()

    def set_generator_state(self, state: Tensor) -> None:
        self.generator.set_state(state)

    def sample(self, crops: Tensor) -> List[Params]:
        """Every step's parameters for images of crop indices ``crops`` ``(N,)``, in step order."""
        return [step.sample(crops, self.generator) for step in self.steps]

    def apply(self, images: Tensor, params: Sequence[Params]) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"DeviceAugmentation takes (N, 3, H, W) uint8 images (the workers' PILToTensor), "
                f"got {tuple(images.shape)} {images.dtype}"
            )
        augmented = images.float().div_(255)
        for step, step_params in zip(self.steps, params):
            augmented = step.apply(augmented, step_params)
        return augmented

    def forward(self, images: Tensor, crops: Optional[Tensor] = None) -> Tensor:
        """``images`` ``(N, 3, H, W)`` ``uint8``; ``crops`` ``(N,)`` each image's crop index
        (all 0 when omitted). Returns ``(N, 3, H, W)`` float32."""
        if crops is None:
            crops = torch.zeros(len(images), dtype=torch.long)
        return self.apply(images, self.sample(crops.cpu()))

    def augment_views(self, views: Sequence[Tensor]) -> List[Tensor]:
        """VISSL's ``multicrop_collator`` batch: ``views[k]`` holds crop ``k`` of every image.
        Crops of one size go through one call; returns the list in the same order."""
        sizes: Dict[Tuple[int, ...], List[int]] = {}
        for crop, view in enumerate(views):
            sizes.setdefault(tuple(view.shape[1:]), []).append(crop)
        augmented: List[Optional[Tensor]] = [None] * len(views)
        for crops in sizes.values():
            counts = [len(views[crop]) for crop in crops]
            indices = torch.cat([torch.full((count,), crop) for crop, count in zip(crops, counts)])
            outputs = self(torch.cat([views[crop] for crop in crops]), indices).split(counts)
            for crop, output in zip(crops, outputs):
                augmented[crop] = output
        return augmented

    def augment_stacked(self, images: Tensor, num_crops: int) -> Tensor:
        """VISSL's ``simclr_collator`` batch (and ``default_collate``'s, ``num_crops`` 1): the
        ``num_crops`` views stacked crop-major, ``(num_crops * B, 3, H, W)``."""
        if len(images) % num_crops:
            raise ValueError(f"{len(images)} images cannot hold {num_crops} crops of equal batches")
        crops = torch.arange(num_crops).repeat_interleave(len(images) // num_crops)
        return self(images, crops)
