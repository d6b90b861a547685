"""Probe (linear or MLP) and k-NN of a frozen trunk (any ResNet weights), on cached features.

    python tools/probe.py --checkpoint <weights | random> --data <spec> [--features-dir DIR]
                          [--config NAME] [config.X=Y ...] [--authors-protocol] [--head mlp]
                          [--label-fraction F] [--epochs N] [--batchnorm] ...

1. Builds the trunk as pretraining did: ``vissl.models.build_model(config.MODEL, config.OPTIMIZER).trunk``
   with ``config`` read from the ``train_config.yaml`` VISSL saved next to the checkpoint, or composed
   from ``--config NAME`` and ``config.X=Y`` overrides; loads the checkpoint's
   ``classy_state_dict.base_model.model.trunk``. ``--checkpoint random`` keeps the trunk at its
   random initialisation (seeded with the config's ``SEED_VALUE``) as a baseline; without
   ``--config`` it is the digits recipe's trunk (``pretrain/dissl/dissl_resnet18_digits``).
   ``--checkpoint`` takes any weights spec of :mod:`vissl_issl.weights`, detected from the file:
   a VISSL checkpoint (this plugin's, or of VISSL's own ``resnet`` trunk: the model zoo), a VISSL
   trunk, torchvision or the authors' release state dict (resizer ``avgpool.0.`` or ``resizer.``,
   ``fc`` dropped), or ``hub:<release>:<local file>`` (a hubconf release's architecture). With a
   config (``--config``, or the ``train_config.yaml`` beside a checkpoint) the weights load into the
   config's trunk; without one the trunk is a torchvision ResNet whose architecture the weights
   give (maxpool assumed), and images are normalised with ImageNet's statistics. Weights that do
   not fit fail with one error naming the keys.
2. Extracts the trunk's features of the train and test splits once (float16 memmaps in the
   features dir, reused while the checkpoint, config, data and transform are unchanged).
3. Trains the authors' probe (:mod:`~vissl_issl.evaluation.linear_probe`: SGD, cosine, every
   point of an lr x wd grid trained on 90% of train to select one and on all of train to score
   each on test) and runs cosine k-NN; prints top-1/top-5 on the test split and writes
   ``results.json`` in the features dir: the data, the probe config, the probe's result (under the
   head's name, ``linear`` or ``mlp``: the selected point's test accuracy, the max over the grid,
   and every point's held-out and test accuracy) and k-NN's.

``--protocol NAME [NAME ...]`` (default ``ours``: step 3) also or instead runs the authors' protocols
of :mod:`~vissl_issl.evaluation.protocols` on the same features: ``issl_logistic``, ``issl_svm``
(the FORK's scikit-learn protocol, ``--n-hyper-param`` draws of C), ``issl_torch_head`` (the FORK's
torch head, random lr x wd search), ``wmse_linear`` (Adam, 500 epochs), ``wmse_knn`` (Euclidean
5-NN); ``--epochs`` replaces every torch head's epochs, and with ``--label-fraction`` every protocol
learns from the same label subset. ``results.json`` lists every number under ``protocols``, each
with the protocol that produced it, its settings and what its search selected.

``python tools/probe.py transfer --checkpoint W --data SPEC [SPEC ...] [--protocol ...] --out DIR``
runs the same on several datasets (every spec is checked before any extraction), caches each one's
features in ``DIR/features/<spec>`` and writes ``DIR/transfer.csv`` and ``DIR/transfer.md``: one row
per dataset, protocol and classifier.

The probe is the FORK's ImageNet linear probe (lr x wd grid, batch 2048, lr scaled by batch / 256)
unless ``--authors-protocol`` asks for the ISSL TinyImageNet one (lr 0.3 as is, wd in {1e-4, 1e-5,
1e-6}, batch 512, 100 epochs; the paper reports the max over wd); ``--lrs``, ``--wds``, ``--epochs``
and ``--batch-size`` override either. ``--head mlp`` trains the ISSL MLP probe (2 hidden layers of
2048, BN, ReLU) instead of a linear one. ``--label-fraction F`` (with ``--subset-seed``) makes the
probe and k-NN learn from a stratified subset of the train labels (every class keeps
``max(1, round(F x its rows))``); the test split stays whole.

Data specs (test split in brackets), all read without downloading:

- ``digits``: the embedded scikit-learn digits at 16 px (TRAIN 1437 [TEST 360]);
- ``folder:<root>``: torchvision ``ImageFolder`` of ``<root>/train`` [``<root>/val``], Resize 256 ->
  CenterCrop 224 unless ``--resize/--crop`` say otherwise; a file that cannot be read or decoded
  becomes a grey placeholder, is listed after extraction, and stops the extraction once more than
  ``--max-broken-fraction`` (default 0.001; 0: none) of its split are
  (:class:`~vissl_issl.data.broken_images.BrokenImageFolder`);
- ``cifar10:<root>``, ``cifar100:<root>``, ``stl10:<root>``: torchvision's datasets in ``<root>``
  (train [test]) at their native size unless ``--resize/--crop`` are given;
- ``dtd:<root>`` (train + val of partition 1 [test]), ``food101:<root>`` (train [test]),
  ``flowers102:<root>`` (train + val [test]), ``oxfordiiitpet:<root>`` (trainval [test]),
  ``stanfordcars:<root>`` (train [test]), ``fgvcaircraft:<root>`` (trainval [test], variants),
  ``caltech101:<root>`` (no official split: 30 images of each class, drawn with seed 0, [the rest]):
  torchvision's datasets in ``<root>``, Resize 256 -> CenterCrop 224 like folders.

Images are normalised with the ``Normalize`` of the pretraining config's TRAIN transforms, i.e.
what the trunk was trained on; a config without one gets the spec's usual statistics (digits
0.5/0.5, otherwise ImageNet's).
"""

