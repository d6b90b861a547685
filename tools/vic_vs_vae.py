"""VIC against its non-invariant baseline (the paper's "VAE"/VC) on the embedded digits: the lossyless
"augmented MNIST" picture (compression_ssl.md §E.2), reconstructions and latent traversals.

    bash tools/env.sh python tools/vic_vs_vae.py [--epochs 15] [--seed 0] [--out vic_vs_vae_runs]
                                                 [--vic-checkpoint CKPT --vae-checkpoint CKPT]
                                                 [--figure docs/compression/digits_vic_vae.png] [config.X=Y ...]

1. Pretrains ``pretrain/vic/vic_resnet18_digits`` (the code of the augmented image reconstructs the
   canonical image) and ``pretrain/vic/vae_resnet18_digits`` (it reconstructs the augmented image
   itself, distortion weight x2) for ``--epochs`` each, seeded, through the plugin launcher into
   ``<out>/vic`` and ``<out>/vae`` (a finished run of the same epochs and seed is reused, one of
   others refused, a killed one resumes). The online k-NN
   evaluation is switched off (the figure does not use it; it leaves training unchanged). Or takes
   the checkpoints of finished runs (``--vic-checkpoint``, ``--vae-checkpoint``), each with its
   ``train_config.yaml`` beside it.
2. Loads each model as the compression tools do (``vissl_issl.compression.bottleneck.load_model``:
   eval mode, coder tables rebuilt by ``update()``).
3. Augments every test digit once (``--seed``), with the VAE recipe's training transforms: view 0 the
   normalised crop (both models' input), view 1 the same crop in [0, 1]. Each model entropy-codes
   the inputs (``compress``, one record per image), decodes the records (``decompress``) and its
   ``image_decoder`` head draws the images from the decoded codes. Per model: bits per image, real
   (mean ``8 * len(record)``, CompressAI's range coder) and estimated (mean ``-log2 q(z_hat)`` under
   the learned prior); distortion, the mean squared error per pixel of the reconstructions in [0, 1]
   against the canonical digits and against the augmented inputs.
4. Latent traversals: the ``--traversal-dims`` code dimensions of largest empirical entropy (of the
   quantised test codes, in bits), each set to ``--columns`` values evenly spaced between the
   smallest and largest quantised value the test codes take there, in the codes of
   ``--traversal-bases`` test digits; decoded by the ``image_decoder`` head.
5. Draws one figure (rows: canonical test digits, their augmented versions, VIC's and VAE's
   reconstructions labelled with their real and estimated bits per image, then each model's
   traversals) and writes the numbers to a JSON file beside it (same name, ``.json``); prints them.
"""

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import vissl_issl.plugin  # noqa: F401  (registers the plugin's heads, trunks and the digits source)

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms as T
from torch.utils.data import TensorDataset
from vissl.config import AttrDict
from vissl.data.ssl_transforms import get_transform

from vissl_issl.architectures.packed_outputs import split_decoder
from vissl_issl.compression.bottleneck import decode_records, encode_dataset, find_bottleneck, load_model
from vissl_issl.evaluation import probe
from vissl_issl.experiments import runner

MODELS = {"vic": "pretrain/vic/vic_resnet18_digits", "vae": "pretrain/vic/vae_resnet18_digits"}
LABELS = {"vic": "VIC", "vae": "VAE"}
TRAIN_OVERRIDES = ["config.HOOKS.ONLINE_EVAL.ENABLED=False"]
DEFAULT_FIGURE = Path("docs/compression/digits_vic_vae.png")
UPSCALE = 4  # 16 px digits drawn at 64 px, nearest neighbour
GAP = 2  # pixels between tiles
NUMBERS = ("real_bits", "estimated_bits", "mse_vs_canonical", "mse_vs_input")


# ---------------------------------------------------------------- runs and models


