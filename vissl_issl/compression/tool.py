"""Entropy-code images with a compressor checkpoint's ``entropy_bottleneck`` head; rate reports.

    python tools/compress.py encode --checkpoint CKPT --data digits --split test --out codes.bin
    python tools/compress.py decode --checkpoint CKPT --codes codes.bin --out decoded.npy
    python tools/compress.py report --checkpoint CKPT --data digits --out report_dir [--qualities 5 30 70 95]
    python tools/compress.py plot --reports beta_a/report beta_b/report --out rate_accuracy.png

The model is the pretraining one: ``build_model`` of the ``train_config.yaml`` VISSL saved beside
the checkpoint (or ``--config NAME`` and ``config.X=Y`` overrides, as in ``tools/probe.py``), with
the checkpoint's trunk and heads. Images are the un-augmented split, transformed as
``tools/probe.py`` does (``--resize``/``--crop``, then the pretraining ``Normalize``).

- ``encode``: trunk -> heads before the bottleneck -> ``compress`` (after ``update()``), one record
  per image, in dataset order, written to the container of ``vissl_issl.compression.bitstream``
  with the code shape, the coder and a fingerprint of its state. Prints images/s and both real
  rates: payload bits/image and file bits/image.
- ``decode``: verifies the container (truncation, corruption), that the checkpoint's coder is the
  one that encoded it and the code shape, then ``decompress`` -> ``z_hat`` (N, k) float32 ``.npy``.
  Any file, crafted ones included (``tests/test_bitstream_fuzz.py``), either decodes or exits with one
  message naming it and the problem, having written nothing.
- ``report``: on the train and test splits, the three rates of spec A.6 (estimated -log2 q under
  the prior, real payload, real file / N), encode/decode images/s, and the linear probe of
  ``tools/probe.py`` (authors' lr x wd sweep; ``--batch-size 256`` by default as in
  ``tools/quick_start.py``, digits having 1437 train images) trained on train, scored on test, on
  the decoded codes ``z_hat``, the unquantised codes ``z`` and the trunk features. Then the
  classical baselines: each codec (JPEG, WebP over ``--qualities``; PNG and WebP lossless once)
  encodes and decodes both splits, the same model computes the unquantised codes ``z`` of the
  DECODED images, the same probe scores them, and the report gives the smallest test bits/image
  whose accuracy reaches the accuracy on our decoded codes (or says it is never reached).
  Writes ``results.json`` and ``report.md`` (the table it prints) in ``--out``.
- ``plot``: real file bits/image (log x) against probe accuracy, one point per report (e.g. a beta
  sweep), with each report's classical codec curves.

``--limit N`` keeps the first N images of each split (quick checks).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import vissl_issl.plugin  # noqa: F401  (registers the plugin's heads, trunks and the digits source)

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms as T
from torch.utils.data import Dataset, Subset
from vissl.config import AttrDict

from vissl_issl.checkpoints import CheckpointError
from vissl_issl.compression.bitstream import ContainerSize, read_container, write_records
from vissl_issl.compression.bottleneck import (
    Encoded,
    code_dim,
    decode_records,
    encode_dataset,
    find_bottleneck,
    load_model,
    per_second,
)
from vissl_issl.compression.classical import CODECS, encode_images, webp_supported
from vissl_issl.compression.compressor import CONTAINER_FORMAT, coder_fingerprint
from vissl_issl.compression.image_arrays import ArrayImages, load_images
from vissl_issl.compression.matched_accuracy import RatePoint, at_edge, by_rate, cheapest_reaching, describe_match
from vissl_issl.evaluation import probe
from vissl_issl.evaluation.features import Features
from vissl_issl.evaluation.linear_probe import AUTHORS_LRS, AUTHORS_WDS, ProbeConfig, linear_probe

SPLITS = probe.SPLITS
DEFAULT_QUALITIES = (1, 5, 10, 20, 30, 50, 70, 90, 95)


# ---------------------------------------------------------------- model and data


@dataclasses.dataclass
class Setup:
    model: nn.Module
    config: AttrDict
    pil_transform: T.Compose  # resize / crop: the images as fed to the pipeline
    tensor_transform: T.Compose  # ToTensor, Normalize


def setup(args: argparse.Namespace) -> Setup:
    config, _ = probe.load_config(args.checkpoint, args.config, args.overrides)
    if "MODEL" not in config:
        raise SystemExit(f"--checkpoint {args.checkpoint}: a compressor needs its train_config.yaml or --config NAME")
    kind, _ = probe.parse_data(args.data) if getattr(args, "data", None) else ("digits", None)
    transform = probe.image_transform(kind, config, args.resize, args.crop)
    try:
        model = load_model(args.checkpoint, config)
    except CheckpointError as error:
        raise SystemExit(f"--checkpoint: {error}")
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    steps = transform.transforms
    return Setup(model, config, T.Compose(steps[:-2]), T.Compose(steps[-2:]))


def limited(dataset: Dataset, limit: Optional[int]) -> Dataset:
    return Subset(dataset, range(min(limit, len(dataset)))) if limit else dataset


def split_datasets(args: argparse.Namespace, transform: T.Compose) -> Dict[str, Dataset]:
    kind, root = probe.parse_data(args.data)
    splits = probe.datasets(kind, root, transform, args.max_broken_fraction)
    return {split: limited(dataset, args.limit) for split, dataset in splits.items()}


def coder_meta(model: nn.Module, args: argparse.Namespace) -> Dict[str, Any]:
    head = model.heads[find_bottleneck(model)]
    return {
        "format": CONTAINER_FORMAT,
        "dtype": "float32",
        "coder": f"{type(head).__module__}.{type(head).__name__}",
        "prior": str(getattr(head, "prior", "")),
        "coder_sha256": coder_fingerprint(head),
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "data": args.data,
        "split": getattr(args, "split", None),
        "limit": args.limit,
    }


def save_container(path: Path, encoded: Encoded, meta: Dict[str, Any]) -> ContainerSize:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_records(path, encoded.records, (encoded.z.shape[1],), meta)


def rate_line(size: ContainerSize, encoded: Encoded) -> str:
    return (
        f"{size.count} images: estimated {encoded.estimated_bits.mean():.1f} bits/image, "
        f"real payload {size.payload_bits_per_record:.1f} bits/image, "
        f"file {size.file_bits_per_record:.1f} bits/image ({size.file_bytes} bytes, "
        f"{size.overhead_bytes} of header and record lengths)"
    )


# ---------------------------------------------------------------- encode / decode


def encode(args: argparse.Namespace) -> Dict[str, Any]:
    state = setup(args)
    dataset = split_datasets(args, T.Compose([state.pil_transform, state.tensor_transform]))[args.split]
    encoded = encode_dataset(state.model, dataset, args.batch_size, args.workers)
    size = save_container(args.out, encoded, coder_meta(state.model, args))
    speed = per_second(size.count, encoded.encode_seconds)
    print(f"Encoded {args.data} {args.split} -> {args.out}: {rate_line(size, encoded)}; {speed:.1f} images/s")
    return {"size": dataclasses.asdict(size), "images_per_second": speed}


def check_coder(meta: Dict[str, Any], model: nn.Module, codes: Path, checkpoint: str) -> None:
    if meta.get("format") != CONTAINER_FORMAT:
        raise SystemExit(f"{codes}: not written by tools/compress.py encode (format {meta.get('format')!r})")
    if meta.get("coder_sha256") != coder_fingerprint(model.heads[find_bottleneck(model)]):
        raise SystemExit(
            f"{codes} was encoded by the coder of {meta.get('checkpoint')}; the entropy_bottleneck of "
            f"--checkpoint {checkpoint} differs and cannot decode it"
        )


def check_shape(shape: Tuple[int, ...], model: nn.Module, codes: Path) -> None:
    if shape != (code_dim(model),):
        raise SystemExit(f"{codes}: the header's code shape is {list(shape)}, the coder's [{code_dim(model)}]")


def decode(args: argparse.Namespace) -> Dict[str, Any]:
    try:
        container = read_container(args.codes)
    except (OSError, ValueError) as error:
        raise SystemExit(str(error))
    state = setup(args)
    check_coder(container.meta, state.model, args.codes, args.checkpoint)
    check_shape(container.shape, state.model, args.codes)
    try:
        z_hat, seconds = decode_records(state.model, container.records, args.batch_size)
    except ValueError as error:  # MalformedRecord, or no records
        raise SystemExit(f"{args.codes}: {error}; nothing was written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, z_hat)
    speed = per_second(len(z_hat), seconds)
    print(f"Decoded {args.codes} -> {args.out}: z_hat {tuple(z_hat.shape)}; {speed:.1f} images/s")
    return {"shape": list(z_hat.shape), "images_per_second": speed}


# ---------------------------------------------------------------- report


def probe_config(args: argparse.Namespace) -> ProbeConfig:
    return ProbeConfig(
        lrs=args.lrs, wds=args.wds, epochs=args.epochs, batch_size=args.probe_batch_size,
        val_fraction=args.val_fraction, seed=args.seed,
    )  # fmt: skip


def probe_accuracy(train: np.ndarray, test: np.ndarray, labels: Dict[str, np.ndarray], config: ProbeConfig) -> Dict:
    fit = Features(np.ascontiguousarray(train, dtype=np.float32), labels["train"])
    score = Features(np.ascontiguousarray(test, dtype=np.float32), labels["test"])
    return dataclasses.asdict(linear_probe(fit, score, config))


def coded_split(state: Setup, dataset: Dataset, path: Path, meta: Dict, batch_size: int) -> Tuple[Encoded, Dict]:
    """Encode a split, write and re-read its container, decode it: the split's rates and speeds."""
    encoded = encode_dataset(state.model, dataset, batch_size)
    save_container(path, encoded, meta)
    container = read_container(path)
    z_hat, seconds = decode_records(state.model, container.records, batch_size)
    count = len(z_hat)
    summary = {
        "count": count,
        "container": str(path),
        **dataclasses.asdict(container.size),
        "estimated_bits_per_image": float(encoded.estimated_bits.mean()),
        "payload_bits_per_image": container.size.payload_bits_per_record,
        "file_bits_per_image": container.size.file_bits_per_record,
        "encode_images_per_second": per_second(count, encoded.encode_seconds),
        "decode_images_per_second": per_second(count, seconds),
        "decoded_vs_eval_z_hat_max_abs": float(np.abs(z_hat - encoded.z_hat).max()),
    }
    encoded.z_hat = z_hat  # the probe reads what the receiver decodes
    return encoded, summary


