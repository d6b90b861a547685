"""Cached-feature evaluation: feature cache, probe sweep (linear and MLP heads, label subsets), k-NN,
and tools/probe.py on digits."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import TensorDataset

from conftest import REPO, run_tool
from vissl_issl.evaluation.features import (
    Features,
    cache_matches,
    extract_features,
    features_path,
    labels_path,
    load_features,
    sidecar_path,
)
from vissl_issl.evaluation.knn import knn_accuracy
from vissl_issl.evaluation.linear_probe import (
    ProbeConfig,
    accuracies,
    fit,
    label_ranks,
    linear_probe,
    validation_rows,
)
from vissl_issl.evaluation.subsets import stratified_subset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cached(directory: Path, split: str, features: np.ndarray, labels: np.ndarray) -> Features:
    """Features as the probe sees them: float16 memmaps on disk."""
    directory.mkdir(parents=True, exist_ok=True)
    np.save(features_path(directory, split), features.astype(np.float16))
    np.save(labels_path(directory, split), labels.astype(np.int64))
    return load_features(directory, split)


def clusters(rng: np.random.Generator, count: int, classes: int, dim: int, noise: float = 0.3) -> tuple:
    """Points at 4 x the one-hot of their class plus N(0, noise^2) noise: at the default 0.3, linearly
    separable with a wide margin."""
    labels = rng.integers(classes, size=count)
    features = 4.0 * np.eye(dim)[labels] + noise * rng.standard_normal((count, dim))
    return features, labels


# ---------------------------------------------------------------- feature cache


class VisslLikeTrunk(nn.Module):
    """Returns a list of one (N, d) tensor, as VISSL trunks do; dropout makes train mode visible."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Dropout(0.5))

    def forward(self, images):
        return [self.body(images)]


def image_dataset(count: int = 10) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(count, 3, 2, 2, generator=generator), torch.arange(count) % 3)


@pytest.mark.parametrize("vissl_output", [False, True], ids=["tensor", "list"])
def test_extracted_memmaps_match_a_direct_eval_forward(tmp_path, vissl_output):
    torch.manual_seed(0)
    trunk = VisslLikeTrunk() if vissl_output else nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Dropout(0.5))
    dataset = image_dataset()
    # batch 4 over 10 images: the last batch is partial
    cache = extract_features(trunk, dataset, tmp_path, "train", {"trunk": "t"}, batch_size=4)
    with torch.no_grad():
        direct = trunk.eval()(dataset.tensors[0])
    direct = (direct[0] if vissl_output else direct).numpy()
    assert isinstance(cache.features, np.memmap) and cache.features.dtype == np.float16
    assert not cache.features.flags.writeable and not cache.labels.flags.writeable
    # float16 keeps 11 significant bits: relative error <= 2^-11 (plus float32 batch-size jitter)
    np.testing.assert_allclose(cache.features.astype(np.float32), direct, rtol=1e-3, atol=1e-6)
    np.testing.assert_array_equal(cache.labels, dataset.tensors[1].numpy())
    assert json.loads(sidecar_path(tmp_path, "train").read_text())["producer"] == {"trunk": "t"}


def test_cache_is_reused_for_its_producer_and_stale_for_another(tmp_path):
    producer = {"checkpoint": "/a.torch", "mtime_ns": 1, "transform": ["ToTensor()"]}
    assert not cache_matches(tmp_path, "train", producer)
    extract_features(VisslLikeTrunk(), image_dataset(), tmp_path, "train", producer, batch_size=4)
    assert cache_matches(tmp_path, "train", dict(producer, transform=("ToTensor()",)))  # json round trip
    assert not cache_matches(tmp_path, "train", dict(producer, mtime_ns=2))
    assert not cache_matches(tmp_path, "test", producer)

    newer = dict(producer, mtime_ns=2)
    other_trunk = VisslLikeTrunk()
    recomputed = extract_features(other_trunk, image_dataset(), tmp_path, "train", newer, batch_size=4)
    with torch.no_grad():
        expected = other_trunk.eval()(image_dataset().tensors[0])[0].numpy()
    np.testing.assert_allclose(recomputed.features.astype(np.float32), expected, rtol=1e-3, atol=1e-6)
    assert cache_matches(tmp_path, "train", newer) and not cache_matches(tmp_path, "train", producer)

    # An extraction that dies after the sidecar is removed leaves no usable cache.
    sidecar_path(tmp_path, "train").unlink()
    assert not cache_matches(tmp_path, "train", newer)


