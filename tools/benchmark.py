"""Speed benchmarks: every method's training step side by side, and the augmentation pipelines.

    bash tools/env.sh python tools/benchmark.py step [--device cpu|gpu] [--batch N] [--crops 2x224 ...]
                                                     [--methods ...] [--steps N] [--repeats N]
                                                     [--step-options KEY=VALUE ...] [--doc FILE]
    bash tools/env.sh python tools/benchmark.py trunk [--depth 18|50] [--batch N] [--size PX] [--variants ...]
    bash tools/env.sh python tools/benchmark.py data [--crops m2 m6 m8] [--workers N ...] [--folder DIR] [--doc FILE]
                                                     [--json FILE]

``step`` runs VISSL's own training step (``standard_train_step``, with the hooks of the plugin's
hook generator, DDP wrapping, AMP and SyncBN on GPU) for each method in a fresh process, on the same
ResNet trunk, crops and per-GPU batch. Batches come from VISSL's synthetic data source through each
method's collator, are made once and then cycled, so the data wait is ~0 and the device is the
bottleneck (the loader is measured by ``data``). Each repeat runs every row once, in turn, in a
fresh process that times ``--steps`` steps after ``--warmup`` ones; the table gives each row's
median over repeats. The phases are VISSL's own
``PerfTimer`` sections (CUDA events on GPU); "hooks" is the time in hooks inside the step (DINO's
and BYOL's teacher forward and EMA), "other" the rest of the loop. Every row uses SGD with the
plugin's apex-free LARC (the DISSL recipe's optimizer), except the compressors, whose losses refuse
LARC and keep their recipe's AdamW. ``--step-options`` sets ``config.MODEL.STEP_OPTIONS`` of every
row (``CHANNELS_LAST=True AUTOCAST=bfloat16 COMPILE=True``; bf16 autocast replaces the fp16 AMP
that GPU rows use otherwise; a compiled trunk compiles in the warm-up steps, once per crop size).

``trunk`` times the trunk's forward + backward alone under the step options
(``config.MODEL.STEP_OPTIONS`` as the plugin applies them: fp32, channels_last, bf16, both,
compile), the variants taking turns within each repeat; ratios to fp32 are medians of per-repeat
ratios.

``data`` times VISSL's dataset + the recipes' real augmentation pipelines + the collator per
DataLoader worker on JPEGs (ImageNet-sized synthetic ones unless ``--folder`` points at real ones),
VISSL's stock pipeline next to the plugin's worker path (``DATA.TRAIN.DEVICE_AUGMENTATION``), and
the device part's cost per batch.

Both print a markdown table and, with ``--doc``, replace that table's section (between
``<!-- benchmark:NAME -->`` and ``<!-- /benchmark:NAME -->``, NAME ``step-<device>-b<batch>-<crops>``,
followed by ``-<key>=<value>`` for each step option, or ``data``) in the file, with the command, machine and versions.
"""

import argparse
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from vissl_issl.methods import METHODS as PLUGIN_METHODS
from vissl_issl.methods import Benchmark

REPO = Path(__file__).resolve().parents[1]
PHASES = ("data", "forward", "hooks", "loss", "backward", "optimizer", "other")
# VISSL's PerfTimer sections (standard_train_step) summed into each phase.
TIMERS = {
    "data": ("read_sample",),
    "forward": ("forward",),
    "hooks": ("hooks",),
    "loss": ("loss_compute", "loss_all_reduce"),
    "backward": ("backward",),
    "optimizer": ("optimizer_step",),
}
LARC = (
    "config.OPTIMIZER.name=sgd",
    "config.OPTIMIZER.use_larc=True",
    "config.OPTIMIZER.larc_config={clip:False,trust_coefficient:0.001,eps:0.00000001}",
    "config.OPTIMIZER.momentum=0.9",
    "config.OPTIMIZER.nesterov=False",
    "config.OPTIMIZER.weight_decay=0.000001",
)


