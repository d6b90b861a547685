"""The ISSL views (vissl_issl/data/augmentations.py): the spec's numbers per strength, the views'
count, size and randomness, the parameter checks, and the transform through VISSL's wrapper, data
set and ``multicrop_collator``."""

from typing import List

import vissl_issl.plugin  # noqa: F401  (registers ImgPilToIsslViews and the sklearn_digits source)

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from vissl.config import AttrDict
from vissl.data import build_dataloader, build_dataset
from vissl.data.ssl_transforms import get_transform
from vissl.utils.hydra_config import compose_hydra_configuration, convert_to_attrdict

from vissl_issl.data import digits
from vissl_issl.data.augmentations import COARSE, STANDARD, IsslViews, blur_kernel_size, view_transform

# issl_experiments.md, "Fig. 7a": s -> (crop scale's lower bound, brightness/contrast/saturation jitter,
# hue jitter, grayscale p); s 2 is the "coarse" setting of the "Augmentations" paragraph.
SPEC = {
    0.25: (0.8, 0.1, 0.025, 0.025),
    0.5: (0.4, 0.2, 0.05, 0.05),
    1.0: (0.2, 0.4, 0.1, 0.1),
    2.0: (0.1, 0.8, 0.2, 0.2),
}
DIGITS_VIEWS = [
    {"name": "ImgPilToIsslViews", "size": 16, "strength": 1.0, "blur": False, "total_num_crops": 2},
    {"name": "ToTensor"},
    {"name": "Normalize", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
]


def noise_image(size: int = 80) -> Image.Image:
    """An image whose crops, flips and colours all show: every pixel random."""
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def digits_image() -> Image.Image:
    source = digits.DigitsDataset(
        AttrDict({"DATA": {"TRAIN": {}}}),
        path="",
        split="TRAIN",
        dataset_name=digits.DATASET_NAME,
        data_source=digits.SOURCE_NAME,
    )
    return source[0][0]


def steps(strength: float, blur: bool, size: int = 64) -> List[object]:
    return list(view_transform(size, strength, blur).transforms)


@pytest.mark.parametrize("strength", sorted(SPEC))
def test_per_view_parameters_are_the_specs_numbers(strength):
    crop_min, jitter, hue, grayscale_p = SPEC[strength]
    crop, flip, colour, grayscale = steps(strength, blur=False)
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (64, 64)
    assert crop.scale == pytest.approx((crop_min, 1.0)) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(flip, T.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(colour, T.RandomApply) and colour.p == 0.8
    (color_jitter,) = colour.transforms
    assert isinstance(color_jitter, T.ColorJitter)
    for factor in (color_jitter.brightness, color_jitter.contrast, color_jitter.saturation):
        assert factor == pytest.approx((1 - jitter, 1 + jitter))
    assert color_jitter.hue == pytest.approx((-hue, hue))
    assert isinstance(grayscale, T.RandomGrayscale) and grayscale.p == pytest.approx(grayscale_p)


@pytest.mark.parametrize("strength", sorted(SPEC))
def test_blur_is_the_last_step_only_when_forced(strength):
    without_blur, with_blur = steps(strength, blur=False), steps(strength, blur=True)
    assert len(without_blur) == 4
    assert [type(step) for step in with_blur[:4]] == [type(step) for step in without_blur]
    assert len(with_blur) == 5 and isinstance(with_blur[4], T.RandomApply) and with_blur[4].p == 0.5
    (blur,) = with_blur[4].transforms
    assert isinstance(blur, T.GaussianBlur)
    assert blur.kernel_size == (7, 7) and blur.sigma == (0.1, 2.0)


@pytest.mark.parametrize("size, kernel", [(64, 7), (16, 1), (32, 3), (20, 3), (50, 5), (100, 11), (224, 23)])
def test_blur_kernel_is_a_tenth_of_the_side_made_odd(size, kernel):
    assert blur_kernel_size(size) == kernel


def test_standard_and_coarse_are_the_spec_settings():
    assert dict(STANDARD) == {"strength": 1.0, "blur": False}
    assert dict(COARSE) == {"strength": 2.0, "blur": True}
    coarse = steps(**COARSE)
    assert coarse[0].scale == pytest.approx((0.1, 1.0)) and isinstance(coarse[-1].transforms[0], T.GaussianBlur)


@pytest.mark.parametrize("total_num_crops, size, blur", [(2, 64, False), (3, 64, True), (1, 16, False)])
def test_output_is_total_num_crops_images_of_the_size(total_num_crops, size, blur):
    views = IsslViews(size, strength=1.0, blur=blur, total_num_crops=total_num_crops)(noise_image())
    assert len(views) == total_num_crops
    assert all(isinstance(view, Image.Image) and view.size == (size, size) and view.mode == "RGB" for view in views)


def test_seeded_views_repeat_and_differ_from_each_other():
    views = IsslViews(64, **COARSE, total_num_crops=4)
    image = noise_image()
    torch.manual_seed(0)
    first = [np.asarray(view) for view in views(image)]
    torch.manual_seed(0)
    second = [np.asarray(view) for view in views(image)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert all(not np.array_equal(first[i], first[j]) for i in range(4) for j in range(i + 1, 4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 0.0}, r"strength=0\.0 must be a finite number > 0"),
        ({"strength": -1.0}, r"strength=-1\.0 must be a finite number > 0"),
        ({"strength": float("nan")}, r"strength=nan must be a finite number > 0"),
        ({"strength": True}, r"strength=True must be a finite number > 0"),
        ({"strength": 0.1}, r"strength=0\.1 must be >= 0\.2: the crop scale's lower bound 0\.2 / strength = 2"),
        ({"strength": 5.5}, r"strength=5\.5 must be <= 5: the hue jitter 0\.1 \* strength = 0\.55"),
        ({"size": 0}, r"size=0 must be an integer >= 1"),
        ({"size": 16.0}, r"size=16\.0 must be an integer >= 1"),
        ({"blur": "False"}, r"blur='False' must be True or False"),
        ({"total_num_crops": 0}, r"total_num_crops=0 must be an integer >= 1"),
        ({"total_num_crops": 2.0}, r"total_num_crops=2\.0 must be an integer >= 1"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(kwargs, message):
    parameters = {"size": 64, "strength": 1.0, "blur": False, "total_num_crops": 2, **kwargs}
    with pytest.raises(ValueError, match=rf"ImgPilToIsslViews: {message}"):
        IsslViews(**parameters)


def test_strength_bounds_are_accepted():
    for strength in (0.2, 5.0):
        assert len(IsslViews(16, strength=strength)(noise_image())) == 2


def test_config_entry_with_an_unknown_or_missing_key_is_rejected():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sizes'\]; known: \['size', 'strength'"):
        IsslViews.from_config({"sizes": 64, "strength": 1.0})
    with pytest.raises(ValueError, match=r"ImgPilToIsslViews: size is required"):
        IsslViews.from_config({"strength": 1.0, "total_num_crops": 2})
    with pytest.raises(ValueError, match=r"ImgPilToIsslViews: total_num_crops is required"):
        IsslViews.from_config({"size": 64})


def test_vissl_wrapper_turns_a_digits_sample_into_two_view_tensors():
    transform = get_transform(DIGITS_VIEWS)
    sample = {"data": [digits_image()], "label": [7], "data_valid": [1], "data_idx": [3]}
    torch.manual_seed(0)
    output = transform(sample)
    assert len(output["data"]) == 2
    assert all(isinstance(view, torch.Tensor) and view.shape == (3, 16, 16) for view in output["data"])
    assert not torch.equal(*output["data"])
    assert output["label"] == [7, 7] and output["data_valid"] == [1, 1] and output["data_idx"] == [3, 3]


def test_multicrop_collator_gets_one_batch_tensor_per_view(tmp_path):
    overrides = [
        "config=pretrain/dissl/dissl_resnet18_digits",
        f"config.CHECKPOINT.DIR={tmp_path}",
        "config.DATA.TRAIN.TRANSFORMS=[{name:ImgPilToIsslViews,size:16,strength:1.0,blur:False,total_num_crops:2},{name:ToTensor}]",
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=4",
        "config.DATA.TRAIN.DATA_LIMIT=8",
    ]
    config = convert_to_attrdict(compose_hydra_configuration(overrides), dump_config=False)[1]
    assert config.DATA.TRAIN.COLLATE_FUNCTION == "multicrop_collator"
    loader = build_dataloader(
        build_dataset(config, "TRAIN"),
        config.DATA.TRAIN,
        num_dataloader_workers=0,
        pin_memory=False,
        multi_processing_method=config.MULTI_PROCESSING_METHOD,
        device=torch.device("cpu"),
    )
    batch = next(iter(loader))
    (views,) = batch["data"]
    assert len(views) == 2 and all(view.shape == (4, 3, 16, 16) for view in views)
    assert batch["data_idx"][0].shape == (8,)