import argparse
import csv
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import vissl_issl.plugin  # noqa: F401  (registers the plugin's trunks and the digits source)
from vissl_issl.plugin.launcher import compose

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as T
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset
from vissl.config import AttrDict
from vissl.models import build_model

from vissl_issl.checkpoints import CheckpointError, check_fits, describe_run
from vissl_issl.data.broken_images import DEFAULT_MAX_FRACTION, BrokenImageFolder, check_max_fraction, sample_listing
from vissl_issl.data.digits import DigitsDataset
from vissl_issl.evaluation.features import Features, Producer, cache_matches, extract_features, load_features
from vissl_issl.evaluation.knn import DEFAULT_KS, DEFAULT_TEMPERATURE, knn_accuracy
from vissl_issl.evaluation.linear_probe import (
    AUTHORS_LRS,
    AUTHORS_WDS,
    HEADS,
    TINYIMAGENET_LR,
    TINYIMAGENET_WDS,
    ProbeConfig,
    linear_probe,
)
from vissl_issl.evaluation.protocols import N_HYPER_PARAM, PROTOCOLS, authors_protocol, ours
from vissl_issl.evaluation.subsets import stratified_subset
from vissl_issl.weights import HUB_PREFIX, load_trunk, parse_spec, vissl_trunk_state
from vissl_issl.weights import identity as weights_identity

RANDOM = "random"
RANDOM_DEFAULT_CONFIG = "pretrain/dissl/dissl_resnet18_digits"
SPLITS = ("train", "test")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DIGITS_MEAN, DIGITS_STD = [0.5] * 3, [0.5] * 3
TORCHVISION_SETS = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}
# torchvision datasets read with split=...: (class, train splits (concatenated), test split)
SPLIT_SETS = {
    "stl10": (torchvision.datasets.STL10, ("train",), "test"),
    "dtd": (torchvision.datasets.DTD, ("train", "val"), "test"),
    "food101": (torchvision.datasets.Food101, ("train",), "test"),
    "flowers102": (torchvision.datasets.Flowers102, ("train", "val"), "test"),
    "oxfordiiitpet": (torchvision.datasets.OxfordIIITPet, ("trainval",), "test"),
    "stanfordcars": (torchvision.datasets.StanfordCars, ("train",), "test"),
    "fgvcaircraft": (torchvision.datasets.FGVCAircraft, ("trainval",), "test"),
}
CALTECH101_TRAIN_PER_CLASS, CALTECH101_SEED = 30, 0  # no official split: the usual 30 train images per class
DATA_KINDS = ("digits", "folder", *TORCHVISION_SETS, *SPLIT_SETS, "caltech101")
RESIZED_KINDS = ("folder", *(kind for kind in SPLIT_SETS if kind != "stl10"), "caltech101")  # images of any size
TRANSFER = "transfer"
BROKEN_OPTION = "--max-broken-fraction"
PRESET_OPTIONS = ("lrs", "wds", "epochs", "batch_size")  # None unless given: the preset's value then