TRUNK_ONLY = "trunk_only"
VISSL_SIMCLR = "pretrain/simclr/simclr_8node_resnet"
# VISSL's own methods and the trunk alone, timed next to the plugin's (vissl_issl.methods).
REFERENCES: Dict[str, Benchmark] = {
    TRUNK_ONLY: Benchmark(
        "trunk only (ceiling)",
        VISSL_SIMCLR,
        (
            "config.LOSS.name=trunk_only_reference",
            "+config.LOSS.trunk_only_reference={}",
            "config.MODEL.HEAD.PARAMS=[[mlp,{dims:[2048,1]}]]",
        ),
        multicrop=("config.DATA.TRAIN.COLLATE_FUNCTION=multicrop_collator",),
    ),
    "swav": Benchmark("SwAV (VISSL)", "pretrain/swav/swav_8node_resnet", multicrop=()),
    "barlow_twins": Benchmark("Barlow Twins (VISSL)", "pretrain/barlow_twins/barlow_twins_4node_resnet"),
    "dino": Benchmark(
        "DINO (VISSL, ResNet)",
        "pretrain/dino/dino_16gpus_deits16",
        (
            "config.MODEL.HEAD.PARAMS=[[swav_head,{use_weight_norm_prototypes:True,dims:[2048,2048,2048,256],"
            "use_bn:False,return_embeddings:False,num_clusters:[65536]}]]",
            "config.MODEL.TEMP_FROZEN_PARAMS_ITER_MAP=[]",
        ),
        multicrop=(),
        gpu_only="VISSL's DINO hook converts its teacher to SyncBN, which needs CUDA with a BatchNorm trunk",
    ),
}


METHODS: Dict[str, Benchmark] = {
    TRUNK_ONLY: REFERENCES[TRUNK_ONLY],
    "simclr": PLUGIN_METHODS["simclr"].benchmark,
    **{name: row for name, row in REFERENCES.items() if name != TRUNK_ONLY},
    **{name: m.benchmark for name, m in PLUGIN_METHODS.items() if m.benchmark and name != "simclr"},
}


def parse_crops(spec: str) -> List[Tuple[int, int]]:
    """``"2x224+6x96"`` -> ``[(2, 224), (6, 96)]``, large crops first."""
    if not re.fullmatch(r"\d+x\d+(\+\d+x\d+)*", spec):
        raise SystemExit(f"--crops {spec!r}: expected counts x sizes like 2x224 or 2x224+6x96")
    return [tuple(int(n) for n in part.split("x")) for part in spec.split("+")]


def transforms_override(crops: Sequence[Tuple[int, int]]) -> str:
    """Multi-crop transforms for ``crops``: VISSL's ImgPilToMultiCrop with the ISSL scales, then
    tensors (colour augmentation is irrelevant here: batches are made once, before timing)."""
    counts, sizes = [n for n, _ in crops], [s for _, s in crops]
    scales = [[0.14, 1] if i == 0 else [0.05, 0.14] for i in range(len(crops))]
    multicrop = (
        f"{{name:ImgPilToMultiCrop,total_num_crops:{sum(counts)},size_crops:{sizes},"
        f"num_crops:{counts},crop_scales:{scales}}}"
    )
    return f"config.DATA.TRAIN.TRANSFORMS=[{multicrop},{{name:ToTensor}}]".replace(" ", "")


def row_overrides(
    method: Benchmark,
    crops: Sequence[Tuple[int, int]],
    device: str,
    batch: int,
    depth: int,
    out: Path,
    step_options: Sequence[str] = (),
) -> List[str]:
    gpu = device == "gpu"
    bf16 = "AUTOCAST=bfloat16" in step_options  # instead of VISSL's fp16 AMP: the two are exclusive
    overrides = [
        f"config={method.config}",
        *method.overrides,
        *(method.multicrop if sum(n for n, _ in crops) > 2 else ()),
        *(LARC if method.larc else ()),
        "config.DATA.TRAIN.DATA_SOURCES=[synthetic]",
        "config.DATA.TRAIN.DATASET_NAMES=[synthetic]",
        "config.DATA.TRAIN.DATA_PATHS=[]",
        "config.DATA.TRAIN.LABEL_SOURCES=[]",
        "config.DATA.TRAIN.RANDOM_SYNTHETIC_IMAGES=True",  # gray images would make W-MSE's covariance singular
        f"config.DATA.TRAIN.DATA_LIMIT={2 * batch}",
        f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={batch}",
        "config.DATA.NUM_DATALOADER_WORKERS=0",
        transforms_override(crops),
        "config.MODEL.TRUNK.NAME=resnet",
        f"config.MODEL.TRUNK.RESNETS.DEPTH={depth}",
        f"config.MACHINE.DEVICE={device}",
        f"config.DISTRIBUTED.BACKEND={'nccl' if gpu else 'gloo'}",
        "config.DISTRIBUTED.NUM_NODES=1",
        "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
        "config.DISTRIBUTED.INIT_METHOD=tcp",
        "config.DISTRIBUTED.RUN_ID=auto",
        f"config.MODEL.AMP_PARAMS.USE_AMP={gpu and not bf16}",
        "config.MODEL.AMP_PARAMS.AMP_TYPE=pytorch",
        f"config.MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN={gpu}",
        "config.MODEL.SYNC_BN_CONFIG.SYNC_BN_TYPE=pytorch",
        "config.OPTIMIZER.num_epochs=1",
        f"config.CHECKPOINT.DIR={out}",
        "config.CHECKPOINT.AUTO_RESUME=False",
        "config.LOG_FREQUENCY=1000000",
        "config.HOOKS.PERF_STATS.MONITOR_PERF_STATS=False",
        "config.HOOKS.TENSORBOARD_SETUP.USE_TENSORBOARD=False",
        "config.SEED_VALUE=0",
        *(f"++config.MODEL.STEP_OPTIONS.{option}" for option in step_options),
    ]
    return overrides


