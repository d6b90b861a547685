"""The authors' probes on cached frozen features: the FORK's ImageNet linear probe
(``tools/linear_eval.py``; this module's defaults) and the ISSL TinyImageNet probes (``torchlogistic``
and ``torchmlp``; :meth:`ProbeConfig.authors_tinyimagenet`); :mod:`~vissl_issl.evaluation.protocols`
trains its torch heads (the FORK's random search, W-MSE's Adam head) with the same code.

Heads on a frozen float16 feature ``x`` (read as float32) of dimension d, for C classes:

- ``linear``: ``logits = W x + b`` with ``W`` of shape ``(C, d)``;
- ``mlp`` (the ISSL MLP probe of Fig. 7c): ``h1 = ReLU(BN(W1 x))``, ``h2 = ReLU(BN(W2 h1))``,
  ``logits = W3 h2 + b3`` with ``W1 (H, d)``, ``W2 (H, H)``, ``W3 (C, H)``, H = ``mlp_hidden`` and
  affine ``BatchNorm1d``; the layers before a BN have no bias (the BN would cancel it).

At init every weight is trunc-normal(std 0.02) and every bias 0 (the authors' ``weights_init``).
With ``batchnorm`` a head reads ``BatchNorm1d(d, affine=False)(x)`` instead of ``x``. Loss: mean
cross-entropy over the batch. SGD, momentum 0.9 (``optimizer="adam"``: Adam with torch's defaults),
weight decay on every parameter, learning rate ``lr * B / 256`` (B the batch size used; ``lr`` as is
without ``scale_lr``) decayed per step by a cosine to 0 (``lr_t = lr_0 (1 + cos(pi t / T)) / 2``,
T = all steps), no warm-up; ``schedule="exponential"`` instead decays it per epoch,
``lr_e = lr_0 10^(-4 e / E)`` for epoch e of E (W-MSE: 1e-2 to 1e-6). Rows are reshuffled
every epoch; with ``drop_last`` the epoch's last incomplete batch is dropped (the FORK), otherwise it
is a step of its own (the ISSL probe's DataLoader) unless it holds a single row, which train-mode
BatchNorm cannot normalise.

Sweep: every (lr, wd) of the grid (``lrs`` x ``wds``, or the points given to :func:`sweep`) is
trained twice, in two passes over the data:

1. on the train rows minus a seeded held-out part (``val_fraction`` of them, rounded, but at least
   one row and at least one row left to fit); the point with the best held-out top-1 (first in grid
   order on a tie) is the selected one;
2. on all the train rows; every point is then scored on the test split.

``ProbeResult.test_top1`` is the selected point's test accuracy, the honest number (no test label
chose anything); ``max_test_top1`` is the best test accuracy over the grid, the number the ISSL paper
reports (the max over its wd sweep), biased upwards by that choice on test. (The FORK retrains the
selected point alone on all the rows: the same run as its head in pass 2.) Within a pass all grid
points train together: each has its own head and SGD parameter group, they start from the same
initial weights and see the same batches, so each equals its own separate run while the features are
read once per epoch instead of once per grid point.

Label subsets: with ``label_fraction < 1`` both passes see only the rows of
:func:`~vissl_issl.evaluation.subsets.stratified_subset` (seeded by ``subset_seed``), held-out part
included; the test split stays whole. With a few rows per class a held-out row can be the only one of
its class, unseen by the selection pass: at one row per class (TinyImageNet at 0.2%) every point
scores ~0 on the held-out part, the selection falls back to the first grid point, and only the
per-point test accuracies and ``max_test_top1`` carry information.

Memory: rows are read from the memmap a chunk at a time. Each epoch the rows are permuted and cut
into chunks of ``chunk_rows``; a chunk is read in file order (sorted indices) and then batched in
its shuffled order. A uniform shuffle matters: features of an ImageFolder are stored class by
class, so chunks of contiguous rows would give batches that see ~50 of ImageNet's 1000 classes.
"""

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from vissl_issl.evaluation.features import Features
from vissl_issl.evaluation.subsets import stratified_subset

AUTHORS_LRS = (0.3, 0.1, 0.03, 0.01, 0.003)  # the FORK's ImageNet sweep
AUTHORS_WDS = (1e-5, 3e-6, 1e-6)
TINYIMAGENET_LR = 0.3  # the ISSL TinyImageNet probe (bin/tinyimagenet/base_tin.sh)
TINYIMAGENET_WDS = (1e-4, 1e-5, 1e-6)
TINYIMAGENET_BATCH = 512
HEADS = ("linear", "mlp")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "exponential")
EXPONENTIAL_DECAY = 1e-4  # "exponential": lr_0 -> 1e-4 lr_0 over the run (W-MSE: 1e-2 -> 1e-6)
MLP_HIDDEN = 2048
MOMENTUM = 0.9
INIT_STD = 0.02
LR_REFERENCE_BATCH = 256
TOP_K = (1, 5)


