"""The authors' extracted-feature linear probe (FORK ``tools/linear_eval.py``), on cached features.

Model: ``logits = W BN(x) + b`` with ``x`` a frozen float16 feature (read as float32), ``W`` of shape
``(C, d)`` trunc-normal(std 0.02) and ``b = 0`` at init; ``BN`` is ``BatchNorm1d(d, affine=False)``
when ``batchnorm`` is set, else the identity. Loss: mean cross-entropy. SGD, momentum 0.9, weight
decay on W and b, learning rate ``lr * B / 256`` (B the batch size used) decayed per step by a
cosine to 0 (``lr_t = lr_0 (1 + cos(pi t / T)) / 2``, T = all steps), no warm-up; each epoch drops
its last incomplete batch (rows are reshuffled every epoch).

Sweep: every (lr, wd) of the grid is trained on the train features minus a seeded held-out part
(``val_fraction`` of the rows), the pair with the best held-out top-1 (first in grid order on a
tie) is retrained on all train features, and that probe gives test top-1/top-5. All grid points
train in one pass over the data: each has its own ``nn.Linear`` and SGD parameter group, they start
from the same initial weights and see the same batches, so each equals its own separate run while
the features are read once per epoch instead of once per grid point.

Memory: rows are read from the memmap a chunk at a time. Each epoch the rows are permuted and cut
into chunks of ``chunk_rows``; a chunk is read in file order (sorted indices) and then batched in
its shuffled order. A uniform shuffle matters: features of an ImageFolder are stored class by
class, so chunks of contiguous rows would give batches that see ~50 of ImageNet's 1000 classes.
"""

import math
from dataclasses import dataclass, field
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from vissl_issl.evaluation.features import Features

AUTHORS_LRS = (0.3, 0.1, 0.03, 0.01, 0.003)
AUTHORS_WDS = (1e-5, 3e-6, 1e-6)
MOMENTUM = 0.9
INIT_STD = 0.02
LR_REFERENCE_BATCH = 256
TOP_K = (1, 5)


@dataclass(frozen=True)
class ProbeConfig:
    lrs: Sequence[float] = AUTHORS_LRS
    wds: Sequence[float] = AUTHORS_WDS
    epochs: int = 100
    batch_size: int = 2048  # the authors' ImageNet probe
    batchnorm: bool = False
    val_fraction: float = 0.1
    chunk_rows: int = 65536  # ImageNet at d = 8192: 1 GiB of float16 per chunk
    seed: int = 0


@dataclass(frozen=True)
class GridPoint:
    lr: float
    wd: float
    val_top1: float
    val_top5: float


@dataclass(frozen=True)
class ProbeResult:
    lr: float
    wd: float
    test_top1: float
    test_top5: float
    grid: List[GridPoint] = field(default_factory=list)


class Probe(nn.Module):
    """One optional parameter-free BN shared by ``heads`` linear layers: ``(B, d) -> (heads, B, C)``.
    The BN has no parameters, so sharing it is the same as one BN per head."""

    def __init__(self, dim: int, num_classes: int, heads: int, batchnorm: bool, generator: torch.Generator):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False) if batchnorm else nn.Identity()
        weight = nn.init.trunc_normal_(torch.empty(num_classes, dim), std=INIT_STD, generator=generator)
        self.heads = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(heads))
        with torch.no_grad():
            for head in self.heads:
                head.weight.copy_(weight)
                head.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normed = self.norm(features)
        return torch.stack([head(normed) for head in self.heads])


def label_ranks(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rank of the true label among ``C`` class scores: ``scores (..., B, C)``, ``labels (B,)`` ->
    ``(..., B)``, the number of classes scoring higher plus those scoring equal with a smaller index
    (the order of a stable descending sort). A prediction is top-k correct iff its rank < k."""
    index = labels.expand(scores.shape[:-1]).unsqueeze(-1)
    true = scores.gather(-1, index)
    classes = torch.arange(scores.shape[-1], device=scores.device)
    tied_before = (scores == true) & (classes < index)
    return (scores > true).sum(-1) + tied_before.sum(-1)


def check_labels(train: Features, test: Features) -> int:
    """Number of classes C = 1 + the largest train label; every label must lie in 0..C-1."""
    num_classes = int(train.labels.max()) + 1
    for name, split in (("train", train), ("test", test)):
        if split.labels.min() < 0 or split.labels.max() >= num_classes:
            raise ValueError(
                f"{name} labels span {split.labels.min()}..{split.labels.max()}; they must lie in "
                f"0..{num_classes - 1} (the classes seen in train)"
            )
    if train.dim != test.dim:
        raise ValueError(f"train features are {train.dim}-d but test features are {test.dim}-d")
    return num_classes


def read_rows(split: Features, rows: np.ndarray, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(features float32 (n, d), labels (n,))`` of ``rows`` of the memmap, read in file order."""
    order = np.sort(rows)
    features = torch.from_numpy(np.ascontiguousarray(split.features[order])).to(device).float()
    return features, torch.from_numpy(np.asarray(split.labels[order])).to(device)


def chunks(rows: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), chunk_rows):
        yield rows[start : start + chunk_rows]