# ----------------------------------------------------------------------------------------------
# One row, in its own process (``_row``): peak memory is per process, and nothing leaks between rows.


class PhaseRecorder:
    """Stands in for VISSL's ``PerfStats`` (``task.perf_stats``): keeps every ``PerfTimer``
    interval, as host seconds on CPU or as CUDA event pairs on GPU, read after the run."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.records: List[Tuple[str, object]] = []

    def use_cuda_events(self) -> bool:
        return self.cuda

    def update_with_timer(self, timer) -> None:
        interval = timer._cuda_event_intervals[-1] if self.cuda else timer._last_interval
        self.records.append((timer.name, interval))

    def seconds(self) -> Dict[str, float]:
        totals: Dict[str, float] = {}
        for name, interval in self.records:
            elapsed = interval[0].elapsed_time(interval[1]) / 1000 if self.cuda else interval
            totals[name] = totals.get(name, 0.0) + elapsed
        self.records.clear()
        return totals


class CycledBatches:
    """The first batches of the real loader, repeated. Its length is the phase length VISSL's
    schedules read (``task.where``), kept above the number of steps run so it stays below 1."""

    def __init__(self, batches: list, length: int):
        self.batches, self.length, self.index = batches, length, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> "CycledBatches":
        return self

    def __next__(self):
        self.index += 1
        return self.batches[self.index % len(self.batches)]


def register_trunk_only_reference() -> None:
    import torch
    from classy_vision.losses import ClassyLoss, register_loss

    @register_loss("trunk_only_reference")
    class TrunkOnlyReference(ClassyLoss):
        """The mean of a width-1 linear map of the trunk features: a loss that costs nothing, so
        the step is the trunk's forward + backward (the ceiling for any method on these crops)."""

        @classmethod
        def from_config(cls, config) -> "TrunkOnlyReference":
            return cls()

        def forward(self, output, target) -> torch.Tensor:
            return output.float().mean()