class Lambda(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, images):
        return self.function(images)


@pytest.mark.parametrize(
    "output, message",
    [
        (lambda x: x.flatten(1).unsqueeze(-1), r"shape \(4, 12, 1\) for 4 images"),
        (lambda x: [x.flatten(1), x.flatten(1)], "2 outputs"),
        (lambda x: x.flatten(1) * 1e6, r"rows 0\.\.3 reach .* float16"),
    ],
    ids=["not (N, d)", "two outputs", "float16 overflow"],
)
def test_extraction_rejects_bad_trunk_outputs(tmp_path, output, message):
    with pytest.raises(ValueError, match=message):
        extract_features(Lambda(output), image_dataset(), tmp_path, "train", {}, batch_size=4)
    assert not cache_matches(tmp_path, "train", {})


# ---------------------------------------------------------------- linear probe


def test_probe_reaches_100_percent_on_linearly_separable_features(tmp_path):
    rng = np.random.default_rng(0)
    train = cached(tmp_path, "train", *clusters(rng, 300, 4, 16))
    test = cached(tmp_path, "test", *clusters(rng, 200, 4, 16))
    # chunk_rows 100 < 270 fit rows: several chunks per epoch
    config = ProbeConfig(lrs=(0.3, 0.03), wds=(1e-6,), epochs=20, batch_size=32, chunk_rows=100)
    result = linear_probe(train, test, config)
    assert result.test_top1 == 100.0 and result.test_top5 == 100.0
    assert [(point.lr, point.wd) for point in result.grid] == [(0.3, 1e-6), (0.03, 1e-6)]
    best = max(result.grid, key=lambda point: point.val_top1)
    assert (result.lr, result.wd) == (best.lr, best.wd)


def test_probe_on_random_labels_is_at_chance(tmp_path):
    rng = np.random.default_rng(1)
    classes, test_count = 10, 2000
    train = cached(tmp_path, "train", rng.standard_normal((2000, 32)), rng.integers(classes, size=2000))
    test = cached(tmp_path, "test", rng.standard_normal((test_count, 32)), rng.integers(classes, size=test_count))
    config = ProbeConfig(lrs=(0.3, 0.01), wds=(1e-5,), epochs=10, batch_size=128)
    result = linear_probe(train, test, config)
    # Test labels are independent of everything the probe saw, so its correct count is
    # Binomial(2000, p) whatever it learnt: p = 1/10 for top-1 (std 0.67 points) and 5/10 for top-5
    # (std 1.1 points). 4 std: fails only if the probe or the scoring leaks test labels.
    for accuracy, p in ((result.test_top1, 0.1), (result.test_top5, 0.5)):
        std = 100 * math.sqrt(p * (1 - p) / test_count)
        assert abs(accuracy - 100 * p) < 4 * std, (accuracy, p)


@pytest.mark.parametrize(
    "config",
    [
        ProbeConfig(epochs=3, batch_size=32, chunk_rows=64, batchnorm=True),
        # 200 rows = 6 x 32 + 8: the kept partial batch is a step of every head too
        ProbeConfig(epochs=3, batch_size=32, chunk_rows=64, head="mlp", mlp_hidden=16, drop_last=False),
    ],
    ids=["linear", "mlp"],
)
def test_grid_points_train_as_their_own_separate_runs(tmp_path, config):
    rng = np.random.default_rng(2)
    train = cached(tmp_path, "train", *clusters(rng, 200, 3, 8))
    rows = np.arange(len(train))
    together = fit(train, rows, [(0.3, 1e-5), (0.01, 1e-6)], 3, config, torch.device("cpu"))
    alone = fit(train, rows, [(0.01, 1e-6)], 3, config, torch.device("cpu"))
    # The MLP's state includes its BatchNorms' running statistics.
    torch.testing.assert_close(together.heads[1].state_dict(), alone.heads[0].state_dict())
    first, second = (dict(head.named_parameters()) for head in together.heads)
    assert not any(torch.allclose(first[name], second[name]) for name in first if name.endswith("weight"))