def fmt(values: Sequence[float]) -> str:
    return " ".join(f"{value:g}" for value in values)


class DigitsSplit(Dataset):
    """A digits split as ``(transformed image, label)`` items."""

    def __init__(self, split: str, transform: T.Compose):
        self.digits = DigitsDataset(AttrDict({"DATA": {split.upper(): {}}}), "", split, "", "")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        image, _ = self.digits[index]
        return self.transform(image), int(self.digits.labels[index])


def parse_data(spec: str) -> Tuple[str, Optional[Path]]:
    """``(kind, root)`` of a ``--data`` spec; root is None for digits."""
    kind, _, root = spec.partition(":")
    if kind not in DATA_KINDS or (kind == "digits") != (root == ""):
        expected = ", ".join(["digits", *(f"{other}:<root>" for other in DATA_KINDS[1:])])
        raise SystemExit(f"--data {spec!r}: expected one of {expected}")
    return kind, (Path(root).resolve() if root else None)


def datasets(
    kind: str, root: Optional[Path], transform: T.Compose, max_broken_fraction: float = DEFAULT_MAX_FRACTION
) -> Dict[str, Dataset]:
    """The train and test splits of the spec, read from disk without downloading; a folder's
    broken images are held to ``max_broken_fraction`` (``--max-broken-fraction``)."""
    if kind == "digits":
        return {split: DigitsSplit(split, transform) for split in SPLITS}
    if kind == "folder":
        folders = {"train": root / "train", "test": root / "val"}
        for folder in folders.values():
            if not folder.is_dir():
                raise SystemExit(f"--data folder:{root}: {folder} is not a directory (needs <root>/train, <root>/val)")
        return {
            split: BrokenImageFolder(str(path), transform, max_broken_fraction, BROKEN_OPTION)
            for split, path in folders.items()
        }
    try:
        if kind in TORCHVISION_SETS:
            builder = TORCHVISION_SETS[kind]
            return {split: builder(str(root), split == "train", transform) for split in SPLITS}
        if kind == "caltech101":
            return caltech101_splits(root, transform)
        builder, train_splits, test_split = SPLIT_SETS[kind]
        parts = {"train": train_splits, "test": (test_split,)}
        return {
            split: ConcatDataset([builder(str(root), split=part, transform=transform) for part in names])
            for split, names in parts.items()
        }
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        raise SystemExit(f"--data {kind}:{root}: torchvision cannot read {kind} there ({error}); nothing is downloaded")


def rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def caltech101_splits(root: Path, transform: T.Compose) -> Dict[str, Dataset]:
    """Caltech-101 (no background class) has no official split: of each class, 30 images drawn with
    ``numpy.random.default_rng(0)`` over the classes in order train, the rest test. Some of its images
    are grayscale: converted to RGB."""
    everything = torchvision.datasets.Caltech101(str(root), transform=T.Compose([T.Lambda(rgb), transform]))
    labels = np.asarray(everything.y)
    rng = np.random.default_rng(CALTECH101_SEED)
    per_class = [rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    train = np.sort(np.concatenate([rows[:CALTECH101_TRAIN_PER_CLASS] for rows in per_class]))
    test = np.setdiff1d(np.arange(len(labels)), train)
    return {"train": Subset(everything, train.tolist()), "test": Subset(everything, test.tolist())}


def pretraining_normalization(config: AttrDict, kind: str) -> Tuple[List[float], List[float]]:
    """Mean and std of the config's TRAIN ``Normalize`` transform (in ``DEVICE_TRANSFORMS`` with device-side
    augmentation), else the spec's usual ones."""
    for transform in [*config.DATA.TRAIN.TRANSFORMS, *config.DATA.TRAIN.get("DEVICE_TRANSFORMS", [])]:
        if transform["name"] == "Normalize":
            return list(transform["mean"]), list(transform["std"])
    return (DIGITS_MEAN, DIGITS_STD) if kind == "digits" else (IMAGENET_MEAN, IMAGENET_STD)


def image_transform(kind: str, config: AttrDict, resize: Optional[int], crop: Optional[int]) -> T.Compose:
    if kind in RESIZED_KINDS:
        resize, crop = resize or 256, crop or 224
    steps = [T.Resize(resize)] if resize else []
    steps += [T.CenterCrop(crop)] if crop else []
    mean, std = pretraining_normalization(config, kind)
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def load_config(checkpoint: str, name: Optional[str], overrides: List[str]) -> Tuple[AttrDict, Producer]:
    """The pretraining config and a description of where it came from. Weights without a config
    (no ``--config``, a ``hub:`` spec or no ``train_config.yaml`` beside the file) get one without
    ``MODEL`` (:func:`build_trunk` then builds the weights' ResNet) normalising with ImageNet's
    statistics."""
    if name is None and checkpoint == RANDOM:
        name = RANDOM_DEFAULT_CONFIG
    if name is not None:
        return compose([f"config={name}", *overrides])[1], {"name": name, "overrides": overrides}
    if overrides:
        raise SystemExit(f"config overrides {overrides} need --config (a checkpoint's train_config.yaml is used as is)")
    path = Path(checkpoint).resolve().parent / "train_config.yaml"
    if checkpoint.startswith(HUB_PREFIX) or not path.is_file():
        print(
            f"--checkpoint {checkpoint}: no --config and no train_config.yaml beside it: the architecture comes "
            "from the weights and images are normalised with ImageNet's statistics; --config NAME sets both",
            file=sys.stderr,
        )
        transforms = [{"name": "Normalize", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}]
        return AttrDict({"SEED_VALUE": 0, "DATA": {"TRAIN": {"TRANSFORMS": transforms}}}), {"weights_only": True}
    config = AttrDict(OmegaConf.to_container(OmegaConf.load(path)))  # OmegaConf reads 1e-5 as a float
    return config, {"file": str(path), "mtime_ns": path.stat().st_mtime_ns}


def checkpoint_identity(checkpoint: str, config: AttrDict) -> Producer:
    if checkpoint == RANDOM:
        return {"checkpoint": RANDOM, "seed": config.SEED_VALUE}
    try:
        return weights_identity(checkpoint)
    except CheckpointError as error:
        raise SystemExit(f"--checkpoint: {error}")


def build_trunk(checkpoint: str, config: AttrDict) -> nn.Module:
    """The config's trunk with the weights loaded, or the weights' own ResNet for a config without
    ``MODEL`` (:func:`load_config`)."""
    try:
        if "MODEL" not in config:
            return load_trunk(checkpoint)[0]
        torch.manual_seed(config.SEED_VALUE)
        trunk = build_model(config.MODEL, config.OPTIMIZER).trunk
        if checkpoint != RANDOM:
            state = vissl_trunk_state(checkpoint)
            into = f"the trunk of the config, {describe_run(config)}"
            check_fits(trunk.state_dict(), state, "trunk", checkpoint, into)
            trunk.load_state_dict(state)
    except CheckpointError as error:
        raise SystemExit(f"--checkpoint: {error}")
    return trunk


def default_features_dir(checkpoint: str, data: str) -> Path:
    slug = data.replace(":", "_").replace("/", "_").strip("_")
    if checkpoint == RANDOM:
        return Path(f"probe_random_{slug}")
    try:
        release, path = parse_spec(checkpoint)
    except CheckpointError as error:
        raise SystemExit(f"--checkpoint: {error}")
    stem = path.stem if release is None else f"{release}_{path.stem}"
    return path.parent / f"probe_{stem}_{slug}"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options of one dataset's probe or, when ``argv`` starts with ``transfer``, of the transfer
    suite (``args.command`` says which)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    transfer = argv[:1] == [TRANSFER]
    prog = f"{os.path.basename(sys.argv[0])} {TRANSFER}" if transfer else None
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a VISSL checkpoint (this plugin's or VISSL's), a torchvision, release or VISSL trunk state dict, "
        "hub:<release>:<local file>, or 'random'",
    )
    kinds = " | ".join(["digits", *(f"{kind}:ROOT" for kind in DATA_KINDS[1:])])
    if transfer:
        parser.add_argument("--data", required=True, nargs="+", help=f"datasets, each {kinds}")
        parser.add_argument("--out", required=True, type=Path, help="transfer.csv, transfer.md and features/")
    else:
        parser.add_argument("--data", required=True, help=kinds)
        parser.add_argument(
            "--features-dir", type=Path, help="default: probe_<checkpoint>_<data> beside the checkpoint"
        )
    parser.add_argument("--config", help="hydra config name, instead of the checkpoint's train_config.yaml")
    parser.add_argument("overrides", nargs="*", help="config.X=Y overrides of --config")
    parser.add_argument("--resize", type=int, help="Resize before CenterCrop (folder: 256)")
    parser.add_argument("--crop", type=int, help="CenterCrop size (folder: 224)")
    parser.add_argument(
        BROKEN_OPTION,
        type=float,
        default=DEFAULT_MAX_FRACTION,
        help="folder: the share of a split's images that may be unreadable (grey placeholders); 0 refuses any",
    )
    parser.add_argument("--extract-batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="data loader processes")
    parser.add_argument(
        "--authors-protocol", action="store_true", help="the ISSL TinyImageNet probe instead of the FORK's ImageNet one"
    )
    parser.add_argument("--head", choices=HEADS, default="linear", help="mlp: 2 hidden layers of 2048, BN, ReLU")
    parser.add_argument("--epochs", type=int, help="default 100 (wmse_linear 500); replaces every torch head's")
    parser.add_argument("--batch-size", type=int, help="probe batch (default 2048; --authors-protocol 512)")
    parser.add_argument(
        "--lrs",
        type=float,
        nargs="+",
        help=f"default {fmt(AUTHORS_LRS)}, x batch / 256; --authors-protocol {TINYIMAGENET_LR:g}, as is",
    )
    parser.add_argument(
        "--wds", type=float, nargs="+", help=f"default {fmt(AUTHORS_WDS)}; --authors-protocol {fmt(TINYIMAGENET_WDS)}"
    )
    parser.add_argument("--batchnorm", action="store_true", help="BatchNorm1d(affine=False) before the head")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="part of train held out to select lr x wd")
    parser.add_argument("--label-fraction", type=float, default=1.0, help="learn from this stratified part of train")
    parser.add_argument("--subset-seed", type=int, default=0, help="which rows --label-fraction keeps")
    parser.add_argument("--seed", type=int, default=0, help="the held-out split, probe init and shuffling")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--chunk-rows", type=int, default=65536, help="feature rows held in memory at once")
    parser.add_argument(
        "--protocol",
        nargs="+",
        choices=PROTOCOLS,
        default=["ours"],
        help="ours: the probe sweep and cosine k-NN above; the others: the authors' protocols (module doc)",
    )
    parser.add_argument(
        "--n-hyper-param", type=int, default=N_HYPER_PARAM, help="issl_logistic, issl_svm, issl_torch_head: draws"
    )
    args = parser.parse_intermixed_args(argv[1:] if transfer else argv)  # config.X=Y may sit between options
    args.command = TRANSFER if transfer else "probe"
    return args


