"""Quick start: ISSL on the embedded digits, on CPU, then a linear probe on frozen features.

    bash tools/env.sh python tools/quick_start.py [--method dissl cissl simclr] [--epochs N]
                                                  [--out DIR] [config.X=Y ...]

1. Pretrains each method (DISSL by default) with VISSL's engine through the plugin launcher, from
   its digits config (``config=pretrain/<method>/<method>_resnet18_digits``: ResNet-18,
   small-image stem, 16 px, the same budget for every method), into ``<out>/<method>``.
2. Extracts frozen trunk features (512-d, no augmentation) of the digits train and test splits,
   for each pretrained trunk and for the same trunk at its random initialisation.
3. Fits the same probe (standardised features, multinomial logistic regression) on the train
   features of each and prints test top-1 side by side.
4. Plots the pretraining losses to ``<out>/loss_curve.png``.

Re-running resumes (VISSL's AUTO_RESUME) and skips pretraining once it has finished.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

import vissl_issl  # noqa: F401  (registers the trunk, heads and digits source)
from vissl.config import AttrDict
from vissl.models import build_model
from vissl_issl.data.digits import DigitsDataset
from vissl_issl.launcher import compose

TOOLS = Path(__file__).resolve().parent
METHODS: Dict[str, str] = {"dissl": "DISSL", "cissl": "CISSL", "simclr": "SimCLR (VISSL's loss)"}


def pretrain(method: str, out: Path, epochs: int, extra_overrides: List[str]) -> AttrDict:
    config_name = f"pretrain/{method}/{method}_resnet18_digits"
    overrides = [f"config={config_name}", f"config.CHECKPOINT.DIR={out}", f"config.OPTIMIZER.num_epochs={epochs}"]
    overrides += extra_overrides
    subprocess.run([sys.executable, str(TOOLS / "run_distributed_engines.py"), *overrides], check=True)
    return compose(overrides)[1]


def final_trunk_weights(out: Path) -> dict:
    checkpoint = torch.load(out / "checkpoint.torch", map_location="cpu", weights_only=False)
    return checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]


@torch.no_grad()
def features(trunk: torch.nn.Module, split: str, image_size: int) -> tuple:
    """Trunk features of a whole digits split, normalised as in pretraining."""
    dataset = DigitsDataset(AttrDict({"DATA": {split: {"DIGITS_IMAGE_SIZE": image_size}}}), "", split, "", "")
    images = np.stack([np.asarray(dataset[i][0], dtype=np.float32) for i in range(len(dataset))])
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0
    inputs = (inputs - 0.5) / 0.5
    trunk.eval()
    feats = torch.cat([trunk(batch)[0] for batch in inputs.split(256)])
    return feats.numpy(), np.asarray(dataset.get_labels())


def probe_accuracy(trunk: torch.nn.Module, image_size: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, train_y = features(trunk, "TRAIN", image_size)
    test_x, test_y = features(trunk, "TEST", image_size)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    probe.fit(train_x, train_y)
    return 100.0 * probe.score(test_x, test_y)


def plot_losses(out: Path, methods: List[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
    for method, axis in zip(methods, axes[0]):
        lines = (out / method / "stdout.json").read_text().splitlines()
        records = [r for r in map(json.loads, filter(str.strip, lines)) if "loss" in r]
        axis.plot([r["iter"] for r in records], [r["loss"] for r in records])
        axis.set(xlabel="iteration", ylabel="loss", title=f"{METHODS[method]} on digits (ResNet-18)")
    figure.tight_layout()
    path = out / "loss_curve.png"
    figure.savefig(path, dpi=120)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", nargs="+", choices=sorted(METHODS), default=["dissl"])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--out", type=Path, default=Path("quick_start_output"))
    parser.add_argument("overrides", nargs="*", help="extra VISSL config overrides (config.X=Y)")
    args = parser.parse_args()
    out = args.out.resolve()

    configs, minutes = {}, {}
    for method in args.method:
        start = time.perf_counter()
        configs[method] = pretrain(method, out / method, args.epochs, args.overrides)
        minutes[method] = (time.perf_counter() - start) / 60

    config = configs[args.method[0]]
    image_size = config.DATA.TRAIN.TRANSFORMS[0]["size_crops"][0]
    torch.manual_seed(config.SEED_VALUE)
    trunk = build_model(config.MODEL, config.OPTIMIZER).trunk
    random_top1 = probe_accuracy(trunk, image_size)

    print(f"\nLinear probe, digits test split ({image_size} px, ResNet-18 frozen features):")
    print(f"  {'random init trunk':<32} top-1 {random_top1:6.2f}%")
    for method in args.method:
        trunk.load_state_dict(final_trunk_weights(out / method))
        top1 = probe_accuracy(trunk, image_size)
        name = f"{METHODS[method]} ({args.epochs} epochs)"
        print(f"  {name:<32} top-1 {top1:6.2f}%   ({top1 - random_top1:+.2f})   pretraining {minutes[method]:.1f} min")
    print(f"Loss curves: {plot_losses(out, args.method)}")


if __name__ == "__main__":
    main()