def peak_memory_mib(cuda: bool) -> float:
    import torch

    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_row(args: argparse.Namespace) -> Dict[str, object]:
    import vissl_issl.plugin  # noqa: F401  (registers the plugin)

    register_trunk_only_reference()
    from vissl_issl.plugin.hooks import hook_generator
    from vissl_issl.plugin.launcher import compose

    import torch
    from vissl.hooks import SSLClassyHookFunctions
    from vissl.trainer.train_steps import get_train_step
    from vissl.trainer.trainer_main import SelfSupervisionTrainer
    from vissl.utils.misc import get_dist_run_id
    from vissl.utils.perf_stats import PerfTimer

    method, crops, cuda = METHODS[args.method], parse_crops(args.crops), args.device == "gpu"
    with tempfile.TemporaryDirectory() as out:
        overrides = row_overrides(method, crops, args.device, args.batch, args.depth, Path(out), args.step_options)
        _, config = compose(overrides)
        os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
        trainer = SelfSupervisionTrainer(
            config, get_dist_run_id(config, 1), checkpoint_folder=out, hooks=hook_generator(config)
        )
        task = trainer.task
        task.prepare(pin_memory=config.DATA.PIN_MEMORY)
        task.init_distributed_data_parallel_model()
        task, _, _ = trainer._init_training_state(config, task)
        task.run_hooks(SSLClassyHookFunctions.on_start.name)
        trainer._advance_phase(task)
        task.run_hooks(SSLClassyHookFunctions.on_phase_start.name)
        batches = [next(task.data_iterator) for _ in range(2)]
        total_steps = args.warmup + args.steps
        task.max_iteration = total_steps + 1  # read by momentum schedules (BYOL, DINO)
        task.data_iterator = CycledBatches(batches, total_steps + 1)

        recorder = PhaseRecorder(cuda)
        task.perf_stats = recorder
        run_hooks = task.run_hooks

        def timed_hooks(name: str) -> None:
            with PerfTimer("hooks", recorder):
                run_hooks(name)

        train_step = get_train_step(config.TRAINER.TRAIN_STEP_NAME)

        def step() -> None:
            task.run_hooks = timed_hooks
            train_step(task)
            task.run_hooks = run_hooks
            task.iteration += 1
            task.local_iteration_num += 1
            task.batches += 1
            task.run_hooks(SSLClassyHookFunctions.on_step.name)

        def synchronize() -> None:
            if cuda:
                torch.cuda.synchronize()

        for _ in range(args.warmup):
            step()
        synchronize()
        recorder.seconds()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize()
        wall = (time.perf_counter() - start) / args.steps
        timers = recorder.seconds()
        loss = task.last_batch.loss.item()
    if not math.isfinite(loss):
        raise FloatingPointError(f"{args.method} on {args.crops}: the loss is {loss}, the timings would mean nothing")
    ms = {phase: 1000 * sum(timers.get(name, 0.0) for name in names) / args.steps for phase, names in TIMERS.items()}
    ms["other"] = 1000 * wall - sum(ms.values())
    return {"ms": {"step": 1000 * wall, **ms}, "peak_mib": peak_memory_mib(cuda)}


# ----------------------------------------------------------------------------------------------
# The step table.


def skip_reason(args: argparse.Namespace, method: str, crops: str) -> str:
    spec = METHODS[method]
    if args.device == "cpu" and spec.gpu_only:
        return f"GPU only: {spec.gpu_only}"
    if args.batch < spec.min_batch:
        return f"needs >= {spec.min_batch} images per GPU"
    if sum(n for n, _ in parse_crops(crops)) > 2 and spec.multicrop is None:
        return "2 views only"
    return ""


def measure(args: argparse.Namespace, method: str, crops: str) -> Dict[str, object]:
    """One timed block of one row, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "row.json"
        command = [
            sys.executable, __file__, "_row", "--method", method, "--crops", crops, "--device", args.device,
            "--batch", str(args.batch), "--depth", str(args.depth), "--warmup", str(args.warmup),
            "--steps", str(args.steps), "--result", str(result_file), "--step-options", *args.step_options,
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
        if run.returncode != 0:
            raise SystemExit(f"{method} on {crops} failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}")
        return json.loads(result_file.read_text())


def median_of_repeats(repeats: List[Dict[str, object]], batch: int) -> Dict[str, object]:
    """Each phase's median over repeats; the largest peak memory."""
    ms = {key: statistics.median(r["ms"][key] for r in repeats) for key in repeats[0]["ms"]}
    return {"ms": ms, "images_per_s": 1000 * batch / ms["step"], "peak_mib": max(r["peak_mib"] for r in repeats)}


def ratio(value: float, reference: Optional[float]) -> str:
    return f"{value / reference:.2f}x" if reference else "–"


