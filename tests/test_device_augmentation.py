"""Device-side augmentation (vissl_issl/data/device_augmentation.py and its VISSL adapter): each step
against torchvision's functional op and PIL for fixed parameters, the sampled parameters' and the
outputs' distributions against VISSL's PIL pipeline, the split of the shipped ImageNet parts, the
config inference, the worker part through VISSL's wrapper and collator, and the generator states.

Every statistical test runs at a fixed seed, so it cannot flake; each rejects at SIGNIFICANCE.
"""

import copy
import json
import random
from types import SimpleNamespace
from typing import Callable, Dict, List

import vissl_issl.plugin  # noqa: F401  (compat shims before VISSL's imports)
from vissl_issl.plugin.device_augmentation import (
    DeviceAugmentationHook,
    device_augmentation_hooks,
    infer_device_augmentation,
    rank_seed,
)

import numpy as np
import pytest
import torch
import yaml
from classy_vision.dataset.transforms import build_transforms
from PIL import Image, ImageFilter, ImageOps
from scipy import stats
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.transforms import functional as F
from vissl.config import AttrDict
from vissl.data.collators import get_collator
from vissl.data.ssl_transforms import get_transform
from vissl.data.ssl_transforms.img_pil_color_distortion import ImgPilColorDistortion
from vissl.data.ssl_transforms.img_pil_gaussian_blur import ImgPilGaussianBlur
from vissl.data.ssl_transforms.img_pil_random_solarize import ImgPilRandomSolarize

from conftest import REPO
from vissl_issl.config import ConfigError
from vissl_issl.data import device_augmentation as da

SIGNIFICANCE = 1e-3
PARTS = REPO / "configs" / "config" / "pretrain"
CROPS_PARTS = ["parts/crops_m2.yaml", "parts/crops_m6.yaml", "parts/crops_m8.yaml"]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PER_CROP = "ImgPilMultiCropRandomApply"
ADJUSTMENTS = ["brightness", "contrast", "saturation", "hue"]
FUNCTIONAL: Dict[str, Callable] = {
    "brightness": F.adjust_brightness,
    "contrast": F.adjust_contrast,
    "saturation": F.adjust_saturation,
    "hue": F.adjust_hue,
}
# Per adjustment: max |device - torchvision on float tensors|, max and mean |device - PIL| in 1/255
# (the bounds of the table in the module docstring).
GREY_WEIGHTS = 1.5e-4  # kornia's red weight 0.299, torchvision's 0.2989
JITTER_BOUNDS = {
    "brightness": (0.0, 1.0, 0.5),
    "contrast": (GREY_WEIGHTS, 1.5, 0.5),
    "saturation": (GREY_WEIGHTS, 1.5, 0.5),
    "hue": (1e-5, 16.0, 1.5),
}


def part_transforms(part: str) -> List[dict]:
    return yaml.safe_load((PARTS / part).read_text())["config"]["DATA"]["TRAIN"]["TRANSFORMS"]