def pretrain(model: str, out: Path, epochs: int, seed: int, overrides: List[str]) -> Path:
    """The final checkpoint of ``model``'s digits recipe trained into ``out/model`` (reused if there)."""
    directory = out / model
    if runner.pretrained(directory) is None:
        command = [f"config={MODELS[model]}", f"config.OPTIMIZER.num_epochs={epochs}", *TRAIN_OVERRIDES, *overrides]
        runner.pretrain(command, directory, seed, slurm=False)
    checkpoint = runner.pretrained(directory)
    trained = probe.load_config(str(checkpoint), None, [])[0]
    if (trained.OPTIMIZER.num_epochs, trained.SEED_VALUE) != (epochs, seed):
        raise SystemExit(
            f"{directory} holds a finished run of {trained.OPTIMIZER.num_epochs} epochs, seed {trained.SEED_VALUE}, "
            f"not --epochs {epochs} --seed {seed}: choose another --out"
        )
    return checkpoint


def load(checkpoint: Path) -> Tuple[nn.Module, AttrDict]:
    """``(model, config)`` of a compressor checkpoint, from the ``train_config.yaml`` beside it."""
    config, _ = probe.load_config(str(checkpoint), None, [])
    if "MODEL" not in config:
        raise SystemExit(f"{checkpoint}: no train_config.yaml beside it")
    return load_model(str(checkpoint), config), config


# ---------------------------------------------------------------- data


def test_digits() -> Tuple[torch.Tensor, torch.Tensor, List[Any]]:
    """``(canonical (N, 3, 16, 16) in [0, 1], labels (N,), PIL images)`` of the digits test split."""
    split = probe.DigitsSplit("test", T.ToTensor())
    canonical = torch.stack([split[i][0] for i in range(len(split))])
    images = [split.digits[i][0] for i in range(len(split))]
    return canonical, torch.tensor(np.array(split.digits.labels), dtype=torch.int64), images


