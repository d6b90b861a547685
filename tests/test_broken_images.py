"""Images that cannot be read or decoded: counted, logged, written to metrics.json and held to a
threshold, in pretraining (the plugin's disk sources and BrokenImagesHook) and in the probe's
folders (BrokenImageFolder)."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import List

import vissl_issl.plugin  # noqa: F401  (registers the disk sources)
from vissl_issl.plugin.disk_images import DiskImages
from vissl_issl.plugin.hooks.broken_images import BrokenImagesHook, sample_names
from vissl_issl.plugin.launcher import compose

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image

from conftest import DISSL_DIGITS, REPO, launch, run_tool
from vissl_issl.data.broken_images import BrokenImageFolder, BrokenImagesError
from vissl_issl.evaluation import probe
from vissl_issl.evaluation.features import extract_features

KEY = "config.DATA.TRAIN.MAX_BROKEN_FRACTION"


def write_folder(root: Path, per_class: int = 16, classes: int = 2, size: int = 24) -> List[Path]:
    """``classes`` x ``per_class`` random RGB PNGs in class folders; returns them in folder order."""
    rng = np.random.default_rng(0)
    paths = []
    for label in range(classes):
        for index in range(per_class):
            path = root / f"class{label}" / f"{index:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def break_files(paths: List[Path]) -> None:
    """Alternately garbage bytes and a PNG cut in half: PIL cannot identify the first and fails
    half-way through decoding the second."""
    for number, path in enumerate(paths):
        content = path.read_bytes()
        path.write_bytes(b"not an image" if number % 2 == 0 else content[: len(content) // 2])


# ---------------------------------------------------------------- the disk sources


def folder_config(root: Path, *overrides: str):
    return compose(
        [
            f"config={DISSL_DIGITS}",
            "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
            f"config.DATA.TRAIN.DATA_PATHS=[{root}]",
            *overrides,
        ]
    )[1]


@pytest.mark.parametrize("kind", ["disk_folder", "disk_filelist"])
def test_a_broken_image_is_marked_invalid_without_a_warning_per_image(tmp_path, caplog, kind):
    paths = write_folder(tmp_path / "images")
    break_files(paths[:2])
    path = tmp_path / "images"
    if kind == "disk_filelist":
        path = tmp_path / "files.npy"
        np.save(path, np.array([str(image) for image in paths]))
    source = DiskImages(folder_config(tmp_path / "images"), kind, str(path), "TRAIN", "images")
    # Named as in the main process, where VISSL empties the file list after counting it
    assert source.image_paths([1, 2]) == [str(paths[1]), str(paths[2])]
    with caplog.at_level(logging.DEBUG):
        items = [source[index] for index in range(len(paths))]
    assert [valid for _, valid in items] == [False, False] + [True] * (len(paths) - 2)
    grey = np.asarray(items[0][0])
    assert grey.shape == (224, 224, 3) and (grey == 128).all()  # VISSL's placeholder
    assert np.array_equal(np.asarray(items[2][0]), np.asarray(Image.open(paths[2]).convert("RGB")))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert source.image_paths([1, 2]) == [str(paths[1]), str(paths[2])]


def test_images_are_decoded_once(tmp_path, monkeypatch):
    """VISSL 0.1.6's disk_folder decoded each image twice; the plugin's source decodes it once."""
    write_folder(tmp_path, per_class=1, classes=1)
    source = DiskImages(folder_config(tmp_path), "disk_folder", str(tmp_path), "TRAIN", "folder")
    opened = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(1) or original(*args, **kwargs))
    image, valid = source[0]
    assert valid and len(opened) == 1 and np.asarray(image).shape == (24, 24, 3)


def test_a_stand_in_from_vissls_queue_still_counts_as_broken(tmp_path):
    paths = write_folder(tmp_path, per_class=4)
    break_files([paths[3]])
    config = folder_config(
        tmp_path, "config.DATA.TRAIN.ENABLE_QUEUE_DATASET=True", "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=2"
    )
    source = DiskImages(config, "disk_folder", str(tmp_path), "TRAIN", "folder")
    items = [source[index] for index in range(len(paths))]
    image, valid = items[3]
    assert not valid
    seen = [np.asarray(item[0]) for item in items[:3]]
    assert any(np.array_equal(np.asarray(image), earlier) for earlier in seen)  # a seen image, not grey


def test_sample_names_follow_data_limit_to_the_files(tmp_path):
    from vissl.data import build_dataset

    paths = write_folder(tmp_path)
    broken = paths[5:7]
    break_files(broken)
    dataset = build_dataset(folder_config(tmp_path, "config.DATA.TRAIN.DATA_LIMIT=20"), "TRAIN")
    invalid = [index for index in range(len(dataset)) if dataset[index]["data_valid"][0] == -1]
    names = sample_names(dataset, invalid)
    assert set(names) <= {str(path) for path in broken} and len(names) == len(invalid)
    assert all(Path(name) in paths for name in sample_names(dataset, range(len(dataset))))


# ---------------------------------------------------------------- the hook


def fake_task(tmp_path: Path, images: int) -> SimpleNamespace:
    """What BrokenImagesHook reads of VISSL's task, for a phase over ``images`` in-memory samples."""
    dataset = SimpleNamespace(data_objs=[object()])
    return SimpleNamespace(
        train=True, phase_idx=0, train_phase_idx=0, iteration=0, checkpoint_folder=str(tmp_path),
        num_phase_samples=lambda phase: images, datasets={"train": dataset}, last_batch=SimpleNamespace(),
    )  # fmt: skip


