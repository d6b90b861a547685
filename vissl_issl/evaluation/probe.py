"""Probe (linear or MLP) and k-NN of a plugin checkpoint's frozen trunk, on cached features.

    python tools/probe.py --checkpoint <checkpoint.torch | random> --data <spec> [--features-dir DIR]
                          [--config NAME] [config.X=Y ...] [--authors-protocol] [--head mlp]
                          [--label-fraction F] [--epochs N] [--batchnorm] ...

1. Builds the trunk as pretraining did: ``vissl.models.build_model(config.MODEL, config.OPTIMIZER).trunk``
   with ``config`` read from the ``train_config.yaml`` VISSL saved next to the checkpoint, or composed
   from ``--config NAME`` and ``config.X=Y`` overrides; loads the checkpoint's
   ``classy_state_dict.base_model.model.trunk``. ``--checkpoint random`` keeps the trunk at its
   random initialisation (seeded with the config's ``SEED_VALUE``) as a baseline; without
   ``--config`` it is the digits recipe's trunk (``pretrain/dissl/dissl_resnet18_digits``).
2. Extracts the trunk's features of the train and test splits once (float16 memmaps in the
   features dir, reused while the checkpoint, config, data and transform are unchanged).
3. Trains the authors' probe (:mod:`~vissl_issl.evaluation.linear_probe`: SGD, cosine, every
   point of an lr x wd grid trained on 90% of train to select one and on all of train to score
   each on test) and runs cosine k-NN; prints top-1/top-5 on the test split and writes
   ``results.json`` in the features dir: the data, the probe config, the probe's result (under the
   head's name, ``linear`` or ``mlp``: the selected point's test accuracy, the max over the grid,
   and every point's held-out and test accuracy) and k-NN's.

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
  (train [test]) at their native size unless ``--resize/--crop`` are given.

Images are normalised with the ``Normalize`` of the pretraining config's TRAIN transforms, i.e.
what the trunk was trained on; a config without one gets the spec's usual statistics (digits
0.5/0.5, otherwise ImageNet's).
"""

import argparse
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
from torch.utils.data import Dataset
from vissl.config import AttrDict
from vissl.models import build_model

from vissl_issl.checkpoints import CheckpointError, check_fits, describe_run, read_vissl_model
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
from vissl_issl.evaluation.subsets import stratified_subset

RANDOM = "random"
RANDOM_DEFAULT_CONFIG = "pretrain/dissl/dissl_resnet18_digits"
SPLITS = ("train", "test")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
DIGITS_MEAN, DIGITS_STD = [0.5] * 3, [0.5] * 3
TORCHVISION_SETS = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}
DATA_KINDS = ("digits", "folder", "cifar10", "cifar100", "stl10")
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
        if kind == "stl10":
            return {split: torchvision.datasets.STL10(str(root), split, transform=transform) for split in SPLITS}
        builder = TORCHVISION_SETS[kind]
        return {split: builder(str(root), split == "train", transform) for split in SPLITS}
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        raise SystemExit(f"--data {kind}:{root}: torchvision cannot read {kind} there ({error}); nothing is downloaded")


def pretraining_normalization(config: AttrDict, kind: str) -> Tuple[List[float], List[float]]:
    """Mean and std of the config's TRAIN ``Normalize`` transform, else the spec's usual ones."""
    for transform in config.DATA.TRAIN.TRANSFORMS:
        if transform["name"] == "Normalize":
            return list(transform["mean"]), list(transform["std"])
    return (DIGITS_MEAN, DIGITS_STD) if kind == "digits" else (IMAGENET_MEAN, IMAGENET_STD)


def image_transform(kind: str, config: AttrDict, resize: Optional[int], crop: Optional[int]) -> T.Compose:
    if kind == "folder":
        resize, crop = resize or 256, crop or 224
    steps = [T.Resize(resize)] if resize else []
    steps += [T.CenterCrop(crop)] if crop else []
    mean, std = pretraining_normalization(config, kind)
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def load_config(checkpoint: str, name: Optional[str], overrides: List[str]) -> Tuple[AttrDict, Producer]:
    """The pretraining config and a description of where it came from."""
    if name is None and checkpoint == RANDOM:
        name = RANDOM_DEFAULT_CONFIG
    if name is not None:
        return compose([f"config={name}", *overrides])[1], {"name": name, "overrides": overrides}
    if overrides:
        raise SystemExit(f"config overrides {overrides} need --config (a checkpoint's train_config.yaml is used as is)")
    path = Path(checkpoint).resolve().parent / "train_config.yaml"
    if not path.is_file():
        raise SystemExit(f"--checkpoint {checkpoint}: no {path} next to it; pass --config <hydra config name>")
    config = AttrDict(OmegaConf.to_container(OmegaConf.load(path)))  # OmegaConf reads 1e-5 as a float
    return config, {"file": str(path), "mtime_ns": path.stat().st_mtime_ns}


