"""Runs an experiment's cells x seeds through the plugin launcher and probes each finished run.

Layout: ``<out>/<experiment>/<cell>/seed<k>/`` is a run's VISSL checkpoint dir (``train_config.yaml``,
checkpoints, logs), its cached features (``features/``) and ``probes.json`` (the probes' results and
the run's wall-clock seconds). A run whose final checkpoint exists is not pretrained again; one that
was killed resumes from its last checkpoint (VISSL's ``AUTO_RESUME``); a run whose ``probes.json``
holds every probe is skipped. So ``run`` can be killed at any moment and started again with the same
arguments. Once a run is probed, its
intermediate checkpoints are deleted (they only served resuming; 160 MB each for a ResNet-18 with
Adam, 30 GB over the four experiments' 3 seeds); the final one stays.

Data (``--data``):

- ``tinyimagenet:<root>``: the authors' recipes as they are (GPU, fp16) on ``<root>/train``, probed on
  ``<root>/val`` (class sub-folders: ``tools/tinyimagenet_val_to_folders.py``) at 64 px;
- ``digits``: the digits edition, the same recipes on the embedded digits at 16 px on CPU, scaled
  down as :data:`DIGITS_SCALE` states.
"""

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from vissl_issl.plugin.launcher import compose

from vissl_issl.evaluation import probe as probe_tool
from vissl_issl.evaluation.linear_probe import ProbeConfig, linear_probe
from vissl_issl.experiments.definitions import Cell, Experiment

# The digits edition: the embedded digits (1437 train / 360 test images of 10 classes, 16 px) on
# 2 CPU cores. Epochs and warm-ups / 20 (300 -> 15, 1000 -> 50: the "+ epochs" ratio 10/3 kept),
# batches / 4 (256 -> 64, 512 -> 128: 22 and 11 steps an epoch), DISSL's C / 32 (16384 -> 512).
DIGITS_SCALE = {"epochs": 20, "batch": 4, "classes": 32}
DIGITS_DATA = (
    "config.DATA.TRAIN.DATA_SOURCES=[sklearn_digits]",
    "config.DATA.TRAIN.DATASET_NAMES=[sklearn_digits]",
    "config.DATA.TRAIN.TRANSFORMS.0.size=16",
    "config.DATA.TRAIN.TRANSFORMS.2.mean=[0.5,0.5,0.5]",
    "config.DATA.TRAIN.TRANSFORMS.2.std=[0.5,0.5,0.5]",
    "config.DATA.NUM_DATALOADER_WORKERS=0",
    "config.MODEL.AMP_PARAMS.USE_AMP=False",
    "config.MACHINE.DEVICE=cpu",
    "config.DISTRIBUTED.BACKEND=gloo",
)
PROBES_FILE = "probes.json"


@dataclasses.dataclass(frozen=True)
class Data:
    kind: str  # tinyimagenet | digits
    root: Optional[Path] = None

    @classmethod
    def parse(cls, spec: str) -> "Data":
        if spec == "digits":
            return cls("digits")
        kind, _, root = spec.partition(":")
        if kind != "tinyimagenet" or not root:
            raise ValueError(f"--data {spec!r}: use tinyimagenet:<root> or digits")
        for split in ("train", "val"):
            if not (Path(root) / split).is_dir():
                raise ValueError(f"--data {spec!r}: {Path(root) / split} is not a folder of class folders")
        return cls(kind, Path(root))

    def probe_args(self) -> List[str]:
        if self.kind == "digits":
            return ["--data", "digits"]
        return ["--data", f"folder:{self.root}", "--resize", "64", "--crop", "64"]