def codec_settings(args: argparse.Namespace) -> List[Tuple[str, int, bool]]:
    """``(codec, quality, lossless)`` of the classical sweep."""
    settings = []
    for codec in args.codecs:
        if codec == "webp" and not webp_supported():
            print("WebP: not supported by this Pillow build; skipped", file=sys.stderr)
            continue
        if codec == "png":
            settings.append(("png", 0, True))
            continue
        settings += [(codec, quality, False) for quality in args.qualities]
        if codec == "webp":
            settings.append(("webp", 100, True))
    return settings


def classical_point(state: Setup, images, labels, setting, args) -> Dict[str, Any]:
    """One codec setting: bits of both splits, and the probe on the model's codes of the decoded images."""
    codec, quality, lossless = setting
    codes, bits = {}, {}
    for split in SPLITS:
        decoded, split_bits = encode_images(images[split], codec, quality, lossless, grey=not args.rgb_baselines)
        dataset = ArrayImages(decoded, labels[split], state.tensor_transform)
        codes[split] = encode_dataset(state.model, dataset, args.batch_size, compress=False).z
        bits[split] = float(split_bits.mean())
    accuracy = probe_accuracy(codes["train"], codes["test"], labels, probe_config(args))
    name = f"{codec} lossless" if lossless else f"{codec} q={quality}"
    print(f"  {name}: {bits['test']:.1f} bits/image, probe top-1 {accuracy['test_top1']:.2f}%")
    return {"codec": codec, "quality": quality, "lossless": lossless, "label": name,
            "bits_per_image": bits, "probe": accuracy}  # fmt: skip