def cached_splits(args: argparse.Namespace, features_dir: Path) -> Dict[str, Any]:
    """Train and test features, extracted only where the cache is missing or stale."""
    kind, root = parse_data(args.data)
    config, config_source = load_config(args.checkpoint, args.config, args.overrides)
    transform = image_transform(kind, config, args.resize, args.crop)
    trunk_identity = {**checkpoint_identity(args.checkpoint, config), "config": config_source}
    data_identity = {"data": args.data, "root": None if root is None else str(root), "transform": repr(transform)}
    producers = {split: {"trunk": trunk_identity, **data_identity, "split": split} for split in SPLITS}
    stale = [split for split in SPLITS if not cache_matches(features_dir, split, producers[split])]
    if stale:
        trunk = build_trunk(args.checkpoint, config)
        splits = datasets(kind, root, transform, args.max_broken_fraction)
        for split in stale:
            extract_features(
                trunk, splits[split], features_dir, split, producers[split], args.extract_batch_size, args.workers
            )
            report_broken(split, splits[split])
    return {split: load_features(features_dir, split) for split in SPLITS}


def report_broken(split: str, dataset: Dataset) -> None:
    """One line naming the images of a folder split that were replaced by placeholders, if any."""
    if not isinstance(dataset, BrokenImageFolder):
        return
    files = dataset.broken_files()
    if files:
        print(
            f"{split}: {len(files)} of {len(dataset)} images ({len(files) / len(dataset):.3%}) could not be read or "
            f"decoded and were replaced by grey placeholders ({BROKEN_OPTION} {dataset.max_fraction:g}): "
            f"{sample_listing(files, len(files))}",
            file=sys.stderr,
        )