def fit(
    split: Features,
    rows: np.ndarray,
    grid: Sequence[Tuple[float, float]],
    num_classes: int,
    config: ProbeConfig,
    device: torch.device,
) -> Probe:
    """One probe head per ``(lr, wd)`` of ``grid``, trained on ``rows`` of ``split`` (see module doc)."""
    generator = torch.Generator().manual_seed(config.seed)
    shuffler = np.random.default_rng(config.seed)
    probe = Probe(split.dim, num_classes, len(grid), config.batchnorm, generator).to(device)
    batch = min(config.batch_size, len(rows))
    groups = [
        {"params": head.parameters(), "lr": lr * batch / LR_REFERENCE_BATCH, "weight_decay": wd}
        for head, (lr, wd) in zip(probe.heads, grid)
    ]
    optimizer = torch.optim.SGD(groups, momentum=MOMENTUM)
    peak_lrs = [group["lr"] for group in optimizer.param_groups]
    steps_per_epoch = len(rows) // batch
    # A multiple of the batch, so that only the epoch's last chunk can end in a partial batch.
    chunk_rows = max(1, config.chunk_rows // batch) * batch
    total_steps, step = config.epochs * steps_per_epoch, 0
    probe.train()
    for _ in tqdm(range(config.epochs), desc=f"linear probe ({len(grid)} lr x wd)", unit="epoch"):
        epoch_rows = shuffler.permutation(rows)[: steps_per_epoch * batch]
        for chunk in chunks(epoch_rows, chunk_rows):
            features, labels = read_rows(split, chunk, device)
            order = torch.from_numpy(shuffler.permutation(len(chunk))).to(device)
            for indices in order.split(batch):
                scale = 0.5 * (1 + math.cos(math.pi * step / total_steps))
                for group, peak in zip(optimizer.param_groups, peak_lrs):
                    group["lr"] = peak * scale
                logits = probe(features[indices])
                # Sum over heads of each head's mean loss: every head gets its own run's gradient.
                loss = F.cross_entropy(logits.flatten(0, 1), labels[indices].repeat(len(grid))) * len(grid)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    return probe


@torch.no_grad()
def accuracies(
    probe: Probe, split: Features, rows: np.ndarray, chunk_rows: int, device: torch.device
) -> List[Tuple[float, float]]:
    """``(top-1, top-5)`` in percent of each head of ``probe`` on ``rows`` of ``split``."""
    probe.eval()
    correct = torch.zeros(len(probe.heads), len(TOP_K), dtype=torch.long, device=device)
    for chunk in tqdm(list(chunks(rows, chunk_rows)), desc="probe evaluation", unit="chunk", leave=False):
        features, labels = read_rows(split, chunk, device)
        ranks = label_ranks(probe(features), labels)
        correct += torch.stack([(ranks < k).sum(-1) for k in TOP_K], dim=-1)
    return [tuple(100.0 * count / len(rows) for count in head) for head in correct.tolist()]


def validation_rows(count: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded ``(fit rows, held-out rows)`` of ``count`` train rows, ``round(fraction * count)`` held out."""
    held_out = round(fraction * count)
    if not 0 < held_out < count:
        raise ValueError(
            f"val_fraction={fraction} of {count} train features holds out {held_out}; both parts need a row"
        )
    permuted = np.random.default_rng(seed).permutation(count)
    return np.sort(permuted[held_out:]), np.sort(permuted[:held_out])


def linear_probe(train: Features, test: Features, config: ProbeConfig = ProbeConfig()) -> ProbeResult:
    """Select (lr, wd) on a held-out part of ``train``, retrain on all of ``train``, report on ``test``."""
    if config.epochs < 1 or config.batch_size < 1 or config.chunk_rows < 1:
        raise ValueError(f"epochs, batch_size and chunk_rows must be >= 1; got {config}")
    if not config.lrs or not config.wds:
        raise ValueError(f"the sweep needs at least one lr and one wd; got lrs={config.lrs}, wds={config.wds}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = check_labels(train, test)
    grid = [(lr, wd) for lr in config.lrs for wd in config.wds]
    fit_rows, held_out = validation_rows(len(train), config.val_fraction, config.seed)
    probe = fit(train, fit_rows, grid, num_classes, config, device)
    scores = accuracies(probe, train, held_out, config.chunk_rows, device)
    points = [GridPoint(lr, wd, top1, top5) for (lr, wd), (top1, top5) in zip(grid, scores)]
    best = max(points, key=lambda point: point.val_top1)  # max keeps the first of equals
    final = fit(train, np.arange(len(train)), [(best.lr, best.wd)], num_classes, config, device)
    [(top1, top5)] = accuracies(final, test, np.arange(len(test)), config.chunk_rows, device)
    return ProbeResult(best.lr, best.wd, top1, top5, points)
