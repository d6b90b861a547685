"""Stratified, seeded subsets of a split's labels: the ISSL paper probes on 10%, 1% and 0.2% of the
TinyImageNet train labels (Fig. 7a; the authors draw them with scikit-learn's stratified
``train_test_split``, which keeps the same 50 / 5 / 1 rows of each 500-image class)."""

import numpy as np


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of a stratified random subset of ``labels`` (shape ``(N,)``).

    A class with ``n_c`` rows keeps ``k_c = max(1, round(fraction * n_c))`` of them (Python's
    ``round``: halves go to the even integer), drawn uniformly without replacement. So every class
    stays, with ``|k_c - fraction * n_c| <= 1/2`` unless the floor of one row lifts it, and
    ``fraction = 1`` keeps every row. The draw is ``numpy.random.default_rng(seed)`` over the classes
    in ascending order: one seed always gives the same rows, different seeds give independent draws.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction {fraction} must lie in (0, 1]")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty (N,) array; got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    # One sort instead of a scan of all N labels per class (ImageNet: 1000 classes x 1.28M rows).
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    kept = [
        rng.choice(order[start : start + count], max(1, round(fraction * int(count))), replace=False)
        for start, count in zip(starts, counts)
    ]
    return np.sort(np.concatenate(kept))