@dataclass(frozen=True)
class ProbeConfig:
    """The probe and its sweep (see the module doc); invalid values fail at construction."""

    lrs: Sequence[float] = AUTHORS_LRS
    wds: Sequence[float] = AUTHORS_WDS
    epochs: int = 100
    batch_size: int = 2048  # the authors' ImageNet probe
    scale_lr: bool = True  # lr x batch / 256 (the FORK); False: lr as is (ISSL)
    drop_last: bool = True  # drop each epoch's last incomplete batch (the FORK)
    head: str = "linear"  # one of HEADS
    optimizer: str = "sgd"  # one of OPTIMIZERS
    schedule: str = "cosine"  # one of SCHEDULES: cosine per step, or exponential per epoch
    mlp_hidden: int = MLP_HIDDEN  # H, the MLP head's hidden width
    batchnorm: bool = False  # BatchNorm1d(d, affine=False) on the features, before the head
    val_fraction: float = 0.1  # of the train rows (or of the subset), held out for the selection
    label_fraction: float = 1.0  # learn from a stratified subset of the train labels
    subset_seed: int = 0  # which rows that subset keeps
    chunk_rows: int = 65536  # ImageNet at d = 8192: 1 GiB of float16 per chunk
    seed: int = 0  # the held-out split, the init and the shuffling

    def __post_init__(self):
        for name in ("epochs", "batch_size", "mlp_hidden", "chunk_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if not self.lrs or not self.wds:
            raise ValueError(f"the sweep needs at least one lr and one wd; got lrs={self.lrs}, wds={self.wds}")
        for name, allowed in (("head", HEADS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {allowed}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction {self.val_fraction} must lie in (0, 1)")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction {self.label_fraction} must lie in (0, 1]")

    @classmethod
    def authors_tinyimagenet(cls, **changes) -> "ProbeConfig":
        """The ISSL TinyImageNet probe (``config/optimizer/SGD*.yaml``, ``scheduler/cosine_nowarm``,
        ``main.yaml``): SGD lr 0.3 used as is, batch 512 with the last partial batch kept, 100
        epochs, wd in {1e-4, 1e-5, 1e-6}; ``changes`` replace fields (e.g. ``head="mlp"``, or
        ``epochs=1000`` as the authors use on 0.2% of the labels).

        Not reproduced: the authors step the cosine per epoch (here per step: the same curve, sampled
        finer), train under fp16 autocast, and clip gradients by value at 2 (left out: expected to
        bind rarely on a probe's batch-mean gradients, unmeasured). They select nothing on held-out
        data: they report the max over wd of the test accuracy, ``ProbeResult.max_test_top1``."""
        preset = cls(
            lrs=(TINYIMAGENET_LR,),
            wds=TINYIMAGENET_WDS,
            epochs=100,
            batch_size=TINYIMAGENET_BATCH,
            scale_lr=False,
            drop_last=False,
        )
        return dataclasses.replace(preset, **changes)


@dataclass(frozen=True)
class GridPoint:
    """One (lr, wd): held-out accuracy of its probe fit on train minus the held-out part, and test
    accuracy of its probe fit on all the train rows (percent)."""

    lr: float
    wd: float
    val_top1: float
    val_top5: float
    test_top1: float
    test_top5: float


@dataclass(frozen=True)
class ProbeResult:
    """``lr``, ``wd``, ``test_top1``, ``test_top5``: the point selected on the held-out part;
    ``max_test_top1``: the max of ``test_top1`` over ``grid`` (the ISSL paper's number);
    ``train_rows``: how many train rows the probe learnt from (all, or the label subset)."""

    lr: float
    wd: float
    test_top1: float
    test_top5: float
    max_test_top1: float
    train_rows: int
    grid: List[GridPoint] = field(default_factory=list)


def init_linear_layers_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Weights trunc-normal(std 0.02), biases 0, in module order (so the draw is seeded by ``generator``)."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=INIT_STD, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()
    return module


def make_head(dim: int, num_classes: int, config: ProbeConfig, generator: torch.Generator) -> nn.Module:
    """``(B, d) -> (B, C)``: the ``config.head`` of the module doc, initialised from ``generator``."""
    if config.head == "linear":
        return init_linear_layers_(nn.Linear(dim, num_classes), generator)
    hidden = config.mlp_hidden
    mlp = nn.Sequential(
        nn.Linear(dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
    return init_linear_layers_(mlp, generator)


class Probe(nn.Module):
    """``heads`` copies of ``head`` (same initial weights) behind one optional parameter-free BN:
    ``(B, d) -> (heads, B, C)``. The BN has no parameters, so sharing it is the same as one BN per head."""

    def __init__(self, head: nn.Module, heads: int, dim: int, batchnorm: bool):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False) if batchnorm else nn.Identity()
        self.heads = nn.ModuleList(copy.deepcopy(head) for _ in range(heads))

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


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(layer, nn.modules.batchnorm._BatchNorm) for layer in module.modules())


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
    template = make_head(split.dim, num_classes, config, generator)
    probe = Probe(template, len(grid), split.dim, config.batchnorm).to(device)
    batch = min(config.batch_size, len(rows))
    if batch < 2 and has_batchnorm(probe):
        raise ValueError(
            f"{len(rows)} train row(s) to fit: BatchNorm (head={config.head!r}, batchnorm={config.batchnorm}) "
            "needs batches of at least 2 rows"
        )
    scale = batch / LR_REFERENCE_BATCH if config.scale_lr else 1.0
    groups = [
        {"params": head.parameters(), "lr": lr * scale, "weight_decay": wd} for head, (lr, wd) in zip(probe.heads, grid)
    ]
    optimizer = torch.optim.SGD(groups, momentum=MOMENTUM) if config.optimizer == "sgd" else torch.optim.Adam(groups)
    peak_lrs = [group["lr"] for group in optimizer.param_groups]
    full_batches, rest = divmod(len(rows), batch)
    keep_rest = not config.drop_last and rest > 1
    epoch_size = full_batches * batch + (rest if keep_rest else 0)
    steps_per_epoch = full_batches + int(keep_rest)
    # A multiple of the batch, so that only the epoch's last chunk can end in a partial batch.
    chunk_rows = max(1, config.chunk_rows // batch) * batch
    total_steps, step = config.epochs * steps_per_epoch, 0
    probe.train()
    for epoch in tqdm(range(config.epochs), desc=f"{config.head} probe ({len(grid)} lr x wd)", unit="epoch"):
        epoch_rows = shuffler.permutation(rows)[:epoch_size]
        for chunk in chunks(epoch_rows, chunk_rows):
            features, labels = read_rows(split, chunk, device)
            order = torch.from_numpy(shuffler.permutation(len(chunk))).to(device)
            for indices in order.split(batch):
                if config.schedule == "cosine":
                    decay = 0.5 * (1 + math.cos(math.pi * step / total_steps))
                else:
                    decay = EXPONENTIAL_DECAY ** (epoch / config.epochs)
                for group, peak in zip(optimizer.param_groups, peak_lrs):
                    group["lr"] = peak * decay
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


def validation_rows(rows: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded ``(fit rows, held-out rows)``, both sorted, partitioning ``rows``: ``round(fraction * n)``
    of the n rows held out, clamped to 1..n-1 so that both parts have a row (a small label subset)."""
    count = len(rows)
    if count < 2:
        raise ValueError(f"{count} train row(s): selecting lr x wd on held-out rows needs at least 2")
    held_out = min(max(1, round(fraction * count)), count - 1)
    permuted = np.random.default_rng(seed).permutation(rows)
    return np.sort(permuted[held_out:]), np.sort(permuted[:held_out])


def grid_accuracies(
    train: Features,
    rows: np.ndarray,
    scored: Features,
    scored_rows: np.ndarray,
    grid: Sequence[Tuple[float, float]],
    num_classes: int,
    config: ProbeConfig,
    device: torch.device,
) -> List[Tuple[float, float]]:
    """``(top-1, top-5)`` on ``scored_rows`` of ``scored`` of each grid point's probe fit on ``rows``
    of ``train``; the probe is freed on return, before the next pass allocates its own."""
    probe = fit(train, rows, grid, num_classes, config, device)
    return accuracies(probe, scored, scored_rows, config.chunk_rows, device)


def linear_probe(train: Features, test: Features, config: ProbeConfig = ProbeConfig()) -> ProbeResult:
    """Sweep the lr x wd grid of ``config`` (either head, despite the name) on ``train`` or its label
    subset: select on a held-out part, score every point trained on all the rows on ``test`` (module doc)."""
    return sweep(train, test, [(lr, wd) for lr in config.lrs for wd in config.wds], config)


def sweep(train: Features, test: Features, grid: Sequence[Tuple[float, float]], config: ProbeConfig) -> ProbeResult:
    """:func:`linear_probe` over the ``(lr, wd)`` points of ``grid`` instead of ``config.lrs`` x ``config.wds``."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = check_labels(train, test)
    rows = stratified_subset(train.labels, config.label_fraction, config.subset_seed)
    fit_rows, held_out = validation_rows(rows, config.val_fraction, config.seed)
    held_out_scores = grid_accuracies(train, fit_rows, train, held_out, grid, num_classes, config, device)
    test_scores = grid_accuracies(train, rows, test, np.arange(len(test)), grid, num_classes, config, device)
    points = [
        GridPoint(lr, wd, val_top1, val_top5, test_top1, test_top5)
        for (lr, wd), (val_top1, val_top5), (test_top1, test_top5) in zip(grid, held_out_scores, test_scores)
    ]
    best = max(points, key=lambda point: point.val_top1)  # max keeps the first of equals
    best_test = max(point.test_top1 for point in points)
    return ProbeResult(best.lr, best.wd, best.test_top1, best.test_top5, best_test, len(rows), points)