def slug(name: str) -> str:
    """A cell's folder name: ``+ dim.`` -> ``dim.``, ``z=128`` -> ``z_128`` (Hydra overrides split on ``=``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")


def run_dir(out: Path, experiment: Experiment, cell: Cell, seed: int) -> Path:
    return out / experiment.name / slug(cell.name) / f"seed{seed}"


def digits_edition(config) -> List[str]:
    """Overrides that scale a composed TinyImageNet recipe down to the digits edition."""
    scale = DIGITS_SCALE
    schedule = config.OPTIMIZER.lr_schedule
    overrides = [
        *DIGITS_DATA,
        f"config.OPTIMIZER.num_epochs={config.OPTIMIZER.num_epochs // scale['epochs']}",
        f"config.OPTIMIZER.lr_schedule.warmup_epochs={schedule.warmup_epochs / scale['epochs']:g}",
        f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={config.DATA.TRAIN.BATCHSIZE_PER_REPLICA // scale['batch']}",
    ]
    if config.LOSS.name == "dino_loss":
        warmup = config.LOSS.dino_loss.teacher_temp_warmup_epochs / scale["epochs"]
        overrides.append(f"config.LOSS.dino_loss.teacher_temp_warmup_epochs={warmup:g}")
    if config.LOSS.name == "dissl_loss":
        for index, head in enumerate(config.MODEL.HEAD.PARAMS):
            *widths, classes = head[-1][1]["dims"]
            dims = ",".join(str(width) for width in [*widths, classes // scale["classes"]])
            overrides.append(f"config.MODEL.HEAD.PARAMS.{index}.{len(head) - 1}.1.dims=[{dims}]")
    return overrides


def launcher_overrides(cell: Cell, data: Data, extra: Sequence[str]) -> List[str]:
    """The cell's full launcher overrides on ``data``; composes it (seconds), so a bad cell fails
    before any run starts."""
    given = [f"config=pretrain/{cell.recipe}", *cell.overrides]
    if data.kind == "digits":
        given += digits_edition(compose(given)[1])
    else:
        given.append(f"config.DATA.TRAIN.DATA_PATHS=['{data.root / 'train'}']")
    given += extra
    compose(given)
    return given


def pretrained(directory: Path) -> Optional[Path]:
    finals = sorted(directory.glob("model_final_checkpoint_phase*.torch"))
    return finals[-1] if finals else None


def prune_intermediate_checkpoints(directory: Path) -> None:
    final = pretrained(directory)
    for path in directory.glob("model_*.torch"):
        if path != final:
            path.unlink()


def pretrain(overrides: List[str], directory: Path, seed: int, slurm: bool) -> None:
    command = [sys.executable, "-m", "vissl_issl.plugin.launcher", *overrides]
    command += [f"config.CHECKPOINT.DIR='{directory}'", f"config.SEED_VALUE={seed}"]
    if slurm:
        command.append("config.SLURM.USE_SLURM=true")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True)


def probe_run(cell: Cell, data: Data, directory: Path, seed: int, workers: int) -> Dict[str, dict]:
    """Every probe of ``cell`` on the run's frozen trunk (features extracted once, cached)."""
    checkpoint = pretrained(directory)
    args = probe_tool.parse_args(
        ["--checkpoint", str(checkpoint), *data.probe_args(), "--workers", str(workers)]
        + ["--features-dir", str(directory / "features")]
    )
    splits = probe_tool.cached_splits(args, directory / "features")
    results = {}
    for probe in cell.probes:
        config = ProbeConfig.authors_tinyimagenet(
            head=probe.head, label_fraction=probe.label_fraction, subset_seed=seed
        )
        result = linear_probe(splits["train"], splits["test"], config)
        results[probe.name] = {**dataclasses.asdict(probe), **dataclasses.asdict(result)}
    return results


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def run(
    experiment: Experiment,
    data: Data,
    seeds: Sequence[int],
    out: Path,
    extra: Sequence[str] = (),
    slurm: bool = False,
    workers: int = 0,
) -> None:
    """Pretrains and probes every cell x seed not done yet (see the module doc)."""
    overrides = {cell: launcher_overrides(cell, data, extra) for cell in experiment.cells}
    # Seed by seed: a run stopped part-way has whole tables of its first seeds.
    plan: List[Tuple[Cell, int]] = [(cell, seed) for seed in seeds for cell in experiment.cells]
    spent: List[float] = []
    for index, (cell, seed) in enumerate(plan, start=1):
        directory = run_dir(out, experiment, cell, seed)
        probes_file = directory / PROBES_FILE
        if probes_file.is_file() and set(json.loads(probes_file.read_text())["probes"]) >= {
            probe.name for probe in cell.probes
        }:
            continue
        left = len(plan) - index + 1
        eta = f", about {duration(sum(spent) / len(spent) * left)} left" if spent else ""
        print(f"[{index}/{len(plan)}] {experiment.name}: {cell.name}, seed {seed}{eta}", flush=True)
        start = time.time()
        # Pretraining time is recorded only for a run pretrained whole by this call: a resumed or
        # SLURM run's clock would leave out the part done elsewhere.
        pretrain_seconds = None
        if pretrained(directory) is None:
            from_scratch = not any(directory.glob("model_*.torch"))
            pretrain(overrides[cell], directory, seed, slurm)
            if slurm:
                continue  # probed by a later `run`, once the job has written its final checkpoint
            pretrain_seconds = round(time.time() - start) if from_scratch else None
        probing = time.time()
        record = {"experiment": experiment.name, "cell": cell.name, "seed": seed, "recipe": cell.recipe}
        record["overrides"] = overrides[cell]
        record["probes"] = probe_run(cell, data, directory, seed, workers)
        record["seconds"] = {"pretrain": pretrain_seconds, "probe": round(time.time() - probing)}
        probes_file.write_text(json.dumps(record, indent=2))
        prune_intermediate_checkpoints(directory)
        spent.append(time.time() - start)