def random_images(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    """``(n, 3, size, size)`` uint8, every pixel random: the worst case for rounding and blurs."""
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def to_pil(images: torch.Tensor) -> List[Image.Image]:
    return [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]


def from_pil(images: List[Image.Image]) -> torch.Tensor:
    return torch.stack([T.functional.pil_to_tensor(image) for image in images]).float() / 255


def in_255ths(error: torch.Tensor) -> torch.Tensor:
    return error.abs() * 255


def fixed_jitter(n: int, adjustment: int, factor: float) -> da.Params:
    return {
        "applied": torch.ones(n, dtype=torch.bool),
        "order": torch.arange(4).repeat(n, 1),
        "factors": torch.zeros(n, 4, dtype=torch.float64).index_fill_(1, torch.tensor([adjustment]), factor),
    }


# (a) Each step for fixed parameters.


@pytest.mark.parametrize(
    "name,factor",
    [("brightness", 0.2), ("brightness", 1.8), ("contrast", 0.2), ("contrast", 1.8)]
    + [("saturation", 0.2), ("saturation", 1.8), ("hue", -0.2), ("hue", 0.13)],
)
def test_each_adjustment_matches_torchvision_and_pil(name, factor):
    images = random_images(8)
    jitter = {adjustment: 0.0 for adjustment in ADJUSTMENTS}
    jitter[name] = 0.5 if name == "hue" else 0.9  # the others are skipped, as torchvision skips them
    step = da.ColorJitter(**jitter, p=1.0)
    output = step.apply(images.float() / 255, fixed_jitter(len(images), ADJUSTMENTS.index(name), factor))
    tensor_bound, pil_max, pil_mean = JITTER_BOUNDS[name]
    assert (output - FUNCTIONAL[name](images.float() / 255, factor)).abs().max() <= tensor_bound
    pil = in_255ths(output - from_pil([FUNCTIONAL[name](image, factor) for image in to_pil(images)]))
    assert pil.max() <= pil_max and pil.mean() <= pil_mean, (pil.max(), pil.mean())


def test_jitter_applies_each_images_own_order_and_factors():
    images = random_images(3).float() / 255
    orders = torch.tensor([[3, 0, 2, 1], [1, 2, 3, 0], [0, 1, 2, 3]])
    factors = torch.tensor([[1.5, 0.6, 1.7, 0.15], [0.4, 1.6, 0.3, -0.1], [1.2, 1.2, 1.2, 0.2]], dtype=torch.float64)
    params = {"applied": torch.tensor([True, True, False]), "order": orders, "factors": factors}
    output = da.ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0).apply(images.clone(), params)
    for image, out, order, factor, applied in zip(images, output, orders, factors, params["applied"]):
        expected = image
        for adjustment in order.tolist() if applied else []:
            expected = FUNCTIONAL[ADJUSTMENTS[adjustment]](expected, float(factor[adjustment]))
        assert (out - expected).abs().max() <= GREY_WEIGHTS


def test_grayscale_matches_torchvision_and_pil_and_leaves_the_others():
    images = random_images(6)
    applied = torch.tensor([True, False, True, True, False, True])
    output = da.Grayscale(1.0).apply(images.float() / 255, {"applied": applied})
    grey = images[applied]
    assert (output[applied] - F.rgb_to_grayscale(grey.float() / 255, 3)).abs().max() <= GREY_WEIGHTS
    pil = in_255ths(output[applied] - from_pil([F.rgb_to_grayscale(image, 3) for image in to_pil(grey)]))
    assert pil.max() <= 0.51
    assert torch.equal(output[~applied], images[~applied].float() / 255)


def test_blur_matches_pil_gaussian_blur_radius_per_image():
    radii = torch.tensor([0.1, 0.3, 0.5, 0.9, 1.0, 1.5, 1.99, 2.0], dtype=torch.float64)
    images = random_images(len(radii))
    step = da.GaussianBlur(1.0, 0.1, 2.0)
    output = step.apply(images.float() / 255, {"applied": torch.ones(len(radii), dtype=torch.bool), "radius": radii})
    for image, out, radius in zip(to_pil(images), output, radii.tolist()):
        error = in_255ths(out - from_pil([image.filter(ImageFilter.GaussianBlur(radius))])[0])
        assert error.max() <= 3 and error.mean() <= 1.2, (radius, error.max(), error.mean())