def step_table(args: argparse.Namespace, results: Dict[Tuple[str, str], Dict[str, object]]) -> str:
    memory = "peak GPU memory (MiB)" if args.device == "gpu" else "peak RSS (MiB)"
    lines = []
    for crops in args.crops:
        reference = {
            m: results[(m, crops)] for m in ("simclr", "dino", TRUNK_ONLY) if "ms" in results.get((m, crops), {})
        }
        lines += [
            f"**{crops}**, batch {args.batch} per {args.device.upper()}, ResNet-{args.depth}:",
            "",
            f"| method | images/s | step ms | {' | '.join(PHASES)} | heads+loss vs trunk only | vs SimCLR | vs DINO "
            f"| {memory} | memory vs SimCLR |",
            "|---|" + "---|" * (len(PHASES) + 7),
        ]
        for method in args.methods:
            result = results[(method, crops)]
            label = METHODS[method].label
            if "skip" in result:
                lines.append(f"| {label} | {result['skip']} |" + " |" * (len(PHASES) + 7))
                continue
            ms = result["ms"]
            step = ms["step"]
            ref_ms = {m: r["ms"]["step"] for m, r in reference.items()}
            overhead = (
                f"{100 * (step / ref_ms[TRUNK_ONLY] - 1):+.1f}%"
                if TRUNK_ONLY in ref_ms and method != TRUNK_ONLY
                else "–"
            )
            simclr_mem = reference["simclr"]["peak_mib"] if "simclr" in reference else None
            lines.append(
                f"| {label} | {result['images_per_s']:.1f} | {step:.1f} | "
                + " | ".join(f"{ms[p]:.1f}" for p in PHASES)
                + f" | {overhead} | {ratio(step, ref_ms.get('simclr'))} | {ratio(step, ref_ms.get('dino'))}"
                + f" | {result['peak_mib']:.0f} | {ratio(result['peak_mib'], simclr_mem)} |"
            )
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The data-loader table.

CROP_PARTS = {"m2": "2x224", "m6": "2x160+4x96", "m8": "2x224+6x96"}


def write_jpegs(folder: Path, count: int) -> None:
    """``count`` JPEGs of ImageNet's most common size (500 x 375) with smooth random content, so
    their files (~50-100 kB at quality 90) cost what ImageNet's cost to decode."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "class0").mkdir(parents=True)
    for index in range(count):
        coarse = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)
        noise = rng.normal(0, 12, (375, 500, 3))
        pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "class0" / f"{index}.jpg", quality=90)


def part_transforms(part: str) -> List[dict]:
    """The full (PIL) augmentation list of ``parts/crops_<part>``, as VISSL's stock pipeline runs it."""
    from omegaconf import OmegaConf

    train = OmegaConf.load(REPO / "configs/config/pretrain/parts" / f"crops_{part}.yaml").config.DATA.TRAIN
    return OmegaConf.to_container(train.TRANSFORMS)


