"""Online evaluation during pretraining (HOOKS.ONLINE_EVAL): its config checks, its k-NN against
tools/probe.py's pipeline, the training state it leaves alone, and a launcher run that trains bit
for bit as one without it."""

import json
import random
from pathlib import Path
from types import SimpleNamespace

import vissl_issl.plugin  # noqa: F401  (registration: the digits source)
from vissl_issl.plugin.hooks.online_eval import OnlineEvalHook, online_eval_config, split_features
from vissl_issl.plugin.hooks.rng_state import generator_states, set_generator_states

import numpy as np
import pytest
import torch
import torch.nn as nn
from ddp import run_on_ranks
from test_launcher import assert_same_tensors, load
from torch.utils.data import TensorDataset
from vissl.config import AttrDict

from conftest import DISSL_DIGITS, launch, logged
from vissl_issl.config import ConfigError
from vissl_issl.evaluation import probe
from vissl_issl.evaluation.features import extract_features
from vissl_issl.evaluation.knn import knn_accuracy
from vissl_issl.evaluation.linear_probe import ProbeConfig, linear_probe

KEY = "config.HOOKS.ONLINE_EVAL"
DIGITS_BLOCK = {
    "DATA_SOURCES": ["sklearn_digits"],
    "LABEL_SOURCES": ["torchvision_dataset"],
    "DATASET_NAMES": ["sklearn_digits"],
    "TRANSFORMS": [{"name": "ToTensor"}, {"name": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3}],
}
PROBE = {"epochs": 2, "batch_size": 256, "lrs": [0.1], "wds": [0.0]}


# ---------------------------------------------------------------- config


def digits_config(**block) -> AttrDict:
    """What the hook reads of a config (pretraining on the digits: no Normalize in TRAIN, so that
    tools/probe.py normalises the digits as the blocks do), checked and filled in."""
    given = {"ENABLED": True, "TRAIN": DIGITS_BLOCK, "TEST": DIGITS_BLOCK, **block}
    data = {"NUM_DATALOADER_WORKERS": 0, "TRAIN": {"TRANSFORMS": []}}
    config = AttrDict({"DATA": data, "HOOKS": {"ONLINE_EVAL": given}})
    online_eval_config(config)
    return config


def checked(**block):
    return digits_config(**block).HOOKS.ONLINE_EVAL


@pytest.mark.parametrize(
    "block, named",
    [
        ({"EVERY_N_EPOCHS": 0}, f"{KEY}.EVERY_N_EPOCHS=0"),
        ({"KNN_K": True}, f"{KEY}.KNN_K=True"),
        ({"ENABLED": "yes"}, f"{KEY}.ENABLED='yes'"),
        ({"EVERY_EPOCH": 2}, f"{KEY}.EVERY_EPOCH"),
        ({"LINEAR_PROBE": {"head": "cnn"}}, f"{KEY}.LINEAR_PROBE: head 'cnn'"),
        ({"LINEAR_PROBE": {"epoch": 3}}, f"{KEY}.LINEAR_PROBE.epoch"),
        ({"TEST": {"DATA_SOURCES": ["sklearn_digits"]}}, f"{KEY}.TEST.LABEL_SOURCES=[]"),
        ({"TRAIN": "digits"}, f"{KEY}.TRAIN must be a VISSL data block"),
    ],
)
def test_a_bad_value_names_its_key(block, named):
    with pytest.raises(ConfigError) as error:
        checked(**block)
    assert named in str(error.value)


def test_off_without_the_block_and_defaults_filled_in_with_it():
    absent = AttrDict({"HOOKS": {}})
    online_eval_config(absent)
    assert "ONLINE_EVAL" not in absent.HOOKS
    block = checked()
    assert (block.EVERY_N_EPOCHS, block.KNN_K, block.LINEAR_PROBE) == (1, 20, None)
    # The splits' blocks lie over VISSL's config.DATA.TEST defaults.
    assert block.TEST.BATCHSIZE_PER_REPLICA == 256 and block.TEST.DATA_SOURCES == ["sklearn_digits"]
    assert checked(ENABLED=False, KNN_K=0).KNN_K == 0  # switched off, nothing else is read


# ---------------------------------------------------------------- the hook on a stand-in task


class Trunk(nn.Module):
    """A VISSL-like trunk (a list of one (N, d) tensor) with BatchNorm, whose statistics must stay,
    dropout, which makes train mode visible, and a frozen part kept in eval mode."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5))
        self.frozen = nn.BatchNorm2d(8)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, images):
        return [self.pool(self.frozen(self.body(images)))]


class Writer:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, scalar_value, global_step):
        self.scalars[tag, global_step] = scalar_value


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def probe_tool_features(trunk: nn.Module, config, directory: Path) -> dict:
    """tools/probe.py's features of the digits splits (its dataset, transform and cache)."""
    transform = probe.image_transform("digits", config, None, None)
    return {
        split: extract_features(trunk, probe.DigitsSplit(split, transform), directory, split, {}, 256)
        for split in ("train", "test")
    }