def probe_config(args: argparse.Namespace) -> ProbeConfig:
    """``ProbeConfig()`` or, with ``--authors-protocol``, the ISSL TinyImageNet preset, with the
    options given on the command line replacing their fields."""
    preset = ProbeConfig.authors_tinyimagenet() if args.authors_protocol else ProbeConfig()
    given = {name: getattr(args, name) for name in PRESET_OPTIONS if getattr(args, name) is not None}
    return dataclasses.replace(
        preset,
        head=args.head,
        batchnorm=args.batchnorm,
        val_fraction=args.val_fraction,
        label_fraction=args.label_fraction,
        subset_seed=args.subset_seed,
        chunk_rows=args.chunk_rows,
        seed=args.seed,
        **given,
    )


def label_subset(train: Features, config: ProbeConfig) -> Features:
    """The train rows the probe learns from, for k-NN to see the same labels (in memory: a subset)."""
    if config.label_fraction == 1:
        return train
    rows = stratified_subset(train.labels, config.label_fraction, config.subset_seed)
    return Features(np.asarray(train.features[rows]), np.asarray(train.labels[rows]))


def describe(values: Dict[str, float]) -> str:
    """``{"lr": 0.3, "wd": 1e-06}`` -> ``"lr 0.3, wd 1e-06"``."""
    return ", ".join(f"{name} {value:.3g}" for name, value in values.items())


def report(args: argparse.Namespace, results: Dict[str, Any]) -> str:
    learnt_from = f"{results['train_count']} train"
    if args.label_fraction < 1:
        learnt_from = f"{results['train_rows']} of {learnt_from} ({args.label_fraction:g} of the labels)"
    lines = [
        f"Probe of {args.checkpoint} on {args.data} ({results['dim']}-d features, "
        f"{learnt_from} / {results['test_count']} test):"
    ]
    if "probe_config" in results:  # ours
        config = results["probe_config"]
        probe = results[config["head"]]
        selected = "%s, lr %g wd %g (%d epochs)" % (config["head"], probe["lr"], probe["wd"], config["epochs"])
        lines += [
            f"  {selected:<40}top-1 {probe['test_top1']:6.2f}%   top-5 {probe['test_top5']:6.2f}%",
            f"  {'%s, max over the lr x wd grid' % config['head']:<40}top-1 {probe['max_test_top1']:6.2f}%",
        ]
        for k, scores in results["knn"].items():
            name = f"k-NN, k = {k} (T {args.temperature:g})"
            lines.append(f"  {name:<40}top-1 {scores['top1']:6.2f}%   top-5 {scores['top5']:6.2f}%")
    for outcome in results["protocols"]:
        if outcome["protocol"] != "ours":
            name = ", ".join(filter(None, [outcome["classifier"], describe(outcome["selected"])]))
            top5 = "" if outcome["top5"] is None else f"   top-5 {outcome['top5']:6.2f}%"
            lines.append(f"  {outcome['protocol'] + ': ' + name:<39} top-1 {outcome['top1']:6.2f}%{top5}")
    return "\n".join(lines)