def step(hook: BrokenImagesHook, task, indices: List[int], broken: List[int], views: int = 2) -> None:
    """A batch of ``indices`` seen in ``views`` views, as VISSL's multicrop collator lays it out."""
    data_idx = torch.tensor(indices * views)
    data_valid = torch.tensor([-1 if index in broken else 1 for index in indices] * views)
    task.last_batch.sample = {"data_idx": [data_idx], "data_valid": [data_valid]}
    hook.on_forward(task)


def test_the_hook_counts_images_not_views_and_writes_one_metrics_line_per_phase(tmp_path):
    task = fake_task(tmp_path, images=40)
    hook = BrokenImagesHook({"train": 0.05, "test": 0.0})  # 2 of 40 allowed
    hook.on_phase_start(task)
    step(hook, task, list(range(20)), broken=[2])
    step(hook, task, list(range(20, 40)), broken=[27])
    hook.on_phase_end(task)
    (line,) = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    record = line["train_broken_images"]
    assert (record["broken"], record["images"], record["fraction"], record["per_rank"]) == (2, 40, 0.05, [2])
    assert record["max_fraction"] == 0.05 and record["sample"] == ["sample 2", "sample 27"]


def test_the_hook_stops_a_phase_once_its_count_exceeds_what_the_whole_phase_allows(tmp_path):
    task = fake_task(tmp_path, images=40)
    hook = BrokenImagesHook({"train": 0.05, "test": 0.0})
    hook.on_phase_start(task)
    step(hook, task, [0, 1, 2, 3], broken=[0, 1])
    message = r"at least 3 of the 40 train images of phase 0 .* \(2 of 40\): sample 0, sample 1, sample 5;"
    with pytest.raises(BrokenImagesError, match=message):
        step(hook, task, [4, 5], broken=[5])
    assert not (tmp_path / "metrics.json").exists()


def test_the_hook_refuses_a_phase_over_its_threshold_at_its_end(tmp_path):
    # 36 images in the phase allow 1 at 0.03, but only 32 were seen (DROP_LAST), which allow none.
    task = fake_task(tmp_path, images=36)
    hook = BrokenImagesHook({"train": 0.03, "test": 0.0})
    hook.on_phase_start(task)
    step(hook, task, list(range(32)), broken=[9])
    with pytest.raises(BrokenImagesError, match=r"^1 of the 32 train images of phase 0 .* \(0 of 32\): sample 9"):
        hook.on_phase_end(task)
    assert json.loads((tmp_path / "metrics.json").read_text())["train_broken_images"]["broken"] == 1


# ---------------------------------------------------------------- training runs


def train(tmp_path: Path, root: Path, name: str, *overrides: str):
    run_dir = tmp_path / name
    result = launch(
        [
            f"config={DISSL_DIGITS}",
            "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
            f"config.DATA.TRAIN.DATA_PATHS=[{root}]",
            "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=8",
            "config.DATA.NUM_DATALOADER_WORKERS=0",
            "config.OPTIMIZER.num_epochs=1",
            f"config.CHECKPOINT.DIR={run_dir}",
            *overrides,
        ],
        tmp_path,
    )
    return result, run_dir


def broken_records(run_dir: Path) -> List[dict]:
    lines = (run_dir / "metrics.json").read_text().splitlines()
    return [json.loads(line)["train_broken_images"] for line in lines if "train_broken_images" in line]