def test_pil_box_radius_keeps_the_variance_of_three_passes():
    radii = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0])
    kernel = da.pil_box_kernel(radii, 31).double()
    offsets = torch.arange(31, dtype=torch.float64) - 15
    assert torch.allclose(kernel.sum(dim=1), torch.ones(5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(3 * (kernel * offsets**2).sum(dim=1), radii.double() ** 2, rtol=1e-5)


def test_solarize_matches_pil_and_torchvision_at_every_threshold_kind():
    thresholds = torch.tensor([0, 1, 64, 127, 128, 129, 255, 256])
    images = random_images(len(thresholds))
    params = {"applied": torch.ones(len(thresholds), dtype=torch.bool), "threshold": thresholds}
    output = da.Solarize(1.0).apply(images.float() / 255, params)
    pil = from_pil([ImageOps.solarize(image, int(t)) for image, t in zip(to_pil(images), thresholds)])
    assert (output - pil).abs().max() <= 1e-6
    for out, image, threshold in zip(output[:-1], images.float() / 255, thresholds[:-1].tolist()):
        assert (out - F.solarize(image, threshold / 255)).abs().max() <= 1e-6  # torchvision takes thresholds <= 1


def test_normalize_matches_torchvision():
    images = random_images(4).float() / 255
    output = da.Normalize(IMAGENET_MEAN, IMAGENET_STD).apply(images.clone(), {})
    assert (output - F.normalize(images, IMAGENET_MEAN, IMAGENET_STD)).abs().max() <= 1e-6


def test_forward_takes_uint8_and_equals_to_tensor_then_normalize_without_photometric_steps():
    images = random_images(2)
    augmentation = da.DeviceAugmentation([{"name": "Normalize", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}])
    expected = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for image, out in zip(to_pil(images), augmentation(images)):
        assert torch.equal(out, expected(image))
    with pytest.raises(ValueError, match=r"takes \(N, 3, H, W\) uint8 images"):
        augmentation(images.float())


# (b) Distributions: the sampled parameters, then the outputs' pixel statistics.

DRAWS = 4000


def test_color_distortion_is_vissls_jitter_and_grayscale():
    vissl = ImgPilColorDistortion(strength=0.7)
    jitter, grayscale = da.build_steps({"name": "ImgPilColorDistortion", "strength": 0.7}, "t")
    reference = vissl.color_jitter
    assert jitter.ranges == [reference.brightness, reference.contrast, reference.saturation, reference.hue]
    assert (jitter.p, grayscale.p) == (vissl.rnd_color_jitter.p, vissl.rnd_gray.p)


def test_jitter_parameters_have_torchvisions_distribution():
    vissl = ImgPilColorDistortion(strength=1.0).color_jitter
    step = da.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8)
    params = step.sample(torch.zeros(DRAWS, dtype=torch.long), torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    draws = [
        T.ColorJitter.get_params(vissl.brightness, vissl.contrast, vissl.saturation, vissl.hue) for _ in range(DRAWS)
    ]
    for adjustment in range(4):
        reference = [draw[1 + adjustment] for draw in draws]
        assert stats.ks_2samp(params["factors"][:, adjustment].numpy(), reference).pvalue > SIGNIFICANCE
    orders = [tuple(order) for order in params["order"].tolist()]
    reference_orders = [tuple(draw[0].tolist()) for draw in draws]
    permutations = sorted(set(reference_orders))
    assert len(permutations) == 24 and set(orders) == set(permutations)
    counts = [[orders.count(p) for p in permutations], [reference_orders.count(p) for p in permutations]]
    assert stats.chi2_contingency(counts).pvalue > SIGNIFICANCE
    assert stats.binomtest(int(params["applied"].sum()), DRAWS, 0.8).pvalue > SIGNIFICANCE


def test_grayscale_blur_and_solarize_parameters_have_vissls_distribution():
    crops, generator = torch.zeros(DRAWS, dtype=torch.long), torch.Generator().manual_seed(1)
    grey = da.Grayscale(0.2).sample(crops, generator)
    assert stats.binomtest(int(grey["applied"].sum()), DRAWS, 0.2).pvalue > SIGNIFICANCE
    vissl_blur = ImgPilGaussianBlur(p=0.5, radius_min=0.1, radius_max=2.0)
    blur = da.GaussianBlur(vissl_blur.prob, vissl_blur.radius_min, vissl_blur.radius_max).sample(crops, generator)
    assert stats.binomtest(int(blur["applied"].sum()), DRAWS, 0.5).pvalue > SIGNIFICANCE
    assert stats.kstest(blur["radius"].numpy(), "uniform", args=(0.1, 1.9)).pvalue > SIGNIFICANCE
    vissl_solarize = ImgPilRandomSolarize(prob=0.2)
    solarize = da.Solarize(vissl_solarize.p).sample(crops.repeat(5), generator)
    assert stats.binomtest(int(solarize["applied"].sum()), 5 * DRAWS, 0.2).pvalue > SIGNIFICANCE
    (threshold,) = vissl_solarize.transform.transforms
    support = range(threshold.min_v, threshold.max_v + 1 if threshold.closed_interval else threshold.max_v)
    assert (int(solarize["threshold"].min()), int(solarize["threshold"].max())) == (support[0], support[-1])
    assert stats.chisquare(torch.bincount(solarize["threshold"], minlength=len(support)).numpy()).pvalue > SIGNIFICANCE


def test_per_crop_probabilities_gate_every_inner_step():
    (step,) = da.build_steps(
        {
            "name": PER_CROP,
            "transforms": [{"name": "ImgPilRandomSolarize", "p": 1.0}],
            "prob": [0.0, 0.2],
        },
        "t",
    )
    crops = torch.arange(2).repeat_interleave(DRAWS)
    params = step.sample(crops, torch.Generator().manual_seed(2))
    assert not params["gate"][:DRAWS].any()
    assert stats.binomtest(int(params["gate"][DRAWS:].sum()), DRAWS, 0.2).pvalue > SIGNIFICANCE
    images = random_images(len(crops), size=4)
    assert torch.equal(step.apply(images.float() / 255, params)[~params["gate"]], images[~params["gate"]].float() / 255)
    with pytest.raises(ValueError, match=r"t.prob=\[0.0, 0.2\] has no probability for crop 2"):
        step.sample(torch.tensor([2]), torch.Generator())


def structured_images(n: int, size: int = 32) -> torch.Tensor:
    """Smooth colour fields plus noise: every adjustment (hue, saturation, blur) changes them."""
    generator = torch.Generator().manual_seed(3)
    low = torch.rand(n, 3, 4, 4, generator=generator)
    fields = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    noise = 0.1 * torch.randn(n, 3, size, size, generator=generator)
    return ((fields + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def pixel_statistics(images: torch.Tensor) -> torch.Tensor:
    """``(N, 8)``: each image's per-channel mean and standard deviation, its mean absolute difference
    of horizontal neighbours (blur lowers it) and its mean spread across channels (0 when grey)."""
    sharpness = (images[..., 1:] - images[..., :-1]).abs().mean(dim=(1, 2, 3))
    chroma = (images.amax(dim=1) - images.amin(dim=1)).mean(dim=(1, 2))
    return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3)), sharpness[:, None], chroma[:, None]], dim=1)


