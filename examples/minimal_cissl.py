"""CISSL in a plain PyTorch training loop: no VISSL, one process, CPU or one GPU.

The counterpart of the authors' ``notebooks/minimal_cissl.ipynb`` (Dubois et al. 2022, "Improving
Self-Supervised Learning by Characterizing Idealized Representations"), built from this package's
plain-PyTorch pieces: the loss (``vissl_issl.losses.CISSLLoss``), the trunk and the linear probe.
The defaults follow the digits recipe ``configs/config/pretrain/cissl/cissl_resnet18_digits.yaml``:
ResNet-18 with the small-image stem, 2 views of 16 px digits, Adam 2e-3, batch 128.

    python examples/minimal_cissl.py                                 # embedded digits, 20 epochs, CPU
    python examples/minimal_cissl.py --epochs 0                      # the random-init trunk's probe
    python examples/minimal_cissl.py --data ROOT --image-size 96     # ImageFolders ROOT/train, ROOT/val
"""

import argparse
import math
import time
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder

from vissl_issl.architectures.resnet import ResNetArch, build_resnet
from vissl_issl.data.digits import load_split
from vissl_issl.evaluation.features import Features
from vissl_issl.evaluation.linear_probe import ProbeConfig, linear_probe
from vissl_issl.losses import CISSLLoss

EMBEDDING_DIM = 128  # the size of both heads' outputs, compared by cosine similarity
LR, WEIGHT_DECAY = 2e-3, 1e-6
WARMUP_FRACTION, START_FACTOR = 0.05, 0.1  # the recipe: warm-up from lr / 10 over 5% of the steps


class Digits(Dataset):
    """scikit-learn's 8x8 digits (fixed stratified split) as RGB PIL images upsampled bilinearly to
    ``size`` px, like the recipes' ``DigitsDataset``; items are ``(transform(image), label)``."""

    def __init__(self, split: str, transform: Callable, size: int):
        self.images, self.labels = load_split(split)
        self.transform, self.size = transform, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        image = Image.fromarray(self.images[index]).resize((self.size, self.size), Image.Resampling.BILINEAR)
        return self.transform(image.convert("RGB")), int(self.labels[index])


def datasets(data: Optional[str], size: int, limit: Optional[int]) -> Tuple[Dataset, Dataset, Dataset]:
    """(train set of view pairs, un-augmented train set, un-augmented test set)."""
    if data is None:
        normalize = T.Normalize([0.5] * 3, [0.5] * 3)
        # Crops only: wider crops, colour jitter or blur hurt at 16 px (docs/quick_start.md).
        augment: List[Callable] = [T.RandomResizedCrop(size, scale=(0.6, 1))]
        plain: List[Callable] = []
    else:
        normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        # Natural images: the authors' STL-10 notebook augmentations (SimCLR's).
        jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
        augment = [T.RandomResizedCrop(size, scale=(0.2, 1)), T.RandomHorizontalFlip(), jitter]
        augment.append(T.RandomGrayscale(0.1))
        plain = [T.Resize(size), T.CenterCrop(size)]
    view = T.Compose([*augment, T.ToTensor(), normalize])
    un_augmented = T.Compose([*plain, T.ToTensor(), normalize])

    def split(train: bool, transform: Callable) -> Dataset:
        if data is None:
            return Digits("TRAIN" if train else "TEST", transform, size)
        return ImageFolder(f"{data}/{'train' if train else 'val'}", transform)

    # Two independent views of each image; labels come along but training never reads them.
    train_views = split(True, lambda image: (view(image), view(image)))
    train, test = split(True, un_augmented), split(False, un_augmented)
    if limit is not None:  # a quick smoke run: N images spread evenly, so every class of a sorted ImageFolder
        keep = [i * len(train) // limit for i in range(min(limit, len(train)))]
        train_views, train = Subset(train_views, keep), Subset(train, keep)
    return train_views, train, test


def lr_factor(step: int, total_steps: int) -> float:
    """The recipe's learning rate over the peak: a linear warm-up, then a cosine over all of training."""
    t = step / max(1, total_steps)
    if t < WARMUP_FRACTION:
        return START_FACTOR + (1 - START_FACTOR) * t / WARMUP_FRACTION
    return 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def features(trunk: nn.Module, dataset: Dataset, device: torch.device) -> Features:
    """Frozen float16 trunk features (eval-mode BN) and labels, as the probe reads them."""
    trunk.eval()
    batches = [(trunk(x.to(device)).cpu(), y) for x, y in DataLoader(dataset, batch_size=256)]
    return Features(torch.cat([f for f, _ in batches]).half().numpy(), torch.cat([y for _, y in batches]).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description="CISSL in a plain PyTorch loop, then a linear probe.")
    parser.add_argument("--epochs", type=int, default=20, help="0: probe the random-init trunk")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data", help="root with train/ and val/ ImageFolders (default: the embedded digits)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="train and probe on N of the training images only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(args.seed)  # weights, views and shuffling all draw from torch's generator
    device = torch.device(args.device)

    train_views, train, test = datasets(args.data, args.image_size, args.limit)
    # drop_last, as the recipe: a last batch of one image would break BatchNorm.
    loader = DataLoader(train_views, batch_size=args.batch_size, shuffle=True, drop_last=True)

    trunk = build_resnet(ResNetArch(18, small_image_stem=True))  # (N, 3, H, W) -> (N, 512)
    # The recipe's heads (the ISSL TinyImageNet ones, spec §3.1): an unconstrained MLP teacher and a
    # student with the linear probe's architecture (affine once BN is frozen), the point of CISSL.
    teacher = nn.Sequential(
        nn.Linear(512, 1024, bias=False), nn.BatchNorm1d(1024), nn.ReLU(),
        nn.Linear(1024, EMBEDDING_DIM, bias=False), nn.BatchNorm1d(EMBEDDING_DIM),
    )  # fmt: skip
    student = nn.Sequential(nn.Linear(512, EMBEDDING_DIM, bias=False), nn.BatchNorm1d(EMBEDDING_DIM))
    model = nn.ModuleList([trunk, teacher, student]).to(device)
    # ISSL's TinyImageNet temperature. Each student row is scored against all 2B teacher rows (both
    # views of every image, its own view included) and learns to put 1/2 on each view of its image.
    loss_fn = CISSLLoss(temperature=0.07)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    total_steps = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps))

    start = time.time()
    model.train()
    for epoch in range(args.epochs):
        losses = []
        for (view0, view1), _ in loader:
            # View-major rows (all first views, then all second views): the layout the loss expects.
            # One trunk pass over both views, so BatchNorm sees the 2B images together.
            z = trunk(torch.cat([view0, view1]).to(device))
            loss = loss_fn([teacher(z), student(z)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        mean_loss = sum(losses) / len(losses)
        print(f"epoch {epoch + 1}/{args.epochs} loss {mean_loss:.4f} ({time.time() - start:.0f} s)", flush=True)

    # The authors' probe (lr x wd sweep on a held-out tenth of train, SGD, cosine) on the frozen
    # trunk's features; batch 256 since the digits' 1437 images would make 2048 one step per epoch.
    train_features, test_features = features(trunk, train, device), features(trunk, test, device)
    result = linear_probe(train_features, test_features, ProbeConfig(batch_size=256))
    print(f"linear probe test top-1: {result.test_top1:.2f}% (lr {result.lr:g}, wd {result.wd:g})")


if __name__ == "__main__":
    main()
