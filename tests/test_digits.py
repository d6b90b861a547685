import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import vissl_issl.plugin  # noqa: F401  (registers the sklearn_digits source before VISSL builds data)

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from vissl.config import AttrDict
from vissl.data import build_dataloader, build_dataset
from vissl.utils.hydra_config import compose_hydra_configuration, convert_to_attrdict
from vissl.utils.test_utils import IntegrationTestLogs

from conftest import REPO, run_tool
from vissl_issl.data import digits

BENCHMARK = "config=benchmark/linear_image_classification/digits/eval_tv_resnet18_digits_linear"
SPLIT_SIZES = {"TRAIN": 1437, "TEST": 360}


def source_config(split: str = "TRAIN", **split_keys) -> AttrDict:
    return AttrDict({"DATA": {split: split_keys}})


def build_source(split: str = "TRAIN", **split_keys) -> digits.DigitsDataset:
    return digits.DigitsDataset(
        source_config(split, **split_keys),
        path="",
        split=split,
        dataset_name=digits.DATASET_NAME,
        data_source=digits.SOURCE_NAME,
    )


def compose_benchmark(tmp_path: Path, *overrides: str) -> AttrDict:
    cfg = compose_hydra_configuration([BENCHMARK, f"config.CHECKPOINT.DIR={tmp_path}", *overrides])
    return convert_to_attrdict(cfg, dump_config=False)[1]


def first_batch(config: AttrDict, split: str) -> Dict[str, List[torch.Tensor]]:
    dataset = build_dataset(config, split)
    # Without a process group VISSL uses no sampler, so batches follow the dataset order.
    loader = build_dataloader(
        dataset,
        config.DATA[split],
        num_dataloader_workers=0,
        pin_memory=False,
        multi_processing_method=config.MULTI_PROCESSING_METHOD,
        device=torch.device("cpu"),
    )
    return next(iter(loader))


def test_splits_partition_the_digits_in_a_fixed_order():
    train, test = digits.split_indices("TRAIN"), digits.split_indices("TEST")
    assert {"TRAIN": len(train), "TEST": len(test)} == SPLIT_SIZES
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


@pytest.mark.parametrize("split", ["TRAIN", "TEST"])
def test_labels_cover_all_classes_in_stratified_proportion(split):
    labels = np.array(build_source(split).get_labels())
    assert labels.min() == 0 and labels.max() == 9
    fraction = SPLIT_SIZES[split] / 1797
    expected = np.bincount(load_digits().target) * fraction
    # Stratification rounds each class to within one sample of the exact share.
    assert np.all(np.abs(np.bincount(labels, minlength=10) - expected) <= 1)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_images_are_rgb_at_the_configured_size(size):
    image, is_success = build_source(DIGITS_IMAGE_SIZE=size)[0]
    pixels = np.asarray(image)
    assert is_success and image.mode == "RGB" and image.size == (size, size)
    assert np.array_equal(pixels, np.repeat(pixels[..., :1], 3, axis=-1))


def test_native_size_is_the_digit_scaled_to_255():
    source = build_source(DIGITS_IMAGE_SIZE=8)
    index = 5
    original = load_digits().images[digits.split_indices("TRAIN")[index]]
    grey = np.asarray(source[index][0])[..., 0]
    assert np.array_equal(grey, np.rint(original * 255 / 16).astype(np.uint8))
    assert source.get_labels()[index] == load_digits().target[digits.split_indices("TRAIN")[index]]


def test_default_image_size_is_16():
    assert build_source()[0][0].size == (16, 16)


def test_construction_is_deterministic():
    def snapshot() -> List[np.ndarray]:
        digits.split_indices.cache_clear()
        digits.load_split.cache_clear()
        source = build_source("TEST")
        return [np.asarray(source[i][0]) for i in range(len(source))] + [np.array(source.get_labels())]

    first, second = snapshot(), snapshot()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("size", [4, 0, "16", 16.0, True])
def test_bad_image_size_names_the_key(size):
    with pytest.raises(ValueError, match=r"config\.DATA\.TEST\.DIGITS_IMAGE_SIZE"):
        build_source("TEST", DIGITS_IMAGE_SIZE=size)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match=r"got split 'VAL'"):
        build_source("VAL")