def test_the_hook_scores_what_the_probe_tool_scores_and_leaves_the_training_state(tmp_path, monkeypatch):
    from vissl.hooks import tensorboard_hook

    config = digits_config(EVERY_N_EPOCHS=2, LINEAR_PROBE=PROBE)
    torch.manual_seed(0)
    trunk = Trunk()
    with torch.no_grad():  # statistics that eval mode would use and train mode would move
        trunk.body[1].running_mean.uniform_(-0.1, 0.1)
    trunk.frozen.eval()
    state = {name: tensor.clone() for name, tensor in trunk.state_dict().items()}
    monkeypatch.setattr(tensorboard_hook, "tb_available", True)  # the writer is a stand-in
    writer = Writer()
    task = SimpleNamespace(
        config=config, base_model=SimpleNamespace(trunk=trunk), train=True, train_phase_idx=0, phase_idx=0,
        iteration=10, checkpoint_folder=str(tmp_path), hooks=[tensorboard_hook.SSLTensorboardHook(writer)],
    )  # fmt: skip
    hook = OnlineEvalHook(config.HOOKS.ONLINE_EVAL)
    hook.on_start(task)
    hook.on_phase_end(task)  # epoch 1 of every 2: nothing
    assert not (tmp_path / "metrics.json").exists()

    task.train_phase_idx, task.phase_idx, task.iteration = 1, 1, 20
    saved = generator_states()
    hook.on_phase_end(task)
    after = draws()
    set_generator_states(saved)
    assert draws() == after  # the generators are where the hook found them
    assert trunk.training and not trunk.frozen.training
    assert all(module.training for module in trunk.body)
    assert_same_tensors(trunk.state_dict(), state)  # BatchNorm statistics and counters untouched

    [line] = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    record = line["online_eval"]
    assert (line["train_phase_idx"], record["epoch"], record["train_count"], record["test_count"]) == (1, 2, 1437, 360)
    expected = probe_tool_features(trunk.eval(), config, tmp_path / "probe")
    top1, top5 = knn_accuracy(expected["train"], expected["test"], [20])[20]
    assert (record["knn"]["top1"], record["knn"]["top5"]) == (top1, top5)
    probed = linear_probe(expected["train"], expected["test"], ProbeConfig(**PROBE))
    assert (record["linear"]["top1"], record["linear"]["top5"]) == (probed.test_top1, probed.test_top5)
    assert writer.scalars[("OnlineEval/knn_top1", 1)] == top1
    assert writer.scalars[("OnlineEval/linear_top5", 1)] == probed.test_top5


# ---------------------------------------------------------------- sharded over ranks


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(7, 3, 2, 2, generator=generator), torch.arange(7) % 3)


def sharded_features(rank: int):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    result = split_features(trunk, dataset(), 2, 0, "toy")
    return torch.from_numpy(result.features), torch.from_numpy(result.labels)  # run_on_ranks saves tensors


def test_two_ranks_gather_the_features_of_one_process(tmp_path):
    features, labels = sharded_features(0)
    assert features.shape == (7, 4) and features.dtype == torch.float16
    for ranked_features, ranked_labels in run_on_ranks(sharded_features, tmp_path):  # 7 rows: padded shards
        assert torch.equal(ranked_features, features) and torch.equal(ranked_labels, labels)


# ---------------------------------------------------------------- a launcher run

# 3 epochs of 2 steps; with the hook on, one evaluation after epoch 2, whose checkpoint is kept.
RUN = [
    f"config={DISSL_DIGITS}",  # its random crops: a generator the hook moved would change them
    "config.DATA.TRAIN.DATA_LIMIT=32",
    "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16",
    "config.OPTIMIZER.num_epochs=3",
    "config.CHECKPOINT.CHECKPOINT_FREQUENCY=1",
    "config.LOG_FREQUENCY=1",
]
EVALUATED, FINAL = "model_phase1.torch", "model_final_checkpoint_phase2.torch"


def train(directory: Path, *overrides: str) -> Path:
    result = launch([*RUN, f"config.CHECKPOINT.DIR={directory}", *overrides], directory.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return directory


def online_records(directory: Path) -> list:
    lines = (directory / "metrics.json").read_text().splitlines()
    return [record["online_eval"] for record in map(json.loads, lines) if "online_eval" in record]


@pytest.mark.slow
def test_a_run_with_the_hook_trains_bit_for_bit_as_without_and_scores_as_the_probe_tool(tmp_path):
    on = train(tmp_path / "on", "config.HOOKS.ONLINE_EVAL.EVERY_N_EPOCHS=2")
    off = train(tmp_path / "off", "config.HOOKS.ONLINE_EVAL.ENABLED=False")
    assert [record["epoch"] for record in online_records(on)] == [2] and online_records(off) == []
    a, b = load(on / FINAL), load(off / FINAL)
    assert a["iteration"] == b["iteration"] == 6
    a, b = a["classy_state_dict"], b["classy_state_dict"]
    assert_same_tensors(a["base_model"], b["base_model"])  # weights and BatchNorm statistics
    assert_same_tensors(a["optimizer"], b["optimizer"])
    assert_same_tensors(a["loss"], b["loss"])  # DISSL's counters
    assert [r.get("loss") for r in logged(on)] == [r.get("loss") for r in logged(off)]

    # tools/probe.py on the checkpoint of the evaluated epoch (VISSL saves it before the hook runs).
    [record] = online_records(on)
    knn = record["knn"]
    argv = ["--checkpoint", str(on / EVALUATED), "--data", "digits", "--features-dir", str(tmp_path / "probe")]
    argv += ["--ks", str(knn["k"]), "--epochs", "1", "--lrs", "0.1", "--wds", "0", "--workers", "0"]
    probed = probe.main(argv)["knn"][knn["k"]]
    assert (knn["top1"], knn["top5"]) == (probed["top1"], probed["top5"])