def probe_data(args: argparse.Namespace, config: ProbeConfig, features_dir: Path) -> Dict[str, Any]:
    """Every ``--protocol`` on the features of ``args.data`` (extracted if not cached); writes
    ``results.json`` in ``features_dir``, prints the report and returns the results."""
    splits = cached_splits(args, features_dir)
    train = label_subset(splits["train"], config)  # what every protocol learns from
    results = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "dim": splits["train"].dim,
        "train_count": len(splits["train"]),
        "train_rows": len(train),
        "test_count": len(splits["test"]),
    }
    outcomes = []
    for name in dict.fromkeys(args.protocol):
        if name == "ours":
            probe = linear_probe(splits["train"], splits["test"], config)
            knn = knn_accuracy(train, splits["test"], args.ks, args.temperature, train_chunk=args.chunk_rows)
            results["probe_config"] = dataclasses.asdict(config)
            results[config.head] = dataclasses.asdict(probe)
            results["knn"] = {k: {"top1": top1, "top5": top5} for k, (top1, top5) in knn.items()}
            results["knn_temperature"] = args.temperature
            outcomes += ours(config, probe, knn, args.temperature)
        else:
            protocol_args = (args.n_hyper_param, args.epochs, args.seed, args.chunk_rows)
            outcomes.append(authors_protocol(name, train, splits["test"], *protocol_args))
    results["protocols"] = [dataclasses.asdict(outcome) for outcome in outcomes]
    (features_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(report(args, results))
    print(f"Results: {features_dir / 'results.json'}")
    return results


TABLE_COLUMNS = ("dataset", "protocol", "classifier", "top1", "top5", "selected", "settings")


def write_table(out: Path, rows: List[Dict[str, Any]]) -> str:
    """``out/transfer.csv`` (settings as JSON) and ``out/transfer.md`` (without them); returns the markdown."""
    with open(out / "transfer.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "settings": json.dumps(row["settings"], sort_keys=True)} for row in rows)
    lines = ["| dataset | protocol | classifier | top-1 | top-5 | selected |", "|---|---|---|---:|---:|---|"]
    for row in rows:
        top5 = "-" if row["top5"] is None else f"{row['top5']:.2f}"
        cells = [row["dataset"], row["protocol"], row["classifier"], f"{row['top1']:.2f}", top5, row["selected"]]
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    (out / "transfer.md").write_text(markdown)
    return markdown


def transfer(args: argparse.Namespace, config: ProbeConfig) -> Dict[str, Any]:
    """Every ``--data`` spec through :func:`probe_data` (features in ``--out/features/<spec>``), then one
    table of them all; returns each spec's results."""
    for spec in args.data:  # every spec, before the first extraction
        _, root = parse_data(spec)
        if root is not None and not root.is_dir():
            raise SystemExit(f"--data {spec}: {root} is not a directory (nothing is downloaded)")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for spec in dict.fromkeys(args.data):
        slug = spec.replace(":", "_").replace("/", "_").strip("_")
        results[spec] = probe_data(
            argparse.Namespace(**{**vars(args), "data": spec}), config, args.out / "features" / slug
        )
    rows = [
        {
            "dataset": spec,
            **{column: outcome[column] for column in ("protocol", "classifier", "top1", "top5", "settings")},
            "selected": describe(outcome["selected"]),
        }
        for spec, result in results.items()
        for outcome in result["protocols"]
    ]
    print(write_table(args.out, rows))
    print(f"Table: {args.out / 'transfer.csv'}, {args.out / 'transfer.md'}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """``results.json``'s content for one dataset; with ``transfer``, each dataset's."""
    args = parse_args(argv)
    try:
        config = probe_config(args)
        check_max_fraction(args.max_broken_fraction, BROKEN_OPTION)
        if args.n_hyper_param < 1:
            raise ValueError(f"--n-hyper-param must be >= 1; got {args.n_hyper_param}")
    except ValueError as error:  # before the minutes of feature extraction
        raise SystemExit(f"probe options: {error}")
    if args.command == TRANSFER:
        return transfer(args, config)
    return probe_data(args, config, args.features_dir or default_features_dir(args.checkpoint, args.data))
