"""Bad input at the edges fails before any work, naming the file or key: data paths, images
smaller than a fixed crop, a loss key that has no effect, a broken-image threshold that is no
fraction, and a checkpoint of another method or trunk given to the probe, the compressor or the hub."""

from pathlib import Path
from typing import Tuple

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin.disk_images import DiskImages, ImageTooSmallError, first_fixed_crop
from vissl_issl.plugin.input_checks import check_data_paths
from vissl_issl.plugin.launcher import compose

import pytest
import torch
from PIL import Image

from conftest import DISSL_DIGITS, REPO, launch
from vissl_issl.config import ConfigError
from vissl_issl.evaluation import probe

CISSL_DIGITS = "pretrain/cissl/cissl_resnet18_digits"


def write_image(path: Path, size: Tuple[int, int] = (24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path)
    return path


def with_paths(*paths: str, source: str = "disk_folder", split: str = "TRAIN"):
    overrides = [f"config={DISSL_DIGITS}", f"config.DATA.{split}.DATA_SOURCES=[{source}]"]
    if paths:
        overrides.append(f"config.DATA.{split}.DATA_PATHS=[{','.join(paths)}]")
    return compose(overrides)[1]


# ---------------------------------------------------------------- data paths


def test_an_image_folder_with_images_in_every_class_passes(tmp_path):
    write_image(tmp_path / "a" / "1.png")
    write_image(tmp_path / "b" / "deeper" / "2.JPEG")  # ImageFolder walks sub-folders, any case
    check_data_paths(with_paths(str(tmp_path)))
    check_data_paths(compose([f"config={DISSL_DIGITS}"])[1])  # an in-memory source has no path to check


@pytest.mark.parametrize(
    "layout, message",
    [
        ("missing", "{root}: no such folder (disk_folder reads a folder)"),
        ("file", "{root}: a file, not a folder (disk_folder reads a folder)"),
        ("flat", "{root} has no class sub-folder: disk_folder reads <folder>/<class>/<image> (.jpg, .jpeg, .png"),
        ("empty", "{root} has no class sub-folder: disk_folder reads <folder>/<class>/<image> (.jpg"),
        ("no images", "{root} holds no image in its 2 class folder(s)"),
        ("one empty class", "{root}: class folder(s) b hold no image, which ImageFolder refuses"),
    ],
)
def test_a_bad_image_folder_is_named_with_its_key(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "file":
        root.write_bytes(b"an image file, not a folder")
    if layout == "flat":
        write_image(root / "1.png")
    if layout == "empty":
        root.mkdir()
    if layout == "no images":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "b" / "notes.txt").write_text("no image")
    if layout == "one empty class":
        write_image(root / "a" / "1.png")
        (root / "b").mkdir()
    with pytest.raises(ConfigError) as error:
        check_data_paths(with_paths(str(root)))
    assert str(error.value).startswith("config.DATA.TRAIN.DATA_PATHS[0]=" + message.format(root=root))
    if layout == "flat":
        assert str(error.value).endswith("it holds 1 image file(s) directly")


def test_empty_data_paths_need_a_catalog_entry():
    config = compose(["config=pretrain/dissl"])[1]  # ImageNet by DATASET_NAMES, no catalog file
    message = (
        r"config\.DATA\.TRAIN\.DATA_PATHS is empty and config\.DATA\.TRAIN\.DATASET_NAMES\[0\]='imagenet1k_folder'"
    )
    with pytest.raises(ConfigError, match=message):
        check_data_paths(config)


def test_file_lists_and_torchvision_roots_must_exist(tmp_path):
    with pytest.raises(ConfigError, match=rf"DATA_PATHS\[0\]={tmp_path / 'list.npy'}: no such file"):
        check_data_paths(with_paths(str(tmp_path / "list.npy"), source="disk_filelist"))
    with pytest.raises(ConfigError, match=rf"DATA_PATHS\[0\]={tmp_path / 'cifar'}: no such folder"):
        check_data_paths(with_paths(str(tmp_path / "cifar"), source="torchvision_dataset"))


def test_only_the_splits_a_run_reads_are_checked(tmp_path):
    config = with_paths(str(tmp_path / "missing"), split="TEST")
    check_data_paths(config)  # the digits recipe does not test
    config.TEST_MODEL = True
    with pytest.raises(ConfigError, match=r"config\.DATA\.TEST\.DATA_PATHS\[0\]"):
        check_data_paths(config)


@pytest.mark.slow
def test_the_launcher_refuses_a_missing_folder_before_starting_a_rank(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        f"config={DISSL_DIGITS}",
        "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
        f"config.DATA.TRAIN.DATA_PATHS=[{tmp_path / 'missing'}]",
        f"config.CHECKPOINT.DIR={run_dir}",
    ]
    result = launch(overrides, tmp_path)
    assert result.returncode != 0
    assert f"ConfigError: config.DATA.TRAIN.DATA_PATHS[0]={tmp_path / 'missing'}: no such folder" in result.stderr
    assert not (run_dir / "log.txt").exists()  # each rank logs there from its start


# ---------------------------------------------------------------- images smaller than a crop


def source_with(tmp_path: Path, transforms: str) -> DiskImages:
    config = compose(
        [
            f"config={DISSL_DIGITS}",
            "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
            f"config.DATA.TRAIN.DATA_PATHS=[{tmp_path}]",
            # DISSL needs 2 views
            f"config.DATA.TRAIN.TRANSFORMS=[{{name:ImgReplicatePil,num_times:2}},{transforms}]",
            "config.DATA.TRAIN.DEVICE_AUGMENTATION=False",  # these transforms end in PIL images
        ]
    )[1]
    return DiskImages(config, "disk_folder", str(tmp_path), "TRAIN", "folder")


def test_an_image_smaller_than_an_unpadded_random_crop_is_named(tmp_path):
    write_image(tmp_path / "a" / "big.png", (40, 40))
    small = write_image(tmp_path / "a" / "small.png", (40, 20))
    source = source_with(tmp_path, "{name:RandomCrop,size:32},{name:ToTensor}")
    assert source[0][1]  # 40x40 holds a 32x32 crop
    message = rf"{small} is 40x20 px \(width x height\), smaller than the 32x32 RandomCrop of config\.DATA\.TRAIN\."
    message += r"TRANSFORMS\[1\]: resize before it, pad \(pad_if_needed: True\), or remove the image"
    with pytest.raises(ImageTooSmallError, match=message):
        source[1]


@pytest.mark.parametrize(
    "transforms",
    [
        "{name:Resize,size:40},{name:RandomCrop,size:32}",  # resized first
        "{name:RandomCrop,size:32,pad_if_needed:True}",  # padded
        "{name:RandomResizedCrop,size:32}",  # resamples any size
        "{name:CenterCrop,size:32}",  # torchvision pads
    ],
)
def test_crops_that_cope_with_small_images_are_not_checked(tmp_path, transforms):
    write_image(tmp_path / "a" / "small.png", (16, 16))
    source = source_with(tmp_path, transforms)
    assert source.fixed_crop is None and source[0][1]


def test_first_fixed_crop_stops_at_transforms_of_unknown_effect():
    assert first_fixed_crop([{"name": "RandomHorizontalFlip"}, {"name": "FiveCrop", "size": [8, 12]}]) == (
        1,
        "FiveCrop",
        (8, 12),
    )
    assert first_fixed_crop([{"name": "MyResize"}, {"name": "RandomCrop", "size": 8}]) is None


# ---------------------------------------------------------------- config keys


@pytest.mark.parametrize(
    "override",
    ["+config.LOSS.dissl_loss.beta_det_inv=0.5", "config.LOSS.simclr_info_nce_loss.temperature=0.2"],
)
def test_a_key_of_a_loss_that_is_not_trained_is_refused(override):
    block = override.lstrip("+").split(".")[2]
    message = rf"config\.LOSS\.{block} has no effect, the loss is config\.LOSS\.name=cissl_loss"
    with pytest.raises(ConfigError, match=message):
        compose([f"config={CISSL_DIGITS}", override])


def test_keys_of_the_trained_loss_and_of_a_loss_switched_to_are_accepted():
    assert compose([f"config={CISSL_DIGITS}", "config.LOSS.cissl_loss.temperature=0.2"])[1].LOSS.name == "cissl_loss"
    switched = [f"config={CISSL_DIGITS}", "config.LOSS.name=dissl_loss", "+config.LOSS.dissl_loss.beta_det_inv=0.5"]
    assert compose(switched)[1].LOSS.dissl_loss.beta_det_inv == 0.5
    # Recipes compose parts that bring other losses' blocks (C-SimCLR's recipes SimCLR's); not an override.
    assert compose(["config=pretrain/c_simclr/c_simclr_resnet18_digits"])[1].LOSS.simclr_info_nce_loss.temperature


@pytest.mark.parametrize("value", ["2", "-0.1", "abc", "True"])
def test_a_broken_image_threshold_that_is_no_fraction_is_refused(value):
    with pytest.raises(
        ConfigError, match=r"config\.DATA\.TRAIN\.MAX_BROKEN_FRACTION=.* must be a fraction in \[0, 1\]"
    ):
        compose([f"config={DISSL_DIGITS}", f"+config.DATA.TRAIN.MAX_BROKEN_FRACTION={value}"])


# ---------------------------------------------------------------- checkpoints of another method


def save_run(directory: Path, *overrides: str) -> Path:
    """A checkpoint of an untrained model of a composed recipe, with the train_config.yaml that
    the launcher writes."""
    from vissl.models import build_model

    config = compose([*overrides, f"config.CHECKPOINT.DIR={directory}"], dump_config=True)[1]
    torch.manual_seed(0)
    model = build_model(config.MODEL, config.OPTIMIZER)
    path = directory / "model_final_checkpoint_phase0.torch"
    torch.save({"classy_state_dict": {"base_model": model.get_classy_state()}}, path)
    return path


def test_probe_names_the_checkpoint_and_both_trunks_when_they_differ(tmp_path):
    checkpoint = save_run(tmp_path / "cissl", f"config={CISSL_DIGITS}")
    other = compose([f"config={DISSL_DIGITS}", "config.MODEL.TRUNK.TV_RESNET.SMALL_IMAGE_STEM=False"])[1]
    with pytest.raises(SystemExit) as error:
        probe.build_trunk(str(checkpoint), other)
    message = str(error.value)
    assert f"{checkpoint}: its trunk does not fit the trunk of the config, loss dissl_loss, trunk tv_resnet" in message
    assert "_feature_blocks.conv1.weight: (64, 3, 3, 3) in the file, (64, 3, 7, 7) in the model" in message
    assert "its train_config.yaml trained loss cissl_loss, trunk tv_resnet (depth 18), heads [mlp, mlp]" in message
    probe.build_trunk(str(checkpoint), compose([f"config={DISSL_DIGITS}"])[1])  # same trunk, another method: fine


def test_compress_refuses_a_checkpoint_without_a_bottleneck_naming_what_it_trained(tmp_path):
    from vissl_issl.compression import tool as compress

    checkpoint = save_run(tmp_path / "dissl", f"config={DISSL_DIGITS}")
    with pytest.raises(SystemExit) as error:
        compress.main(["encode", "--checkpoint", str(checkpoint), "--data", "digits", "--out", str(tmp_path / "c.bin")])
    message = str(error.value)
    assert f"--checkpoint: {checkpoint}: the config (loss dissl_loss, trunk tv_resnet (depth 18)" in message
    assert "has no entropy_bottleneck head to code with" in message
    assert "its train_config.yaml trained loss dissl_loss" in message
    assert not (tmp_path / "c.bin").exists()


def test_hub_release_given_another_resnet_names_the_file_and_both_architectures(tmp_path):
    from vissl_issl.architectures.resnet import ResNetArch, build_resnet

    path = tmp_path / "resnet18.torch"
    torch.save(build_resnet(ResNetArch(18, small_image_stem=True)).state_dict(), path)
    with pytest.raises(ValueError) as error:
        torch.hub.load(str(REPO), "dissl_resnet50_dNone_e100_m2", source="local", weights=str(path))
    message = str(error.value)
    assert f"{path} does not fit the model" in message
    assert "the file holds a ResNet-18, 3x3 stride-1 stem, no resizer: 512-d features" in message
    assert "the model is a ResNet-50, 7x7 stride-2 stem, no resizer: 2048-d features" in message