def ks_pvalues(ours: torch.Tensor, theirs: torch.Tensor) -> List[float]:
    """Two-sample Kolmogorov-Smirnov p-value of each of :func:`pixel_statistics`."""
    ours, theirs = pixel_statistics(ours), pixel_statistics(theirs)
    return [stats.ks_2samp(ours[:, k].numpy(), theirs[:, k].numpy()).pvalue for k in range(ours.shape[1])]


PIPELINES = {
    "crops part": part_transforms(CROPS_PARTS[0])[2:],
    "torchvision jitter, grey, solarize": [
        {"name": "ColorJitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
        {"name": "RandomGrayscale", "p": 0.2},
        {"name": "ImgPilRandomSolarize", "p": 0.5},
        {"name": "ToTensor"},
        {"name": "Normalize", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    ],
}


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_outputs_have_the_pixel_statistics_of_vissls_pil_pipeline(pipeline):
    transforms = PIPELINES[pipeline]
    base = structured_images(16)
    images = base.repeat(125, 1, 1, 1)  # 2000 augmentations of 16 images
    # VISSL's PIL pipeline draws from Python's, NumPy's and torch's generators.
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    pil_pipeline = build_transforms(transforms)
    vissl = torch.stack([pil_pipeline(image) for image in to_pil(images)])
    _, device_transforms = da.split_transforms(transforms)
    device = da.DeviceAugmentation(device_transforms, seed=1)(images)
    pvalues = ks_pvalues(device, vissl)
    assert min(pvalues) > SIGNIFICANCE, pvalues


def test_the_pixel_statistics_test_sees_a_wrong_hue_convention():
    """kornia's hue factor is an angle: passing torchvision's fraction of a turn unscaled must fail."""
    transforms = [{"name": "ColorJitter", "hue": 0.5}, {"name": "ToTensor"}]
    images = structured_images(16).repeat(125, 1, 1, 1)
    torch.manual_seed(0)
    vissl = torch.stack([build_transforms(transforms)(image) for image in to_pil(images)])
    augmentation = da.DeviceAugmentation(transforms[:1], seed=1)
    params = augmentation.sample(torch.zeros(len(images), dtype=torch.long))
    params[0]["factors"][:, 3] /= 2 * np.pi
    assert min(ks_pvalues(augmentation.apply(images, params), vissl)) < SIGNIFICANCE


# (c) The split of the recipes' transforms, and the config inference.


@pytest.mark.parametrize("part", CROPS_PARTS)
def test_crops_parts_split_into_geometric_workers_and_photometric_device(part):
    transforms = part_transforms(part)
    worker, device = da.split_transforms(transforms)
    assert worker == [transforms[0], transforms[1], {"name": "PILToTensor"}]
    assert [t["name"] for t in worker[:2]] == ["ImgPilToMultiCrop", "RandomHorizontalFlip"]
    assert device == [transforms[2], transforms[3], transforms[5]]
    assert [t["name"] for t in device] == ["ImgPilColorDistortion", "ImgPilGaussianBlur", "Normalize"]


@pytest.mark.parametrize(
    "part,worker_names,device_names",
    [
        ("parts/cvr_imagenet.yaml", ["ImgPilToMultiCrop", "RandomHorizontalFlip"],
         [PER_CROP, "RandomGrayscale", PER_CROP, PER_CROP, "Normalize"]),
        ("w_mse/parts/imagenet100.yaml", ["ImgReplicatePil", "RandomResizedCrop", "RandomHorizontalFlip"],
         ["ImgPilRandomColorJitter", "RandomGrayscale", "ImgPilGaussianBlur", "Normalize"]),
    ],
)  # fmt: skip
def test_the_other_imagenet_parts_split_too(part, worker_names, device_names):
    """CVR's per-view probabilities and W-MSE's flip after the colour steps (it moves to the workers)."""
    worker, device = da.split_transforms(part_transforms(part))
    assert [t["name"] for t in worker] == [*worker_names, "PILToTensor"]
    assert [t["name"] for t in device] == device_names
    da.DeviceAugmentation(device)


TENSOR = {"name": "ToTensor"}
BLUR = "ImgPilGaussianBlur"


@pytest.mark.parametrize(
    "transforms,message",
    [
        ([{"name": "ImgPilColorDistortion"}, {"name": "RandomResizedCrop", "size": 8}, TENSOR],
         r"TRANSFORMS\[1\].name='RandomResizedCrop' follows the photometric 'ImgPilColorDistortion': only flips"),
        ([{"name": "ImgPilToIsslViews", "size": 8}, TENSOR],
         r"TRANSFORMS\[0\].name='ImgPilToIsslViews' cannot run on the device"),
        ([{"name": BLUR, "sigma": 1}, TENSOR],
         r"unknown key\(s\) TRANSFORMS\[0\].sigma; known: \['p', 'radius_max', 'radius_min'\]"),
        ([{"name": BLUR, "p": 1.5}, TENSOR], r"TRANSFORMS\[0\].p=1.5 must be a probability"),
        ([{"name": BLUR, "radius_min": 3}, TENSOR],
         r"TRANSFORMS\[0\].radius_min=3.0 must be <= TRANSFORMS\[0\].radius_max=2.0"),
        ([{"name": "ColorJitter", "hue": 0.7}, TENSOR], r"TRANSFORMS\[0\]: hue values should be"),
        ([TENSOR, {"name": "ImgPilRandomSolarize"}],
         r"TRANSFORMS\[1\].name='ImgPilRandomSolarize' must come before ToTensor"),
        ([{"name": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1]}, TENSOR], r"must come after ToTensor"),
        ([TENSOR, {"name": "Normalize", "mean": [0, 0], "std": [1, 1, 1]}],
         r"TRANSFORMS\[1\].mean=\[0, 0\] must be 3 numbers"),
        ([TENSOR, {"name": "Normalize", "mean": [0, 0, 0]}], r"TRANSFORMS\[1\].std must be set"),
        ([{"name": "ImgPilColorDistortion"}], r"TRANSFORMS has no ToTensor"),
    ],
)  # fmt: skip
def test_splitting_a_wrong_list_names_the_entry(transforms, message):
    with pytest.raises(ValueError, match=message):
        da.split_transforms(transforms)


def train_config(transforms: List[dict], collator: str = "multicrop_collator", **train) -> AttrDict:
    return AttrDict(
        {"SEED_VALUE": 3, "DATA": {"TRAIN": {"TRANSFORMS": transforms, "COLLATE_FUNCTION": collator, **train}}}
    )


def test_a_recipe_without_the_key_is_unchanged_and_gets_no_hook():
    for config in (train_config(part_transforms(CROPS_PARTS[0])), train_config([], DEVICE_AUGMENTATION=False)):
        before = copy.deepcopy(config)
        infer_device_augmentation(config)
        assert config == before
        assert device_augmentation_hooks(config) == []


def test_the_key_splits_the_recipes_transforms_and_builds_the_hook():
    transforms = part_transforms(CROPS_PARTS[2])
    config = train_config(transforms, DEVICE_AUGMENTATION=True)
    infer_device_augmentation(config)
    assert (config.DATA.TRAIN.TRANSFORMS, config.DATA.TRAIN.DEVICE_TRANSFORMS) == da.split_transforms(transforms)
    (hook,) = device_augmentation_hooks(config)
    assert isinstance(hook, DeviceAugmentationHook) and hook.num_crops == 8 and hook.seed == 3


@pytest.mark.parametrize(
    "train,message",
    [
        ({"DEVICE_AUGMENTATION": "yes"}, r"config.DATA.TRAIN.DEVICE_AUGMENTATION='yes' must be True or False"),
        ({"DEVICE_AUGMENTATION": True, "DEVICE_TRANSFORMS": []}, r"config.DATA.TRAIN.DEVICE_TRANSFORMS is inferred"),
        ({"DEVICE_AUGMENTATION": True, "COLLATE_FUNCTION": "siamese_collator"}, r"COLLATE_FUNCTION='siamese_collator'"),
        ({"DEVICE_AUGMENTATION": True, "COLLATE_FUNCTION": "default_collate"}, r"takes one view per image"),
    ],
)
def test_config_errors_name_the_key(train, message):
    config = train_config(part_transforms(CROPS_PARTS[0]))
    config.DATA.TRAIN.update(train)
    with pytest.raises(ConfigError, match=message):
        infer_device_augmentation(config)


def test_a_split_error_names_the_recipes_key():
    config = train_config([{"name": "ImgPilColorDistortion"}, {"name": "Resize", "size": 8}], DEVICE_AUGMENTATION=True)
    with pytest.raises(ConfigError, match=r"config.DATA.TRAIN.TRANSFORMS\[1\].name='Resize' follows"):
        infer_device_augmentation(config)


def test_workers_emit_uint8_crops_that_the_device_turns_into_the_batch():
    worker, device = da.split_transforms(part_transforms(CROPS_PARTS[1]))
    wrapper, collate = get_transform(worker), get_collator("multicrop_collator", {})
    image = to_pil(random_images(1, size=200))[0]
    samples = [wrapper({"data": [image], "label": [i], "data_valid": [1], "data_idx": [i]}) for i in range(3)]
    assert all(crop.dtype == torch.uint8 for sample in samples for crop in sample["data"])
    views = collate(samples)["data"][0]
    assert [tuple(view.shape) for view in views] == [(3, 3, 160, 160)] * 2 + [(3, 3, 96, 96)] * 4
    augmented = da.DeviceAugmentation(device).augment_views(views)
    assert [(view.shape, view.dtype) for view in augmented] == [(view.shape, torch.float32) for view in views]
    stacked = da.DeviceAugmentation(device).augment_stacked(torch.cat(views[:2]), num_crops=2)
    assert stacked.shape == (6, 3, 160, 160)


# (d) Generator states.


def test_restoring_the_generator_state_replays_the_draws():
    augmentation = da.DeviceAugmentation(PIPELINES["crops part"][:2], seed=5)
    images = structured_images(8)
    state = augmentation.generator_state()
    first = augmentation(images)
    second = augmentation(images)
    augmentation.set_generator_state(state)
    assert torch.equal(augmentation(images), first) and torch.equal(augmentation(images), second)
    assert not torch.equal(first, second)


def fake_task(checkpoint=None, batches=()):
    config = {"CHECKPOINT": {"CHECKPOINT_ITER_FREQUENCY": 2}}
    return SimpleNamespace(
        checkpoint=checkpoint, train=True, iteration=0, config=config,
        data_iterator=iter(DataLoader(batches, batch_size=None)),  # sized, as VISSL's iterators are
        data_and_label_keys={"input": ["data"]},
    )  # fmt: skip


def test_a_resumed_hook_augments_as_the_uninterrupted_one():
    transforms = PIPELINES["crops part"]
    views = list(structured_images(12).split(4))  # 3 crops of 4 images, one size
    batches = [{"data": [views], "label": [torch.zeros(12)]} for _ in range(4)]
    uninterrupted = DeviceAugmentationHook(da.split_transforms(transforms)[1], num_crops=3, seed=0)
    task = fake_task(batches=copy.deepcopy(batches))
    uninterrupted.on_start(task)
    uninterrupted.on_phase_start(task)
    outputs = []
    for _ in range(4):
        outputs.append(next(task.data_iterator)["data"][0])
        task.iteration += 1
        uninterrupted.on_step(task)
        if task.iteration == 2:
            checkpoint = {"classy_state_dict": {"hooks": {"DeviceAugmentationHook": uninterrupted.get_classy_state()}}}
    resumed = DeviceAugmentationHook(da.split_transforms(transforms)[1], num_crops=3, seed=0)
    task = fake_task(checkpoint, batches=copy.deepcopy(batches[2:]))
    resumed.on_start(task)
    resumed.on_phase_start(task)
    assert len(task.data_iterator) == 2
    for expected in outputs[2:]:
        got = next(task.data_iterator)["data"][0]
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert not all(torch.equal(a, b) for a, b in zip(outputs[0], outputs[2]))


def test_ranks_get_distinct_seeds_apart_from_vissls():
    seeds = {rank_seed(seed, rank) for seed in (0, 1) for rank in range(8)}
    vissl = {(seed + rank) * epochs for seed in (0, 1) for rank in range(8) for epochs in (1, 100, 800)}  # set_seeds
    assert len(seeds) == 16 and not seeds & vissl


@pytest.mark.slow
def test_a_launcher_run_augments_on_the_device_and_checkpoints_the_generator(run_launcher):
    """One epoch of the digits recipe with SimCLR colour distortion moved to the device: the dumped
    config has the split, the loss is finite and the checkpoint holds every rank's generator state."""
    transforms = "[{name:ImgReplicatePil,num_times:2},{name:ImgPilColorDistortion,strength:0.5},{name:ToTensor}]"
    run = run_launcher(["config.DATA.TRAIN.DEVICE_AUGMENTATION=True", f"config.DATA.TRAIN.TRANSFORMS={transforms}",
                        "config.OPTIMIZER.num_epochs=1"])  # fmt: skip
    config = yaml.safe_load((run / "train_config.yaml").read_text())["DATA"]["TRAIN"]
    assert [t["name"] for t in config["TRANSFORMS"]] == ["ImgReplicatePil", "PILToTensor"]
    assert [t["name"] for t in config["DEVICE_TRANSFORMS"]] == ["ImgPilColorDistortion"]
    losses = [json.loads(line)["loss"] for line in (run / "stdout.json").read_text().splitlines() if line.strip()]
    assert losses and all(np.isfinite(losses))
    hooks = torch.load(run / "checkpoint.torch", weights_only=False)["classy_state_dict"]["hooks"]
    states = [state for name, state in hooks.items() if "evice" in name]
    assert len(states) == 1 and len(states[0]["ranks"]) == 1