def test_label_ranks_break_ties_towards_the_smaller_class():
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2], [0.1, 0.5, 0.5, 0.2], [0.9, 0.0, 0.0, 0.0]])
    labels = torch.tensor([1, 2, 3])
    # label 3 of row 3: one class scores higher, classes 1 and 2 tie with it and come first
    assert label_ranks(scores, labels).tolist() == [0, 1, 3]


def test_probe_rejects_test_labels_unseen_in_train(tmp_path):
    rng = np.random.default_rng(3)
    train = cached(tmp_path, "train", rng.standard_normal((20, 4)), np.arange(20) % 3)
    test = cached(tmp_path, "test", rng.standard_normal((5, 4)), np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match=r"test labels span 0\.\.3; they must lie in 0\.\.2"):
        linear_probe(train, test, ProbeConfig(epochs=1))


def test_max_over_the_grid_is_the_best_test_accuracy_of_probes_fit_on_all_train(tmp_path):
    rng = np.random.default_rng(0)
    # Noise 2 around clusters 4 apart: ~80% test top-1, so the weight decays score differently.
    train = cached(tmp_path, "train", *clusters(rng, 300, 4, 16, noise=2.0))
    test = cached(tmp_path, "test", *clusters(rng, 300, 4, 16, noise=2.0))
    config = ProbeConfig(lrs=(0.3,), wds=(1e-6, 0.03, 0.3), epochs=10, batch_size=32)
    result = linear_probe(train, test, config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # linear_probe's
    for point in result.grid:
        alone = fit(train, np.arange(len(train)), [(point.lr, point.wd)], 4, config, device)
        assert accuracies(alone, test, np.arange(len(test)), config.chunk_rows, device) == [
            (point.test_top1, point.test_top5)
        ]
    assert result.max_test_top1 == max(point.test_top1 for point in result.grid)
    [selected] = [point for point in result.grid if (point.lr, point.wd) == (result.lr, result.wd)]
    assert (result.test_top1, result.test_top5) == (selected.test_top1, selected.test_top5)
    assert result.max_test_top1 >= result.test_top1
    assert result.train_rows == len(train)


def circles(rng: np.random.Generator, inner: int, ring: int, mirrored: bool) -> tuple:
    """2-d points, class 0 in the unit disc and class 1 in the ring 1.5 <= r < 2.5, uniform in radius
    and angle; ``mirrored`` adds -x for every x."""
    radius = np.concatenate([rng.uniform(0, 1, inner), rng.uniform(1.5, 2.5, ring)])
    angle = rng.uniform(0, 2 * np.pi, inner + ring)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    labels = (radius > 1).astype(np.int64)
    if mirrored:
        return np.concatenate([points, -points]), np.concatenate([labels, labels])
    return points, labels


def test_mlp_probe_separates_concentric_circles_that_the_linear_probe_cannot(tmp_path):
    rng = np.random.default_rng(0)
    train = cached(tmp_path, "train", *circles(rng, 50, 150, mirrored=True))
    test = cached(tmp_path, "test", *circles(rng, 500, 1500, mirrored=False))
    config = ProbeConfig(lrs=(0.3,), wds=(1e-6,), epochs=30, batch_size=64, mlp_hidden=64)
    linear = linear_probe(train, test, config)
    mlp = linear_probe(train, test, dataclasses.replace(config, head="mlp"))
    # No half-plane holds the disc without more of the ring, so the best linear rule is the
    # majority class (the ring: 75% of test). The mirrored train set makes that the linear
    # probe's cross-entropy optimum exactly (by symmetry W = 0, b = log-odds of the classes).
    assert linear.test_top1 == pytest.approx(75.0)
    assert mlp.test_top1 > 95.0


def test_steps_and_learning_rates_follow_drop_last_and_scale_lr(tmp_path):
    rng = np.random.default_rng(7)
    train = cached(tmp_path, "train", *clusters(rng, 100, 3, 8))
    epochs, batch, lr = 2, 32, 0.3
    cases = [
        # (rows, drop_last, scale_lr, steps per epoch, peak lr)
        (100, True, True, 3, lr * batch / 256),  # 3 x 32 rows, the 4 left over dropped
        (100, False, True, 4, lr * batch / 256),  # the 4 left over: a 4th step
        (97, False, False, 3, lr),  # a single left-over row is dropped: BatchNorm cannot take it
    ]
    for rows, drop_last, scale_lr, steps_per_epoch, peak in cases:
        config = ProbeConfig(
            lrs=(lr,), wds=(0.0,), epochs=epochs, batch_size=batch, drop_last=drop_last, scale_lr=scale_lr
        )
        lrs = []
        hook = register_optimizer_step_pre_hook(
            lambda optimizer, args, kwargs: lrs.append(optimizer.param_groups[0]["lr"])
        )
        try:
            fit(train, np.arange(rows), [(lr, 0.0)], 3, config, torch.device("cpu"))
        finally:
            hook.remove()
        total = epochs * steps_per_epoch
        expected = [peak * 0.5 * (1 + math.cos(math.pi * step / total)) for step in range(total)]
        assert lrs == pytest.approx(expected), (rows, drop_last, scale_lr)


def test_authors_tinyimagenet_preset_is_the_issl_probe():
    preset = ProbeConfig.authors_tinyimagenet()
    assert (preset.lrs, preset.wds, preset.epochs, preset.batch_size) == ((0.3,), (1e-4, 1e-5, 1e-6), 100, 512)
    assert not preset.scale_lr and not preset.drop_last and preset.head == "linear"
    changed = ProbeConfig.authors_tinyimagenet(head="mlp", epochs=1000, label_fraction=0.002)
    assert changed == dataclasses.replace(preset, head="mlp", epochs=1000, label_fraction=0.002)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("head", "svm", "head 'svm' is not one of"),
        ("epochs", 0, "epochs must be >= 1; got 0"),
        ("wds", (), "at least one lr and one wd"),
        ("val_fraction", 1.0, r"val_fraction 1\.0 must lie in \(0, 1\)"),
        ("label_fraction", 0.0, r"label_fraction 0\.0 must lie in \(0, 1\]"),
    ],
)
def test_probe_config_rejects_invalid_values_at_construction(field, value, message):
    with pytest.raises(ValueError, match=message):
        ProbeConfig(**{field: value})


