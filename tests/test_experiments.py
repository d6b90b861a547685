"""tools/experiments.py: the ISSL experiments' cells, the digits edition, and a run that is killed,
resumed and reported."""

import csv
import json
import os
import signal
import textwrap
import time

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin.launcher import compose

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, preloaded, run_tool
from vissl_issl.experiments.definitions import EXPERIMENTS
from vissl_issl.experiments.runner import Data, digits_edition, launcher_overrides


def test_the_four_experiments_have_the_authors_cells():
    assert list(EXPERIMENTS) == ["table1_distillation", "table1_contrastive", "fig7a_augmentations", "fig7c_dimensions"]
    distillation = EXPERIMENTS["table1_distillation"]
    assert [(cell.name, cell.authors) for cell in distillation.cells] == [
        ("DINO", 43.3), ("DISSL", 45.1), ("+ dim.", 48.0), ("+ epochs", 49.0), ("+ aug.", 50.7),
    ]  # fmt: skip
    contrastive = EXPERIMENTS["table1_contrastive"]
    assert [cell.authors for cell in contrastive.cells] == [45.2, 45.8, 47.6, 48.7, 51.2]
    fig7a = EXPERIMENTS["fig7a_augmentations"]
    assert [cell.series for cell in fig7a.cells] == ["s=0.25", "s=0.5", "s=1"]
    assert {probe.label_fraction for probe in fig7a.cells[0].probes} == {1.0, 0.1, 0.01, 0.002}
    fig7c = EXPERIMENTS["fig7c_dimensions"]
    assert sorted((cell.series, cell.x, cell.probes[0].head) for cell in fig7c.cells) == sorted(
        (series, z, head) for series, head in (("Linear", "linear"), ("MLP", "mlp")) for z in (128, 512, 2048, 8192)
    )


def test_digits_edition_scales_the_schedule_batch_and_classes():
    config = compose(["config=pretrain/dissl/dissl_resnet18_tinyimagenet_d2048_e1000"])[1]
    overrides = digits_edition(config)
    assert "config.OPTIMIZER.num_epochs=50" in overrides  # 1000 / 20
    assert "config.OPTIMIZER.lr_schedule.warmup_epochs=0.5" in overrides
    assert "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=64" in overrides
    digits = compose(["config=pretrain/dissl/dissl_resnet18_tinyimagenet_d2048_e1000", *overrides])[1]
    assert digits.LOSS.dissl_loss.num_classes == 512 and digits.MACHINE.DEVICE == "cpu"
    assert digits.DATA.TRAIN.TRANSFORMS[0]["size"] == 16 and not digits.MODEL.AMP_PARAMS.USE_AMP


def test_data_spec_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="use tinyimagenet:<root> or digits"):
        Data.parse("imagenet:/x")
    with pytest.raises(ValueError, match=f"{tmp_path / 'train'} is not a folder"):
        Data.parse(f"tinyimagenet:{tmp_path}")


def test_the_table_says_which_differences_exceed_the_seed_spread():
    from vissl_issl.experiments.definitions import Cell, Experiment, Probe
    from vissl_issl.experiments.report import table

    probes = (Probe("linear", 1.0), Probe("linear", 0.1))
    experiment = Experiment("toy", "toy", tuple(Cell(name, "r", (), probes) for name in ("a", "b", "c")))
    top1 = {  # (cell, probe) -> max top-1 per seed; selected = max - 1
        ("a", "linear_1"): [80, 82], ("b", "linear_1"): [90, 92], ("c", "linear_1"): [86, 94],
        ("a", "linear_0.1"): [50, 52], ("b", "linear_0.1"): [55], ("c", "linear_0.1"): [40, 60],
    }  # fmt: skip
    found = [
        {"cell": cell, "probe": probe, "seed": seed, "max_top1": value, "selected_top1": value - 1}
        | {"pretrain_seconds": None, "probe_seconds": None}
        for (cell, probe), values in top1.items()
        for seed, value in enumerate(values, start=1)
    ]
    lines = {tuple(line.split(" | ")[:2]): line for line in table(experiment, found).splitlines()}
    # b - a: +10, stds 1.4 + 1.4 -> exceeds; c - b: -1, stds 5.7 + 1.4 -> within; b has one seed at 10%.
    assert "| 91.0 ± 1.4 | 90.0 ± 1.4 | +10.0 (exceeds the spread) |" in lines[("| b", "linear, 100% of the labels")]
    assert "| -1.0 (within the spread) |" in lines[("| c", "linear, 100% of the labels")]
    assert "| 55.0 | 54.0 | +4.0 (one seed) |" in lines[("| b", "linear, 10% of the labels")]
    assert "| 50.0 ± 14.1 | 49.0 ± 14.1 | -5.0 (one seed) |" in lines[("| c", "linear, 10% of the labels")]
    assert "| – |" in lines[("| a", "linear, 100% of the labels")]  # nothing above the first cell
    assert "Wall-clock per run" in table(experiment, found) and "none recorded" in table(experiment, found)


