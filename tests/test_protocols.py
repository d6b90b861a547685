"""The authors' evaluation protocols on cached features (evaluation/protocols.py) against direct
scikit-learn computations, and ``tools/probe.py transfer`` on two tiny folders."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import loguniform
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import top_k_accuracy_score
from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import LinearSVC
from test_probe import cached, clusters
from torch.optim.optimizer import register_optimizer_step_pre_hook
from vissl.config import AttrDict

from vissl_issl.evaluation import probe
from vissl_issl.evaluation.linear_probe import ProbeConfig, validation_rows
from vissl_issl.evaluation.protocols import (
    AUTHORS_PROTOCOLS,
    TORCH_HEAD,
    TORCH_HEAD_LR,
    TORCH_HEAD_WD,
    WMSE_LINEAR,
    issl_sklearn,
    issl_torch_head,
    log_uniform_draws,
    wmse_knn,
    wmse_linear,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "classifier, model",
    [("logistic", LogisticRegression(max_iter=1000)), ("svm", LinearSVC(dual=False))],
    ids=["logistic", "svm"],
)
def test_sklearn_protocol_matches_the_forks_randomized_search(tmp_path, classifier, model):
    rng = np.random.default_rng(0)
    # Noise 2.5 around clusters 4 apart: C matters, and top-5 of 6 classes is not always 100%.
    train = cached(tmp_path, "train", *clusters(rng, 300, 6, 12, noise=2.5))
    test = cached(tmp_path, "test", *clusters(rng, 200, 6, 12, noise=2.5))
    draws, seed = 6, 3
    result = issl_sklearn(train, test, classifier, n_hyper_param=draws, seed=seed)

    # The FORK's tools/linear_eval.py: a pipeline, RandomizedSearchCV over a predefined split, refit.
    fit_rows, held_out = validation_rows(np.arange(len(train)), 0.1, seed)
    rows = np.concatenate([fit_rows, held_out])
    features, labels = np.asarray(train.features, dtype=np.float32)[rows], np.asarray(train.labels)[rows]
    search = RandomizedSearchCV(
        Pipeline([("scaler", MinMaxScaler()), ("clf", model)]),
        {"clf__C": loguniform(1e-4, 100)},
        n_iter=draws,
        cv=PredefinedSplit([-1] * len(fit_rows) + [0] * len(held_out)),
        random_state=seed,
    ).fit(features, labels)
    test_features = np.asarray(test.features, dtype=np.float32)

    assert [point["C"] for point in result.search] == list(search.cv_results_["param_clf__C"])
    assert [point["val_top1"] for point in result.search] == pytest.approx(100 * search.cv_results_["mean_test_score"])
    assert result.selected == {"C": search.best_params_["clf__C"]}
    assert result.top1 == pytest.approx(100 * search.score(test_features, test.labels))
    top5 = top_k_accuracy_score(test.labels, search.decision_function(test_features), k=5, labels=np.arange(6))
    assert result.top5 == pytest.approx(100 * top5)
    assert 30 < result.top1 < 100 and result.top5 > result.top1  # neither trivial nor saturated
    assert result.protocol == f"issl_{classifier}" and result.settings["n_hyper_param"] == draws
    assert len({point["C"] for point in result.search}) == draws
    assert all(1e-4 <= point["C"] <= 100 for point in result.search)


def test_wmse_knn_is_sklearns_euclidean_5nn_majority_vote(tmp_path):
    rng = np.random.default_rng(1)
    # 4 classes among 5 neighbours: 2-2-1 vote ties happen, and go to the smaller label in both.
    train = cached(
        tmp_path, "train", rng.standard_normal((300, 8)) * [1, 2, 3, 4, 1, 1, 1, 1], rng.integers(4, size=300)
    )
    test = cached(tmp_path, "test", rng.standard_normal((150, 8)), rng.integers(4, size=150))
    reference = KNeighborsClassifier(5, metric="euclidean").fit(np.asarray(train.features, np.float32), train.labels)
    expected = 100 * reference.score(np.asarray(test.features, np.float32), test.labels)
    for chunk_rows in (7, 300):  # train read in chunks, or at once
        result = wmse_knn(train, test, chunk_rows)
        assert result.top1 == pytest.approx(expected) and result.top5 is None
    assert (result.protocol, result.classifier, result.settings["metric"]) == ("wmse_knn", "5-NN", "euclidean")


def test_torch_head_draws_lie_in_their_log_uniform_ranges_and_follow_the_seed(tmp_path):
    ranges = {"lr": TORCH_HEAD_LR, "wd": TORCH_HEAD_WD}
    draws = log_uniform_draws(ranges, 400, seed=0)
    assert draws == log_uniform_draws(ranges, 400, seed=0) != log_uniform_draws(ranges, 400, seed=1)
    for name, (low, high) in ranges.items():
        values = np.array([draw[name] for draw in draws])
        assert values.min() >= low and values.max() <= high
        # log-uniform: half the draws below the geometric mean (binomial std 2.5 points)
        assert abs(np.mean(values < np.sqrt(low * high)) - 0.5) < 0.1, name

    rng = np.random.default_rng(2)
    train = cached(tmp_path, "train", *clusters(rng, 120, 3, 8))
    test = cached(tmp_path, "test", *clusters(rng, 60, 3, 8))
    config = dataclasses.replace(TORCH_HEAD, epochs=3, seed=5)
    result = issl_torch_head(train, test, n_hyper_param=3, config=config)
    assert [(point["lr"], point["wd"]) for point in result.search] == [
        (draw["lr"], draw["wd"]) for draw in log_uniform_draws(ranges, 3, seed=5)
    ]
    best = max(result.search, key=lambda point: point["val_top1"])
    assert result.selected == {"lr": best["lr"], "wd": best["wd"]}
    assert result.top1 == 100.0  # well separated clusters


def test_wmse_linear_trains_with_adam_and_an_exponential_per_epoch_decay(tmp_path):
    rng = np.random.default_rng(3)
    train = cached(tmp_path, "train", *clusters(rng, 100, 3, 8))
    test = cached(tmp_path, "test", *clusters(rng, 50, 3, 8))
    epochs, batch = 3, 32  # 100 rows: 3 batches of 32 and one of 4 per epoch
    config = dataclasses.replace(WMSE_LINEAR, epochs=epochs, batch_size=batch)
    steps = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: steps.append((type(optimizer), optimizer.param_groups[0]["lr"]))
    )
    try:
        result = wmse_linear(train, test, config)
    finally:
        hook.remove()
    expected = [1e-2 * 1e-4 ** (epoch / epochs) for epoch in range(epochs) for _ in range(4)]
    assert {optimizer for optimizer, _ in steps} == {torch.optim.Adam}
    assert [lr for _, lr in steps] == pytest.approx(expected)
    assert result.top1 == 100.0 and result.selected == {} and result.settings["optimizer"] == "adam"
    with pytest.raises(ValueError, match="optimizer 'lars' is not one of"):
        ProbeConfig(optimizer="lars")


def write_folder(root, seed: int) -> None:
    """Two classes of 8 x 8 PNGs (dark and bright noise): 6 train and 3 val images each."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", 6), ("val", 3)):
        for label, (low, high) in enumerate([(0, 100), (150, 255)]):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(low, high, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")


def test_transfer_evaluates_every_protocol_on_two_folders_into_one_table(tmp_path, capsys):
    for name, seed in (("a", 0), ("b", 1)):
        write_folder(tmp_path / name, seed)
    out = tmp_path / "out"
    specs = [f"folder:{tmp_path / 'a'}", f"folder:{tmp_path / 'b'}"]
    argv = [
        "transfer", "--checkpoint", "random", "--data", *specs, "--out", str(out),
        "--protocol", "ours", *AUTHORS_PROTOCOLS,
        "--epochs", "2", "--n-hyper-param", "2", "--lrs", "0.3", "--wds", "1e-6", "--ks", "3",
        "--resize", "16", "--crop", "16", "--workers", "0",
    ]  # fmt: skip
    results = probe.main(argv)
    assert list(results) == specs

    with open(out / "transfer.csv") as file:
        rows = list(csv.DictReader(file))
    protocols = ["ours", "ours", *AUTHORS_PROTOCOLS]  # ours: the linear probe and 3-NN
    assert [(row["dataset"], row["protocol"]) for row in rows] == [(spec, p) for spec in specs for p in protocols]
    for row, outcome in zip(rows, [outcome for spec in specs for outcome in results[spec]["protocols"]]):
        assert float(row["top1"]) == outcome["top1"]
        assert json.loads(row["settings"]) == json.loads(json.dumps(outcome["settings"]))
    assert [row["classifier"] for row in rows[:3]] == ["linear", "3-NN", "LogisticRegression(max_iter=1000)"]
    assert rows[-1]["top5"] == ""  # W-MSE's k-NN reports top-1 only
    assert json.loads(rows[-2]["settings"])["epochs"] == 2  # --epochs reaches W-MSE's head too

    table = (out / "transfer.md").read_text().splitlines()
    assert table[0] == "| dataset | protocol | classifier | top-1 | top-5 | selected |"
    assert len(table) == 2 + len(rows) and f"| {specs[1]} | wmse_knn | 5-NN | " in table[-1]
    assert "| issl_svm | LinearSVC(dual=False) |" in table[5] and "| C " in table[5]
    for spec in specs:
        saved = json.loads((out / "features" / spec.replace("/", "_").replace(":", "_") / "results.json").read_text())
        assert saved["protocols"] == json.loads(json.dumps(results[spec]["protocols"]))
    assert "issl_torch_head: linear, lr " in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "random", "--data", "digits", "--protocol", "ours", "simclr_probe"], "'simclr_probe'"),
        (["transfer", "--checkpoint", "random", "--data", "digits", "imagenet:/x", "--out", "o"], "'imagenet:/x'"),
        (["transfer", "--checkpoint", "random", "--data", "digits", "dtd:/no/such/dir", "--out", "o"], "/no/such/dir"),
    ],
    ids=["unknown protocol", "unknown dataset kind", "dataset not on disk"],
)
def test_bad_protocols_and_datasets_fail_before_any_extraction(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as error:
        probe.main(argv)
    assert message in str(error.value) + capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no features, no table


def test_caltech101_splits_30_images_of_each_class_with_seed_0_and_reads_grayscale_as_rgb(tmp_path):
    # torchvision's layout: <root>/caltech101/101_ObjectCategories/<class>/image_NNNN.jpg, background dropped
    for name, count in (("BACKGROUND_Google", 2), ("ant", 33), ("bee", 31)):
        folder = tmp_path / "caltech101" / "101_ObjectCategories" / name
        folder.mkdir(parents=True)
        for index in range(1, count + 1):
            mode = "L" if index % 2 else "RGB"  # Caltech-101 holds some grayscale images
            Image.new(mode, (6, 5), 90).save(folder / f"image_{index:04d}.jpg")
    transform = probe.image_transform("caltech101", AttrDict({"DATA": {"TRAIN": {"TRANSFORMS": []}}}), 4, 4)
    splits = probe.datasets("caltech101", tmp_path, transform)
    labels = {
        split: np.array([dataset.dataset.y[index] for index in dataset.indices]) for split, dataset in splits.items()
    }
    assert np.bincount(labels["train"]).tolist() == [30, 30] and np.bincount(labels["test"]).tolist() == [3, 1]
    assert not set(splits["train"].indices) & set(splits["test"].indices)
    assert probe.datasets("caltech101", tmp_path, transform)["train"].indices == splits["train"].indices  # seeded
    assert [(image.shape, label) for image, label in splits["test"]] == [((3, 4, 4), label) for label in labels["test"]]