def loader_rate(transforms: List[dict], folder: Path, workers: int, batch: int, batches: int) -> float:
    """Images/s of VISSL's dataset + ``transforms`` + multicrop collator with ``workers`` DataLoader
    workers; the first batch (worker start-up) is excluded."""
    from vissl_issl.plugin.launcher import compose

    import torch
    from vissl.data import build_dataloader, build_dataset

    _, config = compose(
        [
            "config=pretrain/dissl/dissl_resnet50_dNone_e100_m2",
            "config.DATA.TRAIN.DATA_SOURCES=[disk_folder]",
            f"config.DATA.TRAIN.DATA_PATHS=[{folder}]",
            f"config.DATA.TRAIN.BATCHSIZE_PER_REPLICA={batch}",
            f"config.DATA.NUM_DATALOADER_WORKERS={workers}",
            "config.MACHINE.DEVICE=cpu",
        ]
    )
    config.DATA.TRAIN.TRANSFORMS = transforms
    dataset = build_dataset(config, "TRAIN")
    loader = build_dataloader(
        dataset=dataset,
        dataset_config=config.DATA.TRAIN,
        num_dataloader_workers=workers,
        pin_memory=False,
        multi_processing_method="fork",
        device=torch.device("cpu"),
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def device_ms_per_batch(transforms: List[dict], batch: int, repeats: int) -> float:
    """Median milliseconds of the device part of ``transforms`` on one batch of ``batch`` images
    with all their crops (uint8, one call per crop size, as the training hook runs it), on the GPU
    when there is one."""
    import torch

    from vissl_issl.data.device_augmentation import DeviceAugmentation, split_transforms

    multicrop = transforms[0]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    augmentation = DeviceAugmentation(split_transforms(transforms)[1]).to(device)
    views = [
        torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
        for size, count in zip(multicrop["size_crops"], multicrop["num_crops"])
        for _ in range(count)
    ]
    timings = []
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        augmentation.augment_views(views)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return 1000 * statistics.median(timings[1:])


# ----------------------------------------------------------------------------------------------


def versions() -> str:
    import torch
    import torchvision
    import vissl

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    return (
        f"{device} ({platform.processor() or platform.machine()}); Python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, VISSL {vissl.__version__}"
    )


def write_section(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the ``name`` section of ``doc``."""
    begin, end = f"<!-- benchmark:{name} -->", f"<!-- /benchmark:{name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else ""
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    doc.write_text(text)


def report(args: argparse.Namespace, name: str, table: str) -> None:
    command = "bash tools/env.sh python tools/benchmark.py " + shlex.join(sys.argv[1:])
    body = f"Command: `{command}`\n\nMachine: {versions()}; {time.strftime('%Y-%m-%d')}.\n\n{table}"
    print(body)
    if args.doc:
        write_section(Path(args.doc), name, body)


def step_main(args: argparse.Namespace) -> None:
    rows = [(m, c) for c in args.crops for m in args.methods]
    skipped = {row: {"skip": reason} for row in rows if (reason := skip_reason(args, *row))}
    repeats: Dict[Tuple[str, str], List[Dict[str, object]]] = {row: [] for row in rows if row not in skipped}
    # Rows take turns, a fresh process each time, so that a slow spell of a shared machine hits
    # every row alike instead of one.
    for repeat in range(args.repeats):
        for method, crops in repeats:
            print(f"repeat {repeat + 1}/{args.repeats}: {method} on {crops} ...", file=sys.stderr, flush=True)
            repeats[(method, crops)].append(measure(args, method, crops))
    results = {**skipped, **{row: median_of_repeats(r, args.batch) for row, r in repeats.items()}}
    options = "".join(f"-{option.lower()}" for option in args.step_options)
    report(args, f"step-{args.device}-b{args.batch}-{'-'.join(args.crops)}{options}", step_table(args, results))


TRUNK_VARIANTS = {
    "fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"autocast": "bfloat16"},
    "both": {"channels_last": True, "autocast": "bfloat16"},
    "compile": {"compile": True},
}


def trunk_main(args: argparse.Namespace) -> None:
    from vissl_issl.plugin.step_options import StepOptions, apply_step_options

    import torch
    import torch.nn as nn

    from vissl_issl.architectures.resnet import ResNetArch, build_resnet

    class Model(nn.Module):  # what apply_step_options takes: a model with a .trunk
        def __init__(self, trunk: nn.Module):
            super().__init__()
            self.trunk = trunk

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.trunk(images)

    small = args.depth == 18
    arch = ResNetArch(args.depth, small_image_stem=small, maxpool=True)
    images = torch.randn(args.batch, 3, args.size, args.size)
    models = {}
    for name in args.variants:
        torch.manual_seed(0)
        models[name] = Model(build_resnet(arch))
        options = dict(TRUNK_VARIANTS[name])
        if "autocast" in options:
            options["autocast"] = torch.bfloat16
        apply_step_options(models[name], StepOptions(**options), "cpu")

    def step(model: nn.Module) -> None:
        model(images).float().square().mean().backward()
        for parameter in model.parameters():
            parameter.grad = None

    for model in models.values():  # warm-up (and compilation)
        step(model)
        step(model)
    times: Dict[str, List[float]] = {name: [] for name in args.variants}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model)
            times[name].append(1000 * (time.perf_counter() - start) / args.steps)
    first = args.variants[0]
    lines = [
        f"ResNet-{args.depth}, batch {args.batch} x {args.size} px, forward + backward, {torch.get_num_threads()} "
        f"threads, {args.steps} steps x {args.repeats} interleaved repeats:",
        "",
        f"| variant | ms per step (median) | speed-up vs {first} |",
        "|---|---|---|",
    ]
    for name in args.variants:
        ratio = statistics.median(a / b for a, b in zip(times[first], times[name]))
        lines.append(f"| {name} | {statistics.median(times[name]):.0f} | {ratio:.2f}x |")
    report(args, f"trunk-r{args.depth}-b{args.batch}-{args.size}px", "\n".join(lines) + "\n")


def data_main(args: argparse.Namespace) -> None:
    """VISSL's stock pipeline (every transform in the workers) and the plugin's worker path
    (``DATA.TRAIN.DEVICE_AUGMENTATION``: decode, crops and flip, uint8 out) side by side, in one run,
    and the device part's cost per batch."""
    import vissl_issl.plugin  # noqa: F401

    from vissl_issl.data.device_augmentation import split_transforms

    source = f"`{args.folder}`" if args.folder else "synthetic 500x375 JPEGs"
    import torch

    device = "GPU" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"Images/s per DataLoader worker, batch {args.batch}, {source}; stock: VISSL's PIL pipeline in the "
        "workers; plugin: the workers' part with `DATA.TRAIN.DEVICE_AUGMENTATION` (its device part's cost "
        f"per batch of {args.batch} images with all crops, {device}, in the last column):",
        "",
        "| crops | workers | stock images/s per worker | plugin images/s per worker | plugin / stock "
        "| device part, ms per batch |",
        "|---|---|---|---|---|---|",
    ]
    results: Dict[str, Dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp)
            write_jpegs(folder, args.batch * (args.batches + 1) * max(args.workers))
        for part in args.crops:
            transforms = part_transforms(part)
            worker_part = split_transforms(transforms)[0]
            device_ms = device_ms_per_batch(transforms, args.batch, args.batches)
            for workers in args.workers:
                # Interleaved, so that a slow spell of a shared machine hits both paths alike.
                stock = loader_rate(transforms, folder, workers, args.batch, args.batches) / workers
                plugin = loader_rate(worker_part, folder, workers, args.batch, args.batches) / workers
                lines.append(f"| `parts/crops_{part}` ({CROP_PARTS[part]}) | {workers} | {stock:.1f} | "
                             f"{plugin:.1f} | {plugin / stock:.2f}x | {device_ms:.1f} |")  # fmt: skip
                if workers == args.workers[0]:
                    results[part] = {"stock": stock, "plugin": plugin, "device_ms_per_batch": device_ms}
    if args.json:
        args.json.write_text(json.dumps({"workers": args.workers[0], "batch": args.batch, "pipelines": results}))
    report(args, "data", "\n".join(lines) + "\n")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    step = commands.add_parser("step", help="the training step of every method")
    step.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    step.add_argument("--batch", type=int, default=8, help="images per GPU (per process on CPU)")
    step.add_argument("--crops", nargs="+", default=["2x96", "2x96+6x48"], help="e.g. 2x224 2x224+6x96")
    step.add_argument("--depth", type=int, default=50, help="ResNet depth of every row")
    step.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    step.add_argument("--warmup", type=int, default=3)
    step.add_argument("--steps", type=int, default=5, help="steps per repeat")
    step.add_argument("--repeats", type=int, default=3)
    step.add_argument(
        "--step-options",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config.MODEL.STEP_OPTIONS of every row, e.g. CHANNELS_LAST=True AUTOCAST=bfloat16 COMPILE=True",
    )
    step.add_argument("--doc", type=Path, help="write the table into this markdown file")
    row = commands.add_parser("_row")  # one row, run by `step` in a fresh process
    for name in ("--method", "--crops", "--device", "--result"):
        row.add_argument(name, required=True)
    for name in ("--batch", "--depth", "--warmup", "--steps"):
        row.add_argument(name, type=int, required=True)
    row.add_argument("--step-options", nargs="*", default=[])
    trunk = commands.add_parser("trunk", help="the trunk's forward + backward under the step options")
    trunk.add_argument("--depth", type=int, choices=[18, 50], default=50)
    trunk.add_argument("--batch", type=int, default=32)
    trunk.add_argument("--size", type=int, default=96, help="image side in pixels")
    trunk.add_argument("--variants", nargs="+", choices=list(TRUNK_VARIANTS), default=list(TRUNK_VARIANTS))
    trunk.add_argument("--steps", type=int, default=1)
    trunk.add_argument("--repeats", type=int, default=6)
    trunk.add_argument("--doc", type=Path, help="write the table into this markdown file")
    data = commands.add_parser("data", help="images/s of the augmentation pipelines per worker")
    data.add_argument("--crops", nargs="+", choices=list(CROP_PARTS), default=list(CROP_PARTS))
    data.add_argument("--workers", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    data.add_argument("--batch", type=int, default=32)
    data.add_argument("--batches", type=int, default=4, help="timed batches per measurement")
    data.add_argument("--folder", type=Path, help="an image folder (class sub-folders) instead of synthetic JPEGs")
    data.add_argument("--doc", type=Path, help="write the table into this markdown file")
    data.add_argument("--json", type=Path, help='write {"pipelines": {crops: {"stock": ips, "plugin": ips, ...}}}')
    args = parser.parse_args(argv)
    if args.command == "step":
        step_main(args)
    elif args.command == "data":
        data_main(args)
    elif args.command == "trunk":
        trunk_main(args)
    else:
        Path(args.result).write_text(json.dumps(run_row(args)))


if __name__ == "__main__":
    main()