def test_run_times_count_each_run_once_and_skip_unrecorded_pretraining():
    from vissl_issl.experiments.report import run_times

    runs = {("a", 1): (600, 60), ("a", 2): (None, 120), ("b", 1): (1200, 90)}  # ("a", 2) was resumed
    found = [
        {"cell": cell, "seed": seed, "probe": probe, "pretrain_seconds": pretrain, "probe_seconds": probing}
        for (cell, seed), (pretrain, probing) in runs.items()
        for probe in ("linear_1", "linear_0.1")
    ]
    assert run_times(found).endswith(": pretrain 15.0 min (10.0-20.0, 2 runs), probe 1.5 min (1.0-2.0, 3 runs).")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_cell_composes_in_the_digits_edition(name):
    # The TinyImageNet edition adds only DATA_PATHS to the recipes test_tinyimagenet_recipes.py pins.
    for cell in EXPERIMENTS[name].cells:
        assert launcher_overrides(cell, Data("digits"), ())[0] == f"config=pretrain/{cell.recipe}"


def test_a_probed_run_keeps_only_its_final_checkpoint(tmp_path):
    from vissl_issl.experiments.runner import prune_intermediate_checkpoints

    final = "model_final_checkpoint_phase14.torch"
    for name in ("model_phase0.torch", "model_phase10.torch", "model_iteration5.torch", final):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "checkpoint.torch").symlink_to(tmp_path / final)
    prune_intermediate_checkpoints(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.torch", final]


TINY_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from vissl_issl.experiments.definitions import Cell, Experiment, Probe
    from vissl_issl.experiments.runner import Data, run

    probes = (Probe("linear", 1.0), Probe("linear", 0.5))
    cells = tuple(
        Cell(f"z={z}", "cissl/cissl_resnet18_tinyimagenet", (f"config.MODEL.REPRESENTATION_DIM={z}",
             f"config.MODEL.TRUNK.TV_RESNET.RESIZER={{HIDDEN_DIM:32,OUT_DIM:{z}}}"), probes, series="CISSL", x=z)
        for z in (512, 128)
    )
    cpu = ["config.MACHINE.DEVICE=cpu", "config.MODEL.AMP_PARAMS.USE_AMP=False", "config.DISTRIBUTED.BACKEND=gloo",
           "config.DATA.NUM_DATALOADER_WORKERS=0", "config.OPTIMIZER.num_epochs=1",
           "config.OPTIMIZER.lr_schedule.warmup_epochs=0", "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=4"]
    run(Experiment("tiny", "two cells", cells), Data.parse(sys.argv[1]), [1], Path(sys.argv[2]), cpu)
    """
)


def alive(pid: int) -> bool:
    """Running (not exited, not a zombie waiting for the preloaded server to reap it)."""
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def image_folder(root, images_per_class):
    rng = np.random.default_rng(0)
    for split, count in (("train", images_per_class), ("val", images_per_class // 2)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{index}.png")


@pytest.mark.slow
def test_a_killed_run_resumes_and_reports_a_table_and_both_figures(tmp_path):
    from vissl_issl.experiments.definitions import Cell, Experiment, Probe
    from vissl_issl.experiments.report import report

    image_folder(tmp_path / "tin", 8)
    script, out = tmp_path / "tiny.py", tmp_path / "out"
    script.write_text(TINY_RUN)
    argv = [script, f"tinyimagenet:{tmp_path / 'tin'}", out]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # Killed (with the launcher it started) once the second run (seed 1 of the second cell) is pretraining.
    pid = preloaded().start(argv, tmp_path, env, tmp_path / "killed.out", tmp_path / "killed.err")
    second = out / "tiny" / "z_128" / "seed1"
    deadline = time.time() + 600
    while not second.is_dir() and alive(pid) and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(pid, signal.SIGKILL)
    assert preloaded().wait(pid, 60) == -signal.SIGKILL
    first = out / "tiny" / "z_512" / "seed1" / "probes.json"
    assert first.is_file() and not (second / "probes.json").exists()
    done_before = first.stat().st_mtime_ns

    resumed = run_tool(argv, tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert first.stat().st_mtime_ns == done_before  # the finished run was skipped
    assert "[2/2] tiny: z=128, seed 1" in resumed.stdout and "[1/2]" not in resumed.stdout

    probes = (Probe("linear", 1.0), Probe("linear", 0.5))
    experiment = Experiment("tiny", "two cells", tuple(
        Cell(f"z={z}", "cissl/cissl_resnet18_tinyimagenet", (), probes, series="CISSL", x=z) for z in (512, 128)
    ))  # fmt: skip
    folder = report(experiment, out)
    with (folder / "results.csv").open() as file:
        results = list(csv.DictReader(file))
    assert len(results) == 4  # 2 cells x 2 probes
    assert {row["train_rows"] for row in results if row["probe"] == "linear_0.5"} == {"8"}  # half of 16 images
    assert all(0 <= float(row["max_top1"]) <= 100 for row in results)
    table = (folder / "table.md").read_text()
    assert "| z=512 | linear, 100% of the labels | 1 |" in table
    # The first run was pretrained whole by the killed call, so it recorded its pretraining time.
    first_seconds = json.loads(first.read_text())["seconds"]
    assert first_seconds["pretrain"] > 0 and first_seconds["probe"] >= 0
    assert "pretrain " in table.splitlines()[-1]
    for name in ("fig7a", "fig7c"):
        for suffix in ("png", "pdf"):
            assert (folder / f"{name}.{suffix}").stat().st_size > 0


@pytest.mark.slow
def test_the_cli_lists_every_experiment():
    result = run_tool([REPO / "tools" / "experiments.py", "list"], REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in EXPERIMENTS:
        assert name in result.stdout