def rate_points(points: List[Dict[str, Any]], codec: str) -> List[RatePoint]:
    """(test bits/image, test probe top-1) of one codec's sweep."""
    return [
        RatePoint(point["bits_per_image"]["test"], point["probe"]["test_top1"], point["label"])
        for point in points
        if point["codec"] == codec
    ]


def classical_sweep(state: Setup, args: argparse.Namespace, target: float) -> Dict[str, Any]:
    raw = split_datasets(args, state.pil_transform)
    images, labels = {}, {}
    for split in SPLITS:
        images[split], labels[split] = load_images(raw[split])
    points = [classical_point(state, images, labels, setting, args) for setting in codec_settings(args)]
    matches = {}
    for codec in dict.fromkeys(point["codec"] for point in points):
        curve = rate_points(points, codec)
        match = cheapest_reaching(curve, target)
        best = max(curve, key=lambda point: point.accuracy)
        edge = at_edge(match, curve)
        matches[codec] = {
            "match": dataclasses.asdict(match) if match else None,
            "at_edge": edge,
            "best": dataclasses.asdict(best),
            "line": describe_match(codec, match, target, best, edge),
        }
    return {"points": points, "matched": matches, "grey_collapsed": not args.rgb_baselines}


def loss_beta(config: AttrDict) -> Optional[float]:
    """The compressor's ``beta`` from ``config.LOSS.<name>``, when it has one (for plot labels)."""
    try:
        value = config.LOSS[config.LOSS.name].get("beta")
    except (AttributeError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def report_table(results: Dict[str, Any]) -> str:
    test, probes = results["splits"]["test"], results["probe"]
    rows = [
        "| representation | test bits/image | encode img/s | decode img/s | probe top-1 (test) |",
        "|---|---|---|---|---|",
        f"| z_hat, entropy coded | estimated {test['estimated_bits_per_image']:.1f} / payload "
        f"{test['payload_bits_per_image']:.1f} / file {test['file_bits_per_image']:.1f} | "
        f"{test['encode_images_per_second']:.1f} | {test['decode_images_per_second']:.1f} | "
        f"{probes['z_hat']['test_top1']:.2f}% |",
        f"| z, unquantised codes | - | - | - | {probes['z']['test_top1']:.2f}% |",
        f"| trunk features | - | - | - | {probes['trunk']['test_top1']:.2f}% |",
    ]
    target = probes["z_hat"]["test_top1"]
    for codec, entry in results.get("classical", {}).get("matched", {}).items():
        match, best = entry["match"], entry["best"]
        if match:
            ratio = match["bits"] / test["file_bits_per_image"]
            edge = ", the sweep's cheapest setting: may be lower" if entry.get("at_edge") else ""
            rows.append(f"| {codec} at matched accuracy ({match['label']}{edge}) | {match['bits']:.1f} "
                        f"({ratio:.1f}x our file rate) | - | - | {match['accuracy']:.2f}% |")  # fmt: skip
        else:
            rows.append(f"| {codec}: never reaches {target:.2f}% (best {best['label']}) | {best['bits']:.1f} | - | - | "
                        f"{best['accuracy']:.2f}% |")  # fmt: skip
    return "\n".join(rows)


def report(args: argparse.Namespace) -> Dict[str, Any]:
    state = setup(args)
    args.out.mkdir(parents=True, exist_ok=True)
    datasets = split_datasets(args, T.Compose([state.pil_transform, state.tensor_transform]))
    encoded, splits = {}, {}
    for split in SPLITS:
        meta = dict(coder_meta(state.model, args), split=split)
        path = args.out / f"{split}_codes.bin"
        encoded[split], splits[split] = coded_split(state, datasets[split], path, meta, args.batch_size)
        print(f"{split}: {rate_line(read_container(path).size, encoded[split])}")
    labels = {split: encoded[split].labels for split in SPLITS}
    config = probe_config(args)
    probes = {
        name: probe_accuracy(getattr(encoded["train"], field), getattr(encoded["test"], field), labels, config)
        for name, field in (("z_hat", "z_hat"), ("z", "z"), ("trunk", "features"))
    }
    results = {
        "checkpoint": str(Path(args.checkpoint).resolve()), "data": args.data, "limit": args.limit,
        "label": args.label or Path(args.checkpoint).resolve().parent.name, "beta": loss_beta(state.config),
        "code_dim": int(encoded["test"].z.shape[1]), "splits": splits, "probe": probes,
        "probe_config": dataclasses.asdict(config),
    }  # fmt: skip
    if args.codecs:
        print("Classical baselines (codes of the decoded images):")
        results["classical"] = classical_sweep(state, args, probes["z_hat"]["test_top1"])
    table = report_table(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.md").write_text(table + "\n")
    print(table)
    print(f"Results: {args.out / 'results.json'}")
    return results


# ---------------------------------------------------------------- plot


def plot(args: argparse.Namespace) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [json.loads((Path(directory) / "results.json").read_text()) for directory in args.reports]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = {"jpeg": "tab:red", "png": "tab:green", "webp": "tab:purple"}
    labelled = set()
    for results in reports:
        for codec, colour in colours.items():
            points = by_rate(rate_points(results.get("classical", {}).get("points", []), codec))
            if points:
                axis.plot([p.bits for p in points], [p.accuracy for p in points], "o-", color=colour, alpha=0.6,
                          markersize=3, label=None if codec in labelled else codec.upper())  # fmt: skip
                labelled.add(codec)
    ours = sorted(reports, key=lambda results: results["splits"]["test"]["file_bits_per_image"])
    rates = [results["splits"]["test"]["file_bits_per_image"] for results in ours]
    accuracies = [results["probe"]["z_hat"]["test_top1"] for results in ours]
    axis.plot(rates, accuracies, "s-", color="black", label="ours (z_hat, file bits/image)")
    for results, rate, accuracy in zip(ours, rates, accuracies):
        name = results["label"] if results.get("beta") is None else f"beta={results['beta']:g}"
        axis.annotate(name, (rate, accuracy), textcoords="offset points", xytext=(4, -10), fontsize=7)
    axis.set(xscale="log", xlabel="real bits per image (test, whole file / N)", ylabel="linear probe top-1 (%)",
             title=f"Rate vs probe accuracy on {reports[0]['data']}")  # fmt: skip
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"Plot: {args.out}")
    return args.out


# ---------------------------------------------------------------- command line


def model_options(parser: argparse.ArgumentParser, data: bool = True) -> None:
    parser.add_argument("--checkpoint", required=True, help="a VISSL checkpoint (.torch) of a compressor")
    parser.add_argument("--config", help="hydra config name, instead of the checkpoint's train_config.yaml")
    parser.add_argument("overrides", nargs="*", help="config.X=Y overrides of --config")
    if data:
        parser.add_argument("--data", required=True, help="digits | folder:ROOT | cifar10:ROOT | ... (tools/probe.py)")
        parser.add_argument("--limit", type=int, help="keep the first N images of each split")
        parser.add_argument(
            probe.BROKEN_OPTION,
            type=float,
            default=probe.DEFAULT_MAX_FRACTION,
            help="folder: the share of a split's images that may be unreadable (grey placeholders); 0 refuses any",
        )
    parser.add_argument("--resize", type=int, help="Resize before CenterCrop (folder: 256)")
    parser.add_argument("--crop", type=int, help="CenterCrop size (folder: 224)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per trunk / coder batch")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")


def probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--probe-batch-size", type=int, default=256, help="probe batch; lr is scaled by batch / 256")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(AUTHORS_LRS))
    parser.add_argument("--wds", type=float, nargs="+", default=list(AUTHORS_WDS))
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)