@pytest.mark.slow
def test_under_the_threshold_training_finishes_counting_and_naming_them_each_epoch(tmp_path):
    paths = write_folder(tmp_path / "images")
    broken = paths[3:5]
    break_files(broken)
    result, run_dir = train(tmp_path, tmp_path / "images", "run", "config.OPTIMIZER.num_epochs=2", f"+{KEY}=0.1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = broken_records(run_dir)
    assert len(records) == 2
    for record in records:
        assert (record["broken"], record["images"], record["per_rank"]) == (2, 32, [2])
        assert record["fraction"] == pytest.approx(2 / 32) and record["max_fraction"] == 0.1
        assert sorted(record["sample"]) == sorted(str(path) for path in broken)
    summaries = [line for line in (run_dir / "log.txt").read_text().splitlines() if "could not be read" in line]
    assert len(summaries) == 2 and all(str(path) in line for line in summaries for path in broken)
    assert "train phase 0: 2 of 32 images" in summaries[0] and "train phase 1: 2 of 32" in summaries[1]
    assert (run_dir / "model_final_checkpoint_phase1.torch").is_file()


@pytest.mark.slow
def test_over_the_default_threshold_training_stops_in_its_first_batches_naming_the_files(tmp_path):
    paths = write_folder(tmp_path / "images")
    break_files(paths[:8])  # 25%, and each batch of 8 holds some
    result, run_dir = train(tmp_path, tmp_path / "images", "run")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "BrokenImagesError: at least" in output and f"{KEY}=0.001 allows (0 of 32)" in output
    assert any(str(path) in output for path in paths[:8])
    assert not (run_dir / "metrics.json").exists() or not broken_records(run_dir)  # stopped within phase 0
    assert not list(run_dir.glob("*.torch"))


@pytest.mark.slow
def test_threshold_zero_refuses_a_single_broken_image(tmp_path):
    paths = write_folder(tmp_path / "images")
    break_files([paths[20]])
    result, _ = train(tmp_path, tmp_path / "images", "run", f"+{KEY}=0")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        f"at least 1 of the 32 train images of phase 0 cannot be read or decoded (3.125%), more than {KEY}=0" in output
    )
    assert str(paths[20]) in output


# ---------------------------------------------------------------- probes and feature extraction


def pooled_trunk() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


TRANSFORM = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor()])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_under_the_threshold_extracts_with_placeholders_and_lists_them(tmp_path, workers, capsys):
    paths = write_folder(tmp_path / "train")
    write_folder(tmp_path / "val", per_class=2)
    break_files([paths[7]])
    splits = probe.datasets("folder", tmp_path, TRANSFORM, max_broken_fraction=0.05)
    cache = extract_features(pooled_trunk(), splits["train"], tmp_path / "features", "train", {}, 8, workers)
    assert splits["train"].broken_files() == [str(paths[7])]  # marks made in workers reach this process
    assert np.allclose(cache.features[7].astype(np.float32), 128 / 255, atol=1e-3)  # the grey placeholder
    assert cache.labels.tolist() == [0] * 16 + [1] * 16
    probe.report_broken("train", splits["train"])
    assert "train: 1 of 32 images (3.125%) could not be read or decoded" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_over_the_threshold_stops_extraction_naming_the_files(tmp_path, workers):
    paths = write_folder(tmp_path / "train")
    write_folder(tmp_path / "val", per_class=2)
    break_files([paths[7]])
    splits = probe.datasets("folder", tmp_path, TRANSFORM)  # default 0.001
    with pytest.raises(BrokenImagesError) as error:
        extract_features(pooled_trunk(), splits["train"], tmp_path / "features", "train", {}, 8, workers)
    message = str(error.value)
    assert f"at least 1 of the 32 images of {tmp_path / 'train'} cannot be read or decoded (3.125%)" in message
    assert "--max-broken-fraction=0.001 allows (0 of 32)" in message and str(paths[7]) in message


def test_folder_threshold_zero_refuses_one_and_a_bad_threshold_is_refused(tmp_path):
    paths = write_folder(tmp_path)
    break_files([paths[0]])
    assert BrokenImageFolder(str(tmp_path), TRANSFORM, 1 / 32, "--max-broken-fraction")[0][1] == 0
    with pytest.raises(BrokenImagesError, match=f"{paths[0]}"):
        BrokenImageFolder(str(tmp_path), TRANSFORM, 0, "--max-broken-fraction")[0]
    with pytest.raises(ValueError, match=r"--max-broken-fraction=1\.5 must be a fraction in \[0, 1\]"):
        BrokenImageFolder(str(tmp_path), TRANSFORM, 1.5, "--max-broken-fraction")


@pytest.mark.slow
def test_probe_tool_passes_its_threshold_to_the_folders(tmp_path):
    paths = write_folder(tmp_path / "data" / "train", size=16)
    write_folder(tmp_path / "data" / "val", per_class=2, size=16)
    break_files([paths[0]])
    command = [
        REPO / "tools" / "probe.py", "--checkpoint", "random", "--data", f"folder:{tmp_path / 'data'}",
        "--resize", "16", "--crop", "16", "--workers", "0", "--epochs", "1", "--lrs", "0.1", "--wds", "0",
        "--ks", "1", "--features-dir", str(tmp_path / "features"),
    ]  # fmt: skip
    refused = run_tool([*command, "--max-broken-fraction", "0"], tmp_path, OMP_NUM_THREADS="1")
    assert refused.returncode != 0 and f"--max-broken-fraction=0 allows (0 of 32): {paths[0]}" in refused.stderr
    allowed = run_tool([*command, "--max-broken-fraction", "0.05"], tmp_path, OMP_NUM_THREADS="1")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "train: 1 of 32 images (3.125%) could not be read or decoded" in allowed.stderr
