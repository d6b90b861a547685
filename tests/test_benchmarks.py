"""Linear benchmarks (configs/config/benchmark/linear_image_classification/): every config composes
with its trunk, feature size, head and meters; the torchvision-backed ones never download; the
ImageNet-100 and TinyImageNet tools on fake trees; one tiny CPU run through the plugin launcher."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import vissl_issl.plugin  # noqa: F401  (registers the plugin trunks before VISSL builds models)
from vissl_issl.plugin.launcher import compose

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from vissl.data import build_dataset
from vissl.models.trunks import get_model_trunk

from conftest import REPO, launch

BENCHMARKS = "benchmark/linear_image_classification"
# dataset key in the config names -> (folder, number of classes, VISSL data source, DATASET_NAMES)
DATASETS = {
    "in1k": ("imagenet1k", 1000, "disk_folder", "imagenet1k_folder"),
    "in100": ("imagenet100", 100, "disk_folder", "imagenet100_folder"),
    "tinyimagenet": ("tinyimagenet", 200, "disk_folder", "tinyimagenet_folder"),
    "cifar10": ("cifar10", 10, "torchvision_dataset", "CIFAR10"),
    "cifar100": ("cifar100", 100, "torchvision_dataset", "CIFAR100"),
    "stl10": ("stl10", 10, "torchvision_dataset", "STL10"),
}
TRUNKS = {"d2048": ("resnet", 2048), "d8192": ("resnet_resizer", 8192)}
NORMALIZE = {"name": "Normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def config_name(dataset: str, dim: str) -> str:
    return f"{BENCHMARKS}/{DATASETS[dataset][0]}/eval_resnet50_{dim}_{dataset}_linear"


import build_imagenet100  # noqa: E402  (tools/, on pytest's pythonpath)
import tinyimagenet_val_to_folders as tinyimagenet_val  # noqa: E402


@pytest.mark.parametrize("dim", TRUNKS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_benchmark_composes_with_its_trunk_head_classes_and_meters(dataset: str, dim: str):
    _, config = compose([f"config={config_name(dataset, dim)}"])
    _, classes, source, name = DATASETS[dataset]
    trunk, d = TRUNKS[dim]
    assert config.MODEL.TRUNK.NAME == trunk and config.MODEL.TRUNK.RESNETS.DEPTH == 50
    if dim == "d8192":
        assert config.MODEL.TRUNK.RESNET_RESIZER == {"HIDDEN_DIM": 512, "OUT_DIM": 8192}
    assert config.MODEL.FEATURE_EVAL_SETTINGS.LINEAR_EVAL_FEAT_POOL_OPS_MAP == [["res5avg", ["Identity", []]]]
    assert config.MODEL.FEATURE_EVAL_SETTINGS.EVAL_MODE_ON and config.MODEL.FEATURE_EVAL_SETTINGS.FREEZE_TRUNK_ONLY
    assert config.MODEL.HEAD.PARAMS == [["eval_mlp", {"in_channels": d, "dims": [d, classes]}]]
    meter = config.METERS.accuracy_list_meter
    assert config.METERS.name == "accuracy_list_meter"
    assert meter.topk_values == [1, 5] and meter.num_meters == 1 and meter.meter_names == ["res5avg"]
    assert config.MODEL.WEIGHTS_INIT.STATE_DICT_KEY_NAME == "classy_state_dict"
    for split in ("TRAIN", "TEST"):
        data = config.DATA[split]
        assert data.DATA_SOURCES == [source] and data.LABEL_SOURCES == [source] and data.DATASET_NAMES == [name]
    assert config.LOSS.name == "cross_entropy_multiple_output_single_target"


@pytest.mark.parametrize("dim", TRUNKS)
def test_imagenet_benchmark_is_the_authors_vissl_protocol(dim: str):
    _, config = compose([f"config={config_name('in1k', dim)}"])
    optimizer = config.OPTIMIZER
    assert optimizer.name == "sgd" and optimizer.nesterov and optimizer.momentum == 0.9
    assert optimizer.weight_decay == 0.0005 and not optimizer.regularize_bn and optimizer.num_epochs == 28
    global_batch = config.DATA.TRAIN.BATCHSIZE_PER_REPLICA * config.DISTRIBUTED.NUM_PROC_PER_NODE
    assert global_batch == 8192 and config.DATA.TEST.BATCHSIZE_PER_REPLICA == 1024
    lr = optimizer.param_schedulers.lr
    assert lr.name == "multistep" and lr.milestones == [8, 16, 24] and lr.update_interval == "epoch"
    base = 0.01 * global_batch / 256  # 0.01 per 256 images, auto-scaled
    assert lr["values"] == pytest.approx([base, base / 10, base / 100, base / 1000])
    assert config.DATA.TRAIN.TRANSFORMS == [
        {"name": "RandomResizedCrop", "size": 224},
        {"name": "RandomHorizontalFlip"},
        {"name": "ToTensor"},
        NORMALIZE,
    ]
    assert config.DATA.TEST.TRANSFORMS == [
        {"name": "Resize", "size": 256},
        {"name": "CenterCrop", "size": 224},
        {"name": "ToTensor"},
        NORMALIZE,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("dim", TRUNKS)
def test_res5avg_of_the_benchmark_trunk_has_d_channels(dim: str):
    _, config = compose([f"config={config_name('in1k', dim)}"])
    trunk_name, d = TRUNKS[dim]
    trunk = get_model_trunk(config.MODEL.TRUNK.NAME)(config.MODEL, config.MODEL.TRUNK.NAME).eval()
    with torch.no_grad():
        (res5avg,) = trunk(torch.randn(2, 3, 64, 64), ["res5avg"])
    assert res5avg.shape == (2, d, 1, 1)
    assert ("resizer" in trunk._feature_blocks) == (trunk_name == "resnet_resizer")


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10"])
def test_torchvision_benchmarks_read_an_existing_root_and_never_download(tmp_path, dataset: str):
    root = tmp_path / "torchvision"
    root.mkdir()
    _, config = compose([f"config={config_name(dataset, 'd2048')}", f"config.DATA.TRAIN.DATA_PATHS=[{root}]"])
    with pytest.raises(RuntimeError, match="Dataset not found"):
        build_dataset(config, "TRAIN")
    assert list(root.iterdir()) == []


def write_image(path: Path, seed: int, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def fake_imagenet(root: Path, extra_wnids: List[str]) -> None:
    for split in ("train", "val"):
        for i, wnid in enumerate([*build_imagenet100.IMAGENET100_WNIDS, *extra_wnids]):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            (folder / f"{wnid}_{i}.JPEG").write_bytes(b"jpeg")


def test_imagenet100_class_list_is_cmcs_100_wnids():
    wnids = build_imagenet100.IMAGENET100_WNIDS
    assert len(set(wnids)) == 100 and all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    assert (wnids[0], wnids[-1]) == ("n02869837", "n02090622")  # first and last line of CMC's file


def test_build_imagenet100_links_exactly_the_100_classes(tmp_path):
    extras = ["n01440764", "n01443537", "n15075141"]  # ImageNet-1k classes outside ImageNet-100
    fake_imagenet(tmp_path / "imagenet", extras)
    out = tmp_path / "in100"
    build_imagenet100.build_imagenet100(tmp_path / "imagenet", out)
    for split in ("train", "val"):
        folders = sorted((out / split).iterdir())
        assert [f.name for f in folders] == sorted(build_imagenet100.IMAGENET100_WNIDS)
        sources = [(tmp_path / "imagenet" / split / f.name).resolve() for f in folders]
        assert all(f.is_symlink() and f.resolve() == source for f, source in zip(folders, sources))
    # torchvision's ImageFolder, which VISSL's disk_folder uses, follows the links.
    assert len(ImageFolder(str(out / "train"), loader=lambda path: path).classes) == 100


def test_build_imagenet100_copies_with_copy(tmp_path):
    fake_imagenet(tmp_path / "imagenet", [])
    out = tmp_path / "in100"
    out.mkdir()  # an existing empty folder is fine
    build_imagenet100.build_imagenet100(tmp_path / "imagenet", out, copy=True)
    folder = out / "val" / "n02869837"
    assert folder.is_dir() and not folder.is_symlink() and (folder / "n02869837_0.JPEG").read_bytes() == b"jpeg"


@pytest.mark.slow
def test_build_imagenet100_names_missing_class_folders_and_writes_nothing(tmp_path):
    fake_imagenet(tmp_path / "imagenet", [])
    shutil.rmtree(tmp_path / "imagenet" / "train" / "n02090622")
    shutil.rmtree(tmp_path / "imagenet" / "val" / "n01749939")
    (tmp_path / "imagenet" / "val" / "n01749939").write_bytes(b"")  # a file, not a class folder
    out = tmp_path / "in100"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_imagenet100.py"), str(tmp_path / "imagenet"), str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "2 ImageNet-100 class folder(s) missing" in result.stderr
    assert str(tmp_path / "imagenet" / "val" / "n01749939") in result.stderr
    assert str(tmp_path / "imagenet" / "train" / "n02090622") in result.stderr
    assert not out.exists()


def test_build_imagenet100_refuses_a_non_empty_output(tmp_path):
    fake_imagenet(tmp_path / "imagenet", [])
    out = tmp_path / "in100"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=str(out)):
        build_imagenet100.build_imagenet100(tmp_path / "imagenet", out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


TINY_CLASSES = ["n01443537", "n01629819", "n01641577"]


def fake_tinyimagenet(root: Path, per_class: int = 2) -> Dict[str, str]:
    """train/<wnid>/images/ and val/images/ with val_annotations.txt; returns {val image: wnid}."""
    labels = {}
    for c, wnid in enumerate(TINY_CLASSES):
        write_image(root / "train" / wnid / "images" / f"{wnid}_0.JPEG", seed=c)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(per_class):
            labels[f"val_{c * per_class + i}.JPEG"] = wnid
    for i, name in enumerate(labels):
        write_image(root / "val" / "images" / name, seed=100 + i)
    lines = [f"{name}\t{wnid}\t0\t0\t63\t63" for name, wnid in labels.items()]
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return labels


def tree(folder: Path) -> Dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tinyimagenet_val_goes_to_class_folders_with_the_train_labels(tmp_path):
    labels = fake_tinyimagenet(tmp_path)
    val_before = tree(tmp_path / "val")
    assert tinyimagenet_val.arrange_val(tmp_path) is True
    out = tmp_path / "val_folders"
    assert tree(out) == {f"{wnid}/{name}": val_before[f"images/{name}"] for name, wnid in labels.items()}
    assert tree(tmp_path / "val") == val_before  # the original split is left as it was
    val, train = ImageFolder(str(out)), ImageFolder(str(tmp_path / "train"))
    assert val.class_to_idx == train.class_to_idx and len(train) == len(TINY_CLASSES)
    assert [val.classes[label] for _, label in val.samples] == [labels[Path(p).name] for p, _ in val.samples]


@pytest.mark.slow
def test_tinyimagenet_val_tool_is_a_no_op_the_second_time(tmp_path):
    fake_tinyimagenet(tmp_path)
    tinyimagenet_val.arrange_val(tmp_path)
    first = tree(tmp_path / "val_folders")
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "tinyimagenet_val_to_folders.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "already complete" in result.stdout
    assert tree(tmp_path / "val_folders") == first


def test_tinyimagenet_val_tool_refuses_an_output_that_differs(tmp_path):
    fake_tinyimagenet(tmp_path)
    tinyimagenet_val.arrange_val(tmp_path)
    (tmp_path / "val_folders" / TINY_CLASSES[0] / "val_0.JPEG").unlink()
    with pytest.raises(FileExistsError, match="val_0.JPEG"):
        tinyimagenet_val.arrange_val(tmp_path)


@pytest.mark.slow
def test_tinyimagenet_val_tool_names_missing_images_and_writes_nothing(tmp_path):
    fake_tinyimagenet(tmp_path)
    (tmp_path / "val" / "images" / "val_3.JPEG").unlink()
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "tinyimagenet_val_to_folders.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "val_3.JPEG" in result.stderr and "1 image(s)" in result.stderr
    assert not (tmp_path / "val_folders").exists() and not (tmp_path / "val_folders.partial").exists()


def test_tinyimagenet_val_tool_refuses_val_classes_unlike_train(tmp_path):
    fake_tinyimagenet(tmp_path)
    annotations = tmp_path / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text().replace(TINY_CLASSES[2], "n09999999"))
    with pytest.raises(ValueError, match=r"only in val \['n09999999'\], only in train \['n01641577'\]"):
        tinyimagenet_val.arrange_val(tmp_path)
    assert not (tmp_path / "val_folders").exists()


def saved_model(checkpoint: Path) -> Dict[str, Dict[str, torch.Tensor]]:
    """``{"trunk": ..., "heads": ...}`` of a VISSL checkpoint, trunk keys as the pretraining saved them."""
    model = torch.load(checkpoint, map_location="cpu", weights_only=False)["classy_state_dict"]["base_model"]["model"]
    trunk = {key.removeprefix("base_model."): value for key, value in model["trunk"].items()}
    return {"trunk": trunk, "heads": model["heads"]}


@pytest.mark.slow
def test_tinyimagenet_d8192_benchmark_runs_on_cpu_through_the_launcher(tmp_path):
    data = tmp_path / "tiny-imagenet-200"
    fake_tinyimagenet(data)
    tinyimagenet_val.arrange_val(data)

    # A "pretrained" d = 8192 trunk with non-default BN statistics, saved as a VISSL checkpoint.
    name = config_name("tinyimagenet", "d8192")
    _, config = compose([f"config={name}"])
    torch.manual_seed(0)
    trunk = get_model_trunk("resnet_resizer")(config.MODEL, "resnet_resizer")
    for module in trunk.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    pretrained = {key: value.clone() for key, value in trunk.state_dict().items()}
    weights = tmp_path / "pretrained.torch"
    torch.save({"classy_state_dict": {"base_model": {"model": {"trunk": pretrained, "heads": {}}}}}, weights)

    run_dir = tmp_path / "run"
    overrides = [
        f"config={name}",
        f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={weights}",
        f"config.DATA.TRAIN.DATA_PATHS=[{data / 'train'}]",
        f"config.DATA.TEST.DATA_PATHS=[{data / 'val_folders'}]",
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=3",
        "config.DATA.TEST.BATCHSIZE_PER_REPLICA=3",
        "config.DATA.NUM_DATALOADER_WORKERS=0",
        "config.OPTIMIZER.num_epochs=1",
        "config.OPTIMIZER.param_schedulers.lr.values=[0.01]",
        "config.OPTIMIZER.param_schedulers.lr.milestones=[]",
        "config.MACHINE.DEVICE=cpu",
        "config.DISTRIBUTED.BACKEND=gloo",
        "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
        f"config.CHECKPOINT.DIR={run_dir}",
    ]
    result = launch(overrides, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lines = (run_dir / "metrics.json").read_text().splitlines()
    tests = [json.loads(line)["test_accuracy_list_meter"] for line in lines if "test_accuracy_list_meter" in line]
    assert len(tests) == 1 and set(tests[0]) == {"top_1", "top_5"}
    assert all(0.0 <= tests[0][k]["res5avg"] <= 100.0 for k in ("top_1", "top_5"))
    final = saved_model(run_dir / "model_final_checkpoint_phase0.torch")
    assert final["trunk"].keys() == pretrained.keys()
    for key, value in pretrained.items():  # loaded from PARAMS_FILE and kept frozen
        assert torch.equal(final["trunk"][key], value), key
    head_shapes = {tuple(value.shape) for value in final["heads"].values()}
    assert (8192,) in head_shapes and (200, 8192) in head_shapes  # BN over d, then Linear d -> 200