# ---------------------------------------------------------------- label subsets


def test_stratified_subsets_keep_class_proportions_and_follow_their_seed():
    counts = [1000, 500, 260, 37, 3]
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    # max(1, round(fraction x count)) per class: 26.0, 3.7 -> 4, 0.3 -> 1 (the floor), 0.52 -> 1, ...
    expected = {0.1: [100, 50, 26, 4, 1], 0.01: [10, 5, 3, 1, 1], 0.002: [2, 1, 1, 1, 1], 1.0: counts}
    for fraction, kept in expected.items():
        rows = stratified_subset(labels, fraction, seed=3)
        assert np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < len(labels)  # sorted, distinct
        assert np.bincount(labels[rows], minlength=len(counts)).tolist() == kept, fraction
        np.testing.assert_array_equal(stratified_subset(labels, fraction, seed=3), rows)
        if fraction < 1:
            assert not np.array_equal(stratified_subset(labels, fraction, seed=4), rows), fraction
    with pytest.raises(ValueError, match=r"label fraction 1\.5 must lie in \(0, 1\]"):
        stratified_subset(labels, 1.5, seed=0)


def test_probe_learns_only_from_the_label_subset_of_its_seed(tmp_path):
    rng = np.random.default_rng(8)
    labels = rng.permutation(np.arange(400) % 4)
    subset = stratified_subset(labels, 0.25, seed=3)
    # Rows outside the subset sit on the cluster of the next class: a probe that learns from them
    # (all rows, or the subset of another seed: mostly outside rows) maps clusters to wrong labels.
    clusters_of = (labels + 1) % 4
    clusters_of[subset] = labels[subset]
    train = cached(tmp_path, "train", 4.0 * np.eye(8)[clusters_of] + 0.3 * rng.standard_normal((400, 8)), labels)
    test = cached(tmp_path, "test", *clusters(rng, 200, 4, 8))
    config = ProbeConfig(lrs=(0.3,), wds=(1e-6,), epochs=20, batch_size=16, label_fraction=0.25, subset_seed=3)
    result = linear_probe(train, test, config)
    assert result.train_rows == len(subset) == 100
    assert result.test_top1 == 100.0 and result.max_test_top1 == 100.0