@pytest.mark.parametrize("split", ["TRAIN", "TEST"])
def test_vissl_dataset_yields_sklearn_labels(tmp_path, split):
    config = compose_benchmark(tmp_path)
    assert len(build_dataset(config, split)) == SPLIT_SIZES[split]
    batch = first_batch(config, split)
    batch_size = config.DATA[split].BATCHSIZE_PER_REPLICA
    assert batch["data"][0].shape == (batch_size, 3, 16, 16)
    expected = load_digits().target[digits.split_indices(split)[:batch_size]]
    assert torch.equal(batch["label"][0], torch.as_tensor(expected))


def test_pretraining_without_label_sources_uses_sample_indices(tmp_path):
    config = compose_benchmark(tmp_path, "config.DATA.TRAIN.LABEL_SOURCES=[]", "config.DATA.TRAIN.DIGITS_IMAGE_SIZE=24")
    assert config.DATA.TRAIN.LABEL_TYPE == "sample_index"
    batch = first_batch(config, "TRAIN")
    assert batch["data"][0].shape[-2:] == (24, 24)
    assert torch.equal(batch["label"][0], torch.arange(len(batch["label"][0])))


def test_balanced_data_limit(tmp_path):
    config = compose_benchmark(
        tmp_path,
        "config.DATA.TRAIN.DATA_LIMIT=100",
        "config.DATA.TRAIN.DATA_LIMIT_SAMPLING.IS_BALANCED=True",
    )
    dataset = build_dataset(config, "TRAIN")
    labels = [int(dataset[i]["label"][0]) for i in range(len(dataset))]
    assert len(dataset) == 100
    assert np.array_equal(np.bincount(labels), np.full(10, 10))


RUNNER = textwrap.dedent(
    """
    import sys

    import vissl_issl.plugin.hooks
    from vissl.utils.distributed_launcher import launch_distributed
    from vissl.utils.hydra_config import compose_hydra_configuration, convert_to_attrdict

    # Guarded: VISSL's forkserver start method re-imports the main module.
    if __name__ == "__main__":
        _, config = convert_to_attrdict(compose_hydra_configuration(sys.argv[1:]))
        launch_distributed(
            config, node_id=0, engine_name="train", hook_generator=vissl_issl.plugin.hooks.hook_generator
        )
    """
)


@pytest.mark.slow
def test_linear_benchmark_runs_end_to_end(tmp_path):
    runner = tmp_path / "run.py"
    runner.write_text(RUNNER)
    run_dir = tmp_path / "run"
    overrides = [
        BENCHMARK,
        # An empty PARAMS_FILE makes VISSL keep the randomly initialised trunk.
        "config.MODEL.WEIGHTS_INIT.PARAMS_FILE=''",
        "config.MACHINE.DEVICE=cpu",
        "config.DISTRIBUTED.BACKEND=gloo",
        "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
        f"config.CHECKPOINT.DIR={run_dir}",
        "config.OPTIMIZER.num_epochs=1",
        "config.DATA.TRAIN.DATA_LIMIT=256",
        "config.DATA.TEST.DATA_LIMIT=128",
    ]
    # Another process, because VISSL initialises torch.distributed and never tears it down.
    result = run_tool([runner, *overrides], REPO)
    assert result.returncode == 0, result.stderr[-5000:]
    lines = IntegrationTestLogs(str(run_dir)).get_accuracies(from_metrics_file=True)
    metrics = [json.loads(line) for line in lines]
    meter = "test_accuracy_list_meter"
    test_top1 = [m[meter]["top_1"]["res5avg"] for m in metrics if meter in m]
    assert len(test_top1) == 1 and 0.0 <= test_top1[0] <= 100.0


@pytest.mark.slow
def test_importing_the_plugin_leaves_sklearn_unimported(tmp_path):
    # Every launcher, rank and tool process imports the plugin; sklearn costs ~1 s of each and is
    # needed only by processes that read the digits.
    script = tmp_path / "imports.py"
    script.write_text("import sys\nimport vissl_issl.plugin\nprint(sorted(m for m in sys.modules if 'sklearn' in m))\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
    assert Path(digits.bundled_data_file()).is_file()