def augment(images: Sequence, config: AttrDict, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(inputs normalised, inputs in [0, 1])``: one draw of ``config``'s training transforms per
    image, which must make view 0 the normalised crop and view 1 the same crop un-normalised (the
    VAE recipe's)."""
    transform = get_transform(config.DATA.TRAIN.TRANSFORMS)
    torch.manual_seed(seed)
    views = [
        transform({"data": [image], "label": [0], "data_valid": [True], "data_idx": [i]})
        for i, image in enumerate(images)
    ]
    inputs = torch.stack([sample["data"][0] for sample in views])
    pixels = torch.stack([sample["data"][1] for sample in views])
    if pixels.min() < 0 or pixels.max() > 1:
        raise SystemExit("the VAE recipe's view 1 is not in [0, 1]: its target must be the input un-normalised")
    return inputs, pixels


# ---------------------------------------------------------------- coding and decoding


@torch.no_grad()
def decode_images(model: nn.Module, z_hat: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` codes -> ``(N, C, H, W)`` images in [0, 1]: the heads after the bottleneck on
    the packed ``[z_hat | z | bits | aux]`` (z, bits and aux do not reach the image)."""
    index = find_bottleneck(model)
    decoder = model.heads[index + 1]
    zeros = torch.zeros(len(z_hat), 1)
    output = torch.cat([z_hat, z_hat, zeros, zeros], dim=1)
    for head in model.heads[index + 1 :]:
        output = head(output)
    return torch.sigmoid(split_decoder(output, decoder.image_shape).logits)


def dimension_entropy(z_hat: np.ndarray) -> np.ndarray:
    """Empirical entropy in bits of each dimension's quantised values over the rows."""
    entropies = []
    for column in z_hat.T:
        _, counts = np.unique(column, return_counts=True)
        p = counts / counts.sum()
        entropies.append(float(-(p * np.log2(p)).sum()))
    return np.asarray(entropies)


def evaluate(model: nn.Module, inputs, pixels, canonical, labels, args) -> Dict[str, Any]:
    encoded = encode_dataset(model, TensorDataset(inputs, labels), compress=True)
    z_hat, _ = decode_records(model, encoded.records)
    if not np.array_equal(z_hat, encoded.z_hat):
        raise SystemExit("the decoded codes differ from the eval forward's: the coder is not the model's")
    z_hat = torch.from_numpy(z_hat)
    reconstructions = decode_images(model, z_hat)
    entropy = dimension_entropy(encoded.z_hat)
    dims = [int(d) for d in np.argsort(-entropy, kind="stable")[: args.traversal_dims]]
    traversals = []
    for dim in dims:
        values = torch.linspace(float(z_hat[:, dim].min()), float(z_hat[:, dim].max()), args.columns)
        for base in args.base_indices:
            codes = z_hat[base].repeat(args.columns, 1)
            codes[:, dim] = values
            images = decode_images(model, codes)
            traversals.append({"dim": dim, "base": base, "values": values.tolist(), "images": images})
    return {
        "real_bits": float(np.mean([8 * len(record) for record in encoded.records])),
        "estimated_bits": float(encoded.estimated_bits.mean()),
        "mse_vs_canonical": float(((reconstructions - canonical) ** 2).mean()),
        "mse_vs_input": float(((reconstructions - pixels) ** 2).mean()),
        "used_dims": int((entropy > 0).sum()),
        "code_dims": int(z_hat.shape[1]),
        "traversal_dims": [{"dim": d, "entropy_bits": float(entropy[d])} for d in dims],
        "reconstructions": reconstructions,
        "traversals": traversals,
    }


# ---------------------------------------------------------------- figure


def strip(images: torch.Tensor) -> np.ndarray:
    """``(K, C, H, W)`` in [0, 1] -> one ``(H', W', C)`` row of tiles upscaled by nearest neighbour."""
    tiles = images.clamp(0, 1).repeat_interleave(UPSCALE, 2).repeat_interleave(UPSCALE, 3)
    k, c, h, w = tiles.shape
    row = torch.ones(c, h, k * (w + GAP) - GAP)
    for i, tile in enumerate(tiles):
        row[:, :, i * (w + GAP) : i * (w + GAP) + w] = tile
    return row.permute(1, 2, 0).numpy()


def bits_label(name: str, result: Dict[str, Any]) -> str:
    bits = f"{result['real_bits']:.0f} bits/image coded\n({result['estimated_bits']:.1f} estimated -log2 q)"
    return f"{name} reconstruction\n{bits}"


def draw(path: Path, canonical, pixels, labels, columns: List[int], results: Dict[str, Dict[str, Any]], epochs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("test digits\n(canonical)", canonical[columns]), ("augmented\ninputs", pixels[columns])]
    rows += [(bits_label(LABELS[m], r), r["reconstructions"][columns]) for m, r in results.items()]
    for model, result in results.items():
        for t in result["traversals"]:
            entropy = next(d["entropy_bits"] for d in result["traversal_dims"] if d["dim"] == t["dim"])
            digit = f"test image {t['base']} (a {int(labels[t['base']])})"
            label = f"{LABELS[model]} traversal\ncode dim {t['dim']} ({entropy:.2f} bits)\n{digit}"
            rows.append((label, t["images"]))
    strips = [strip(images) for _, images in rows]
    width = max(s.shape[1] for s in strips)
    figure, axes = plt.subplots(len(rows), 1, figsize=(width / 60 + 2.2, len(rows) * 0.95), squeeze=False)
    for axis, (label, _), image in zip(axes[:, 0], rows, strips):
        axis.imshow(image, interpolation="nearest", vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    runs = ", ".join(f"{LABELS[m]} {e} epochs" for m, e in epochs.items())
    figure.suptitle(
        f"Digits test split: VIC vs VAE (ResNet-18, 128-d factorized entropy bottleneck, {runs})\n"
        "reconstructions from the decoded bitstreams; traversals vary one code dimension of one digit's code",
        fontsize=9,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------- command line


def first_of_each_class(labels: torch.Tensor, count: int) -> List[int]:
    """Indices of the first test image of each class in order, then the next ones, ``count`` in all."""
    seen: Dict[int, int] = {}
    rank = []
    for label in labels.tolist():
        rank.append(seen.get(label, 0))
        seen[label] = rank[-1] + 1
    return sorted(range(len(labels)), key=lambda i: (rank[i], int(labels[i])))[:count]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15, help="pretraining epochs of each model (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="SEED_VALUE of both runs and the test augmentations")
    parser.add_argument("--out", type=Path, default=Path("vic_vs_vae_runs"), help="runs go to OUT/vic and OUT/vae")
    parser.add_argument("--vic-checkpoint", type=Path, help="a finished VIC run's checkpoint (no training)")
    parser.add_argument("--vae-checkpoint", type=Path, help="a finished VAE run's checkpoint (no training)")
    parser.add_argument("--figure", type=Path, default=DEFAULT_FIGURE, help="the PNG; the JSON goes beside it")
    parser.add_argument("--columns", type=int, default=10, help="digits per row and traversal steps")
    parser.add_argument("--traversal-dims", type=int, default=2, help="code dimensions traversed per model")
    parser.add_argument("--traversal-bases", type=int, default=2, help="test digits whose codes are traversed")
    parser.add_argument("overrides", nargs="*", help="VISSL config overrides (config.X=Y) of both trainings")
    args = parser.parse_args(argv)
    if args.columns < 2 or args.traversal_dims < 1 or args.traversal_bases < 1:
        parser.error("--columns needs >= 2, --traversal-dims and --traversal-bases >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    given = {"vic": args.vic_checkpoint, "vae": args.vae_checkpoint}
    out = args.out.resolve()
    checkpoints = {m: given[m] or pretrain(m, out, args.epochs, args.seed, args.overrides) for m in MODELS}
    models = {m: load(checkpoint) for m, checkpoint in checkpoints.items()}

    canonical, labels, images = test_digits()
    inputs, pixels = augment(images, models["vae"][1], args.seed)
    columns = first_of_each_class(labels, args.columns)
    args.base_indices = columns[: args.traversal_bases]
    results = {m: evaluate(model, inputs, pixels, canonical, labels, args) for m, (model, _) in models.items()}

    epochs = {m: int(config.OPTIMIZER.num_epochs) for m, (_, config) in models.items()}
    draw(args.figure, canonical, pixels, labels, columns, results, epochs)
    numbers = {
        "command": " ".join(["python tools/vic_vs_vae.py", *(sys.argv[1:] if argv is None else argv)]),
        "data": f"digits test split, {len(labels)} images (16 px RGB), each augmented once (seed {args.seed})",
        "epochs": epochs,
        "checkpoints": {m: str(Path(c).resolve()) for m, c in checkpoints.items()},
        "bits": "real: mean 8 * len(record) of the entropy_bottleneck's compress after update(); "
        "estimated: mean -log2 q(z_hat) under the learned prior (the figure's rows show both)",
        "distortion": "mean squared error per pixel in [0, 1] of the decoded reconstructions",
        "models": {
            m: {k: v for k, v in r.items() if k not in ("reconstructions", "traversals")} for m, r in results.items()
        },
        "shown_test_indices": columns,
    }
    for model, values in numbers["models"].items():
        if not all(math.isfinite(values[key]) for key in NUMBERS):
            raise SystemExit(f"{model}: non-finite numbers {values}")
    json_path = args.figure.with_suffix(".json")
    json_path.write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"\nDigits test split, {len(labels)} augmented images; bits per image and MSE per pixel:")
    for model, values in numbers["models"].items():
        print(
            f"  {LABELS[model]}: {values['real_bits']:7.1f} bits coded, {values['estimated_bits']:7.2f} estimated; "
            f"MSE vs canonical {values['mse_vs_canonical']:.4f}, vs input {values['mse_vs_input']:.4f}; "
            f"{values['used_dims']}/{values['code_dims']} code dims vary"
        )
    print(f"Figure: {args.figure}\nNumbers: {json_path}")
    return numbers


if __name__ == "__main__":
    main()
