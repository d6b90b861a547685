"""Quick start: ISSL on the embedded digits, on CPU, then the fast probe on frozen features.

    bash tools/env.sh python tools/quick_start.py [--method dissl cissl simclr c_simclr byol c_byol w_mse bince vic]
                                                  [--epochs N] [--out DIR] [config.X=Y ...]

1. Pretrains each method (DISSL by default) with VISSL's engine through the plugin launcher, from
   its digits config (``config=pretrain/<method>/<method>_resnet18_digits``: ResNet-18,
   small-image stem, 16 px, the same budget for every method), into ``<out>/<method>``.
2. Probes every pretrained trunk, and the same trunk at its random initialisation, with
   ``tools/probe.py`` and identical settings: frozen 512-d features of the un-augmented digits
   (cached once), a linear probe with the authors' lr x wd sweep selected on held-out training
   images, and cosine k-NN; prints test top-1 side by side.
3. Plots each method's pretraining loss and, next to it, the k-NN top-1 and top-5 that the online
   evaluation (``HOOKS.ONLINE_EVAL``, every 10 epochs in the digits configs) wrote to its
   ``metrics.json`` during pretraining, to ``<out>/loss_curve.png``.
4. For the compressors (``bince``, ``vic``): entropy-codes both splits into real bitstreams, reads
   them back, and prints bits per image and the probe on the decoded codes next to JPEG/PNG/WebP
   of the same images at matched accuracy (``tools/compress.py report``, into
   ``<out>/<method>/report``).

Re-running resumes (VISSL's AUTO_RESUME), skips pretraining once it has finished and reuses the
cached features.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from vissl_issl.compression import tool as compress
from vissl_issl.evaluation import probe
from vissl_issl.methods import METHODS, quick_start_methods

TOOLS = Path(__file__).resolve().parent
# JPEG/WebP qualities of the classical baselines: a sweep short enough for a CPU quick start.
QUALITIES = ["10", "30", "50", "70", "90"]
# The digits train split has 1437 images: the authors' ImageNet batch of 2048 would give one step
# per epoch, so the probe uses 256 (lr is scaled by batch / 256).
PROBE_ARGS = ["--data", "digits", "--batch-size", "256", "--workers", "0"]
KNN_K = 20


def config_name(method: str) -> str:
    return METHODS[method].digits_config


def pretrain(method: str, out: Path, epochs: int, extra_overrides: List[str]) -> None:
    overrides = [
        f"config={config_name(method)}",
        f"config.CHECKPOINT.DIR={out}",
        f"config.OPTIMIZER.num_epochs={epochs}",
    ]
    subprocess.run(
        [sys.executable, str(TOOLS / "run_distributed_engines.py"), *overrides, *extra_overrides], check=True
    )


def probe_checkpoint(checkpoint: Path, features_dir: Path) -> Dict[str, Any]:
    return probe.main(["--checkpoint", str(checkpoint), "--features-dir", str(features_dir), *PROBE_ARGS])


def probe_random_trunk(method: str, features_dir: Path, extra_overrides: List[str]) -> Dict[str, Any]:
    argv = ["--checkpoint", probe.RANDOM, "--config", config_name(method), "--features-dir", str(features_dir)]
    return probe.main([*argv, *PROBE_ARGS, *extra_overrides])


def json_lines(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(out: Path, methods: List[str]) -> Path:
    """One row per method: the loss per iteration, and the online k-NN accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(methods), 2, figsize=(10, 4 * len(methods)), squeeze=False)
    for method, (loss_axis, knn_axis) in zip(methods, axes):
        records = [r for r in json_lines(out / method / "stdout.json") if "loss" in r]
        loss_axis.plot([r["iter"] for r in records], [r["loss"] for r in records])
        loss_axis.set(xlabel="iteration", ylabel="loss", title=f"{METHODS[method].label} on digits (ResNet-18)")
        evaluations = [r["online_eval"] for r in json_lines(out / method / "metrics.json") if "online_eval" in r]
        for top in ("top1", "top5"):
            epochs, scores = [e["epoch"] for e in evaluations], [e["knn"][top] for e in evaluations]
            knn_axis.plot(epochs, scores, marker="o", label=top.replace("top", "top-"))
        title = "no online evaluation in this run"
        if evaluations:
            title = f"{evaluations[0]['knn']['k']}-NN of the frozen trunk, during pretraining"
            knn_axis.legend()
        knn_axis.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    figure.tight_layout()
    path = out / "loss_curve.png"
    figure.savefig(path, dpi=120)
    return path


def row(name: str, results: Dict[str, Any], baseline: Dict[str, Any]) -> str:
    linear, knn = results["linear"]["test_top1"], results["knn"][KNN_K]["top1"]
    delta = "" if results is baseline else f"   ({linear - baseline['linear']['test_top1']:+.2f})"
    return f"  {name:<32} linear top-1 {linear:6.2f}%   {KNN_K}-NN top-1 {knn:6.2f}%{delta}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", nargs="+", choices=quick_start_methods(), default=["dissl"])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--out", type=Path, default=Path("quick_start_output"))
    parser.add_argument("overrides", nargs="*", help="extra VISSL config overrides (config.X=Y)")
    args = parser.parse_args()
    out = args.out.resolve()

    minutes = {}
    for method in args.method:
        start = time.perf_counter()
        pretrain(method, out / method, args.epochs, args.overrides)
        minutes[method] = (time.perf_counter() - start) / 60

    random = probe_random_trunk(args.method[0], out / "probe_random", args.overrides)
    results = {
        method: probe_checkpoint(out / method / "checkpoint.torch", out / method / "probe") for method in args.method
    }

    print("\nDigits test split (16 px, frozen ResNet-18 features, same probe for every row):")
    print(row("random init trunk", random, random))
    for method in args.method:
        name = f"{METHODS[method].label}, {args.epochs} epochs"
        print(f"{row(name, results[method], random)}   pretraining {minutes[method]:.1f} min")
    print(f"Loss and online k-NN curves: {plot_curves(out, args.method)}")
    for method in (m for m in args.method if METHODS[m].compressor):
        print(f"\n{METHODS[method].label}: real bitstreams of the digits, and JPEG/PNG/WebP of the same images")
        argv = ["report", "--checkpoint", str(out / method / "checkpoint.torch"), *PROBE_ARGS[:2]]
        compress.main([*argv, "--qualities", *QUALITIES, "--out", str(out / method / "report")])


if __name__ == "__main__":
    main()