def test_held_out_split_keeps_a_row_on_each_side_or_fails_clearly(tmp_path):
    # 10% of 3 rows rounds to 0 held out: clamped to 1, leaving 2 to fit.
    fit_rows, held_out = validation_rows(np.array([5, 9, 12]), 0.1, seed=0)
    assert (len(fit_rows), len(held_out)) == (2, 1)
    assert sorted([*fit_rows, *held_out]) == [5, 9, 12]
    # 90% of 3 rows rounds to 3: clamped to 2, leaving 1 to fit.
    assert [len(part) for part in validation_rows(np.array([5, 9, 12]), 0.9, seed=0)] == [1, 2]
    with pytest.raises(ValueError, match=r"1 train row\(s\): selecting lr x wd on held-out rows needs at least 2"):
        validation_rows(np.array([5]), 0.1, seed=0)

    # 1% of 2 classes x 30 rows: one row per class, one to fit and one held out.
    rng = np.random.default_rng(9)
    train = cached(tmp_path, "train", *clusters(rng, 60, 2, 4))
    test = cached(tmp_path, "test", *clusters(rng, 20, 2, 4))
    config = ProbeConfig(lrs=(0.3,), wds=(1e-6,), epochs=2, label_fraction=0.01)
    assert linear_probe(train, test, config).train_rows == 2
    with pytest.raises(ValueError, match=r"1 train row\(s\) to fit: BatchNorm .* needs batches of at least 2 rows"):
        linear_probe(train, test, dataclasses.replace(config, head="mlp"))


# ---------------------------------------------------------------- k-NN


def angles(degrees) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_knn_temperature_weighting_overturns_the_majority(tmp_path):
    # Query at 0 degrees (label 0). Its 3 nearest train points by cosine: 10 deg (label 0, s = 0.985),
    # 40 deg (label 1, s = 0.766), -45 deg (label 1, s = 0.707); the 170 deg point (label 2) is far.
    # Scale must not matter (cosine), so train norms differ.
    train = cached(tmp_path, "train", angles([10, 40, -45, 170]) * [[1], [3], [0.5], [2]], np.array([0, 1, 1, 2]))
    test = cached(tmp_path, "test", angles([0]), np.array([0]))
    # T = 0.07: votes exp(0.985/0.07) = 1.3e6 for class 0 against exp(0.766/0.07) + exp(0.707/0.07)
    # = 8.0e4 for class 1, so class 0 wins; T = 100 makes the weights ~equal and the 2 votes of
    # class 1 win. k = 1 is the 10 deg point at any T.
    assert knn_accuracy(train, test, ks=[1, 3], temperature=0.07) == {1: (100.0, 100.0), 3: (100.0, 100.0)}
    sharp_and_flat = knn_accuracy(train, test, ks=[1, 3], temperature=100.0)
    assert sharp_and_flat[1][0] == 100.0 and sharp_and_flat[3][0] == 0.0
    assert sharp_and_flat[3][1] == 100.0  # 3 classes: the true one is always in the top 5