def checkpoint_identity(checkpoint: str, config: AttrDict) -> Producer:
    if checkpoint == RANDOM:
        return {"checkpoint": RANDOM, "seed": config.SEED_VALUE}
    path = Path(checkpoint).resolve()  # checkpoint.torch is a symlink to the latest phase
    if not path.is_file():
        raise SystemExit(f"--checkpoint {checkpoint}: no such file")
    stat = path.stat()
    return {"checkpoint": str(path), "mtime_ns": stat.st_mtime_ns, "bytes": stat.st_size}


def build_trunk(checkpoint: str, config: AttrDict) -> nn.Module:
    torch.manual_seed(config.SEED_VALUE)
    trunk = build_model(config.MODEL, config.OPTIMIZER).trunk
    if checkpoint != RANDOM:
        try:
            state = read_vissl_model(checkpoint).trunk
            into = f"the trunk of the config, {describe_run(config)}"
            check_fits(trunk.state_dict(), state, "trunk", checkpoint, into)
        except CheckpointError as error:
            raise SystemExit(f"--checkpoint: {error}")
        trunk.load_state_dict(state)
    return trunk


def default_features_dir(checkpoint: str, data: str) -> Path:
    slug = data.replace(":", "_").replace("/", "_").strip("_")
    if checkpoint == RANDOM:
        return Path(f"probe_random_{slug}")
    path = Path(checkpoint)
    return path.parent / f"probe_{path.stem}_{slug}"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a VISSL checkpoint (.torch) or 'random'")
    parser.add_argument(
        "--data", required=True, help="digits | folder:ROOT | cifar10:ROOT | cifar100:ROOT | stl10:ROOT"
    )
    parser.add_argument("--features-dir", type=Path, help="default: probe_<checkpoint>_<data> beside the checkpoint")
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
    parser.add_argument("--epochs", type=int, help="default 100")
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
    return parser.parse_intermixed_args(argv)  # config.X=Y may sit between options


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


def report(args: argparse.Namespace, results: Dict[str, Any]) -> str:
    config = results["probe_config"]
    probe = results[config["head"]]
    learnt_from = f"{results['train_count']} train"
    if config["label_fraction"] < 1:
        learnt_from = f"{probe['train_rows']} of {learnt_from} ({config['label_fraction']:g} of the labels)"
    selected = "%s, lr %g wd %g (%d epochs)" % (config["head"], probe["lr"], probe["wd"], config["epochs"])
    lines = [
        f"Probe of {args.checkpoint} on {args.data} ({results['dim']}-d features, "
        f"{learnt_from} / {results['test_count']} test):",
        f"  {selected:<40}top-1 {probe['test_top1']:6.2f}%   top-5 {probe['test_top5']:6.2f}%",
        f"  {'%s, max over the lr x wd grid' % config['head']:<40}top-1 {probe['max_test_top1']:6.2f}%",
    ]
    for k, scores in results["knn"].items():
        name = f"k-NN, k = {k} (T {args.temperature:g})"
        lines.append(f"  {name:<40}top-1 {scores['top1']:6.2f}%   top-5 {scores['top5']:6.2f}%")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    try:
        config = probe_config(args)
        check_max_fraction(args.max_broken_fraction, BROKEN_OPTION)
    except ValueError as error:  # before the minutes of feature extraction
        raise SystemExit(f"probe options: {error}")
    features_dir = args.features_dir or default_features_dir(args.checkpoint, args.data)
    splits = cached_splits(args, features_dir)
    probe = linear_probe(splits["train"], splits["test"], config)
    knn_train = label_subset(splits["train"], config)
    knn = knn_accuracy(knn_train, splits["test"], args.ks, args.temperature, train_chunk=args.chunk_rows)
    results = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "dim": splits["train"].dim,
        "train_count": len(splits["train"]),
        "test_count": len(splits["test"]),
        "probe_config": dataclasses.asdict(config),
        config.head: dataclasses.asdict(probe),
        "knn": {k: {"top1": top1, "top5": top5} for k, (top1, top5) in knn.items()},
        "knn_temperature": args.temperature,
    }
    (features_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(report(args, results))
    print(f"Results: {features_dir / 'results.json'}")
    return results