def command_parsers() -> Dict[str, argparse.ArgumentParser]:
    """One parser per subcommand. (argparse's subparsers cannot parse intermixed arguments, which
    ``config.X=Y`` overrides between options need.)"""

    def parser(command: str, description: str) -> argparse.ArgumentParser:
        return argparse.ArgumentParser(prog=f"compress.py {command}", description=description)

    encoder = parser("encode", "images -> container of entropy-coded records")
    model_options(encoder)
    encoder.add_argument("--split", choices=SPLITS, default="test")
    encoder.add_argument("--out", type=Path, required=True)
    decoder = parser("decode", "container -> z_hat .npy")
    model_options(decoder, data=False)
    decoder.add_argument("--codes", type=Path, required=True)
    decoder.add_argument("--out", type=Path, required=True)
    reporter = parser("report", "rates, speeds, probe accuracy and classical baselines")
    model_options(reporter)
    probe_options(reporter)
    reporter.add_argument("--codecs", nargs="*", choices=CODECS, default=list(CODECS), help="none: skip baselines")
    reporter.add_argument("--qualities", type=int, nargs="+", default=list(DEFAULT_QUALITIES), help="JPEG/WebP")
    reporter.add_argument("--rgb-baselines", action="store_true", help="code grey images as RGB (default: as grey)")
    reporter.add_argument("--label", help="name of this report in plots (default: the checkpoint's folder)")
    reporter.add_argument("--out", type=Path, required=True, help="report directory")
    plotter = parser("plot", "rate-accuracy plot of several reports")
    plotter.add_argument("--reports", nargs="+", required=True, help="report directories")
    plotter.add_argument("--out", type=Path, required=True)
    return {"encode": encoder, "decode": decoder, "report": reporter, "plot": plotter}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = command_parsers()
    if not argv or argv[0] not in parsers:
        top = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        top.add_argument("command", choices=list(parsers), help="then --help for its options")
        top.parse_args(argv[:1])  # prints the help or the error, and exits
    args = parsers[argv[0]].parse_intermixed_args(argv[1:])  # config.X=Y may sit between options
    args.command = argv[0]
    if args.command == "decode":
        args.limit = None
    return args


def main(argv: Optional[Sequence[str]] = None) -> Any:
    args = parse_args(argv)
    return {"encode": encode, "decode": decode, "report": report, "plot": plot}[args.command](args)