def dense_knn(train: Features, test: Features, k: int, temperature: float) -> tuple:
    """Reference: full similarity matrix, argsort, weighted votes, in float64 numpy."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(test.features.astype(np.float64)) @ unit(train.features.astype(np.float64)).T
    nearest = np.argsort(-sims, axis=1)[:, :k]
    votes = np.zeros((len(test), int(train.labels.max()) + 1))
    for row, neighbours in enumerate(nearest):
        np.add.at(votes[row], train.labels[neighbours], np.exp(sims[row, neighbours] / temperature))
    order = np.argsort(-votes, axis=1, kind="stable")
    return tuple(100 * np.mean([label in order[i, :top] for i, label in enumerate(test.labels)]) for top in (1, 5))


def test_knn_chunk_sizes_give_identical_results_equal_to_a_dense_reference(tmp_path):
    rng = np.random.default_rng(4)
    train = cached(tmp_path, "train", rng.standard_normal((50, 8)), rng.integers(7, size=50))
    test = cached(tmp_path, "test", rng.standard_normal((23, 8)), rng.integers(7, size=23))
    ks = [1, 5, 20]
    runs = [
        knn_accuracy(train, test, ks, temperature=0.1, train_chunk=train_chunk, test_chunk=test_chunk)
        for train_chunk, test_chunk in [(1, 1), (7, 5), (50, 23), (1000, 1000)]
    ]
    assert all(run == runs[0] for run in runs)
    for k in ks:
        assert runs[0][k] == pytest.approx(dense_knn(train, test, k, 0.1))


def test_knn_rejects_k_larger_than_the_train_set(tmp_path):
    rng = np.random.default_rng(5)
    train = cached(tmp_path, "train", rng.standard_normal((10, 4)), np.arange(10) % 2)
    test = cached(tmp_path, "test", rng.standard_normal((3, 4)), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="k=20 exceeds the 10 train features"):
        knn_accuracy(train, test, ks=[5, 20])


# ---------------------------------------------------------------- tools/probe.py


@pytest.mark.slow
def test_probe_tool_on_digits_with_a_random_trunk(tmp_path):
    features_dir = tmp_path / "features"
    command = [
        REPO / "tools" / "probe.py",
        "--checkpoint", "random", "--data", "digits", "--features-dir", str(features_dir),
        "--epochs", "3", "--batch-size", "256", "--lrs", "0.3", "0.03", "--wds", "1e-6",
        "--ks", "5", "20", "--workers", "0",
    ]  # fmt: skip
    result = run_tool(command, tmp_path, OMP_NUM_THREADS="1")  # see one_thread
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((features_dir / "results.json").read_text())
    assert (results["train_count"], results["test_count"], results["dim"]) == (1437, 360, 512)
    assert [(point["lr"], point["wd"]) for point in results["linear"]["grid"]] == [(0.3, 1e-6), (0.03, 1e-6)]
    # 10 classes (chance 10%); a random ResNet-18 on digits is far above chance on both probes.
    assert results["linear"]["test_top1"] > 50.0
    assert set(results["knn"]) == {"5", "20"} and results["knn"]["5"]["top1"] > 80.0
    for line in ("Probe of random on digits", "linear, lr ", "k-NN, k = 5 ", "k-NN, k = 20 "):
        assert line in result.stdout
    assert "linear, max over the lr x wd grid" in result.stdout
    producer = json.loads(sidecar_path(features_dir, "test").read_text())["producer"]
    assert producer["trunk"]["checkpoint"] == "random"
    assert "Normalize(mean=[0.5, 0.5, 0.5]" in producer["transform"]  # the digits pretraining's

    # The ISSL protocol with the MLP head on 10% of the labels, on the cached features.
    subset_command = [
        REPO / "tools" / "probe.py",
        "--checkpoint", "random", "--data", "digits", "--features-dir", str(features_dir),
        "--authors-protocol", "--head", "mlp", "--label-fraction", "0.1", "--epochs", "2", "--ks", "5",
    ]  # fmt: skip
    result = run_tool(subset_command, tmp_path, OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "train features" not in result.stderr  # no extraction: the cache matched
    results = json.loads((features_dir / "results.json").read_text())
    expected = ProbeConfig.authors_tinyimagenet(head="mlp", label_fraction=0.1, epochs=2)
    assert results["probe_config"] == json.loads(json.dumps(dataclasses.asdict(expected)))
    assert "linear" not in results
    mlp = results["mlp"]
    subset = stratified_subset(load_features(features_dir, "train").labels, 0.1, seed=0)
    assert mlp["train_rows"] == len(subset) == 142  # a tenth of each digit's 139..146 rows: 14 or 15
    assert [(point["lr"], point["wd"]) for point in mlp["grid"]] == [(0.3, 1e-4), (0.3, 1e-5), (0.3, 1e-6)]
    assert mlp["max_test_top1"] == max(point["test_top1"] for point in mlp["grid"])
    for line in (
        "142 of 1437 train (0.1 of the labels) / 360 test",
        "mlp, lr 0.3 wd ",
        "mlp, max over the lr x wd grid",
    ):
        assert line in result.stdout
