"""Cosine k-NN classification of cached features with temperature-weighted votes.

For a test feature q and train features t_j (labels y_j), s_j = <q/|q|, t_j/|t_j|>; N_k(q) are the
k train rows of largest s_j, and class c gets the vote ``v_c = sum_{j in N_k(q), y_j = c} exp(s_j / T)``
(T = 0.07 by default). The prediction ranks classes by vote, ties to the smaller class index
(:func:`~vissl_issl.evaluation.linear_probe.label_ranks`); top-1 and top-5 are reported. Equal
similarities at the k-th place are broken arbitrarily.

The search also serves W-MSE's Euclidean k-NN (:mod:`~vissl_issl.evaluation.protocols`), which ranks
train rows by ``-|q - t_j|`` (``torch.cdist``) instead of s_j.

Every k is served by one search for the largest k: the top-K neighbours come out sorted, and the
top-k for k < K are their first k. Memory is bounded by chunks on both sides: the outer loop reads
each chunk of train rows once, the inner loop scores every chunk of test rows against it and merges
the chunk's best K into each test row's running best K (``(N_test, K)`` similarities and labels).
"""

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vissl_issl.evaluation.features import Features
from vissl_issl.evaluation.linear_probe import TOP_K, check_labels, chunks, label_ranks, read_rows

DEFAULT_KS = (5, 20, 200)
DEFAULT_TEMPERATURE = 0.07


def similarities(queries: torch.Tensor, keys: torch.Tensor, metric: str) -> torch.Tensor:
    """``(n, m)`` nearness of ``queries (n, d)`` to ``keys (m, d)``, larger is nearer: the cosine
    similarity (``metric="cosine"``), or minus the Euclidean distance (``"euclidean"``)."""
    if metric == "cosine":
        return F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T
    return -torch.cdist(queries, keys)


def nearest_neighbours(
    train: Features,
    test: Features,
    k: int,
    train_chunk: int,
    test_chunk: int,
    device: torch.device,
    metric: str = "cosine",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(similarities, labels)``, both ``(N_test, k)``, of each test row's k nearest train rows by
    ``metric`` (:func:`similarities`), nearest first."""
    best_sims = torch.full((len(test), k), -torch.inf, device=device)
    best_labels = torch.zeros(len(test), k, dtype=torch.long, device=device)
    train_chunks = list(chunks(np.arange(len(train)), train_chunk))
    for train_rows in tqdm(train_chunks, desc=f"k-NN (k <= {k})", unit="train chunk"):
        keys, key_labels = read_rows(train, train_rows, device)
        for start in range(0, len(test), test_chunk):
            stop = min(start + test_chunk, len(test))
            rows = slice(start, stop)
            queries, _ = read_rows(test, np.arange(start, stop), device)
            sims, index = similarities(queries, keys, metric).topk(min(k, len(keys)), dim=1)
            merged_sims = torch.cat([best_sims[rows], sims], dim=1)
            merged_labels = torch.cat([best_labels[rows], key_labels[index]], dim=1)
            best_sims[rows], keep = merged_sims.topk(k, dim=1)
            best_labels[rows] = merged_labels.gather(1, keep)
    return best_sims, best_labels


def knn_accuracy(
    train: Features,
    test: Features,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    train_chunk: int = 16384,
    test_chunk: int = 1024,
) -> Dict[int, Tuple[float, float]]:
    """``{k: (top-1, top-5)}`` in percent of cosine k-NN with ``exp(s / temperature)`` votes."""
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers; got {list(ks)}")
    if max(ks) > len(train):
        raise ValueError(f"k={max(ks)} exceeds the {len(train)} train features")
    if temperature <= 0 or train_chunk < 1 or test_chunk < 1:
        raise ValueError(
            f"temperature, train_chunk and test_chunk must be positive; got {temperature}, {train_chunk}, {test_chunk}"
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = check_labels(train, test)
    sims, neighbour_labels = nearest_neighbours(train, test, max(ks), train_chunk, test_chunk, device)
    labels = torch.from_numpy(np.array(test.labels)).to(device)
    results = {}
    for k in sorted(set(ks)):
        votes = torch.zeros(len(test), num_classes, device=device)
        votes.scatter_add_(1, neighbour_labels[:, :k], torch.exp(sims[:, :k] / temperature))
        ranks = label_ranks(votes, labels)
        results[k] = tuple(100.0 * (ranks < top).sum().item() / len(test) for top in TOP_K)
    return results
