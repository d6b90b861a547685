"""The authors' evaluation protocols on cached features, by name, next to ours; every number comes as
a :class:`ProtocolResult` that names the protocol, the classifier, its settings and what it selected.

- ``ours``: the probe sweep of :mod:`~vissl_issl.evaluation.linear_probe` (the FORK's ImageNet grid
  unless the tool asks for the ISSL TinyImageNet preset) and cosine k-NN with temperature-weighted
  votes (:mod:`~vissl_issl.evaluation.knn`), run by ``tools/probe.py``; :func:`ours` reports them.
- ``issl_logistic``, ``issl_svm``: the ISSL/VISSL FORK's scikit-learn protocol (FORK
  ``tools/linear_eval.py --is-sklearn --is-validation [--is-svm]``; the classifiers of ISSL's
  ``config/predictor/sk_logistic.yaml`` and ``sk_svm.yaml``): ``MinMaxScaler`` then
  ``LogisticRegression(max_iter=1000)`` or ``LinearSVC(dual=False)``, each draw of C log-uniform in
  [1e-4, 100] (``n_hyper_param`` draws of scikit-learn's ``ParameterSampler``) fit on train minus a
  held-out 10% and scored there; the best C is refit on all the train rows (fit rows then held-out
  ones, as ``RandomizedSearchCV`` refits over a ``PredefinedSplit``) and scored on test.
- ``issl_torch_head``: the FORK's torch linear head searched at random: ``n_hyper_param`` draws of
  (lr log-uniform in [0.05, 1], weight decay log-uniform in [1e-7, 1e-5]); SGD momentum 0.9,
  lr x batch / 256 with batch 256, cosine to 0, 100 epochs (FORK defaults), selected on the held-out
  10%.
- ``wmse_linear``: W-MSE's linear head (``eval/sgd.py``): ``nn.Linear`` on the cached features, Adam
  lr 1e-2 decayed exponentially per epoch to 1e-6, weight decay 5e-6, batch 1000, 500 epochs, no
  selection: trained on all the train rows and scored on test.
- ``wmse_knn``: W-MSE's k-NN (``eval/knn.py``): the 5 nearest train rows by Euclidean distance on the
  unnormalised features (``torch.cdist``), majority vote, ties to the smaller label; top-1 only.

Shared choices: the held-out part is :func:`~vissl_issl.evaluation.linear_probe.validation_rows`
(seeded, the same rows for every protocol with one seed); the torch heads train with
:func:`~vissl_issl.evaluation.linear_probe.fit`. Top-5 comes from the classifier's scores (ties to
the smaller class index), None where the authors report none.

Not reproduced: the FORK holds out a stratified 10% (``train_test_split``, ``random_state=0``) and,
in its own code, draws C in [1e-3, 10] with ``max_iter=400, tol=1e-3`` (``max_iter=1000`` above is ISSL's
configs'; no source of the [1e-4, 100] range was found); its torch head is scored on test as trained on
the fit rows, here retrained on all the train rows (:func:`~vissl_issl.evaluation.linear_probe.sweep`);
both torch heads start from trunc-normal(0.02) weights instead of torch's default init, step the
cosine per step instead of per epoch, and run in float32 instead of fp16; W-MSE's head needs a train
set that is a multiple of 1000 rows, here the last partial batch is a step of its own. The sklearn
protocols hold the train features in memory as float32 (the FORK: ImageNet is too large for them).
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy.stats import loguniform
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import ParameterSampler
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import LinearSVC

from vissl_issl.evaluation.features import Features
from vissl_issl.evaluation.knn import nearest_neighbours
from vissl_issl.evaluation.linear_probe import (
    TOP_K,
    ProbeConfig,
    ProbeResult,
    check_labels,
    grid_accuracies,
    label_ranks,
    sweep,
    validation_rows,
)

AUTHORS_PROTOCOLS = ("issl_logistic", "issl_svm", "issl_torch_head", "wmse_linear", "wmse_knn")
PROTOCOLS = ("ours", *AUTHORS_PROTOCOLS)
N_HYPER_PARAM = 5  # the FORK's --n-hyper-param
VAL_FRACTION = 0.1  # the FORK's held-out part of train
SKLEARN_C = (1e-4, 100.0)
SKLEARN_MAX_ITER = 1000
TORCH_HEAD_LR = (0.05, 1.0)
TORCH_HEAD_WD = (1e-7, 1e-5)
TORCH_HEAD = ProbeConfig(epochs=100, batch_size=256, drop_last=False, val_fraction=VAL_FRACTION)
WMSE_LINEAR = ProbeConfig(
    lrs=(1e-2,),
    wds=(5e-6,),
    epochs=500,
    batch_size=1000,
    scale_lr=False,
    drop_last=False,
    optimizer="adam",
    schedule="exponential",
)
WMSE_K = 5


@dataclass(frozen=True)
class ProtocolResult:
    """Test accuracies (percent) of one classifier of a protocol: ``settings`` are the protocol's
    fixed hyper-parameters, ``selected`` the values its search chose (empty without a search), and
    ``search`` each candidate with its held-out top-1."""

    protocol: str
    classifier: str
    top1: float
    top5: Optional[float]
    settings: Dict[str, Any]
    selected: Dict[str, float] = field(default_factory=dict)
    search: List[Dict[str, float]] = field(default_factory=list)


def log_uniform_draws(ranges: Dict[str, Tuple[float, float]], count: int, seed: int) -> List[Dict[str, float]]:
    """``count`` seeded draws of every named value, each log-uniform in its ``(low, high)``: scikit-learn's
    ``ParameterSampler``, which is how the FORK's ``RandomizedSearchCV`` and its torch search draw."""
    distributions = {name: loguniform(low, high) for name, (low, high) in ranges.items()}
    draws = ParameterSampler(distributions, count, random_state=seed)
    return [{name: float(value) for name, value in draw.items()} for draw in draws]


def log_uniform(bounds: Tuple[float, float]) -> str:
    return f"log-uniform [{bounds[0]:g}, {bounds[1]:g}]"


def sklearn_pipeline(classifier: str, c: float) -> Pipeline:
    """MinMaxScaler, then ``LogisticRegression(max_iter=1000)`` (``"logistic"``) or ``LinearSVC(dual=False)``."""
    if classifier == "logistic":
        return make_pipeline(MinMaxScaler(), LogisticRegression(C=c, max_iter=SKLEARN_MAX_ITER))
    return make_pipeline(MinMaxScaler(), LinearSVC(C=c, dual=False))


def sklearn_accuracies(model: Pipeline, test: Features, num_classes: int) -> Tuple[float, float]:
    """Top-1 and top-5 (percent) of ``model``'s ``decision_function`` on ``test``; its top-1 is
    ``model.score``'s (the same argmax, ties to the smaller class)."""
    scores = model.decision_function(np.asarray(test.features, dtype=np.float32))
    if scores.ndim == 1:  # two classes: one score, for classes_[1]
        scores = np.stack([-scores, scores], axis=1)
    every_class = np.full((len(test), num_classes), -np.inf)
    every_class[:, model.classes_] = scores  # a class absent from train never ranks above one present
    ranks = label_ranks(torch.from_numpy(every_class), torch.from_numpy(np.array(test.labels)))
    return tuple(100.0 * (ranks < k).sum().item() / len(test) for k in TOP_K)


def issl_sklearn(
    train: Features, test: Features, classifier: str, n_hyper_param: int = N_HYPER_PARAM, seed: int = 0
) -> ProtocolResult:
    """``issl_logistic`` (``classifier="logistic"``) or ``issl_svm`` (``"svm"``): see the module doc."""
    num_classes = check_labels(train, test)
    features, labels = np.asarray(train.features, dtype=np.float32), np.asarray(train.labels)
    fit_rows, held_out = validation_rows(np.arange(len(train)), VAL_FRACTION, seed)
    search = []
    for draw in log_uniform_draws({"C": SKLEARN_C}, n_hyper_param, seed):
        model = sklearn_pipeline(classifier, draw["C"]).fit(features[fit_rows], labels[fit_rows])
        search.append({**draw, "val_top1": 100.0 * model.score(features[held_out], labels[held_out])})
    best = max(search, key=lambda point: point["val_top1"])  # the first of equals
    rows = np.concatenate([fit_rows, held_out])
    model = sklearn_pipeline(classifier, best["C"]).fit(features[rows], labels[rows])
    top1, top5 = sklearn_accuracies(model, test, num_classes)
    name = "LogisticRegression(max_iter=1000)" if classifier == "logistic" else "LinearSVC(dual=False)"
    settings = {"scaler": "MinMaxScaler", "C": log_uniform(SKLEARN_C), "n_hyper_param": n_hyper_param}
    settings.update(val_fraction=VAL_FRACTION, seed=seed)
    return ProtocolResult(f"issl_{classifier}", name, top1, top5, settings, {"C": best["C"]}, search)


def probe_settings(config: ProbeConfig, *unused: str) -> Dict[str, Any]:
    """``config`` as settings, less the fields that do not apply (and the memory bound ``chunk_rows``)."""
    return {key: value for key, value in dataclasses.asdict(config).items() if key not in ("chunk_rows", *unused)}


def issl_torch_head(
    train: Features, test: Features, n_hyper_param: int = N_HYPER_PARAM, config: ProbeConfig = TORCH_HEAD
) -> ProtocolResult:
    """``issl_torch_head``: the sweep of ``config`` over ``n_hyper_param`` random (lr, wd) draws."""
    ranges = {"lr": TORCH_HEAD_LR, "wd": TORCH_HEAD_WD}
    grid = [(draw["lr"], draw["wd"]) for draw in log_uniform_draws(ranges, n_hyper_param, config.seed)]
    result = sweep(train, test, grid, config)
    settings = probe_settings(config, "lrs", "wds")
    settings.update(lr=log_uniform(TORCH_HEAD_LR), wd=log_uniform(TORCH_HEAD_WD), n_hyper_param=n_hyper_param)
    search = [{"lr": point.lr, "wd": point.wd, "val_top1": point.val_top1} for point in result.grid]
    selected = {"lr": result.lr, "wd": result.wd}
    return ProtocolResult("issl_torch_head", "linear", result.test_top1, result.test_top5, settings, selected, search)


def wmse_linear(train: Features, test: Features, config: ProbeConfig = WMSE_LINEAR) -> ProtocolResult:
    """``wmse_linear``: ``config``'s single (lr, wd), trained on all the train rows, scored on test."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = check_labels(train, test)
    grid = [(config.lrs[0], config.wds[0])]
    [(top1, top5)] = grid_accuracies(
        train, np.arange(len(train)), test, np.arange(len(test)), grid, num_classes, config, device
    )
    settings = probe_settings(config, "val_fraction", "label_fraction", "subset_seed")
    return ProtocolResult("wmse_linear", "linear", top1, top5, settings)


def wmse_knn(train: Features, test: Features, chunk_rows: int = 16384) -> ProtocolResult:
    """``wmse_knn``: Euclidean 5-NN, majority vote (ties to the smaller label), top-1."""
    if WMSE_K > len(train):
        raise ValueError(f"k={WMSE_K} exceeds the {len(train)} train features")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = check_labels(train, test)
    _, neighbour_labels = nearest_neighbours(train, test, WMSE_K, chunk_rows, 1024, device, metric="euclidean")
    votes = torch.zeros(len(test), num_classes, device=device)
    votes.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels, dtype=votes.dtype))
    ranks = label_ranks(votes, torch.from_numpy(np.array(test.labels)).to(device))
    top1 = 100.0 * (ranks < 1).sum().item() / len(test)
    settings = {"k": WMSE_K, "metric": "euclidean", "vote": "majority"}
    return ProtocolResult("wmse_knn", f"{WMSE_K}-NN", top1, None, settings)


def ours(
    config: ProbeConfig, probe: ProbeResult, knn: Dict[int, Tuple[float, float]], temperature: float
) -> List[ProtocolResult]:
    """``ours`` as results: the probe sweep's selected point and cosine k-NN at each k."""
    search = [{"lr": p.lr, "wd": p.wd, "val_top1": p.val_top1, "test_top1": p.test_top1} for p in probe.grid]
    results = [
        ProtocolResult(
            "ours",
            config.head,
            probe.test_top1,
            probe.test_top5,
            probe_settings(config),
            {"lr": probe.lr, "wd": probe.wd},
            search,
        )
    ]
    for k, (top1, top5) in knn.items():
        settings = {"k": k, "metric": "cosine", "temperature": temperature}
        results.append(ProtocolResult("ours", f"{k}-NN", top1, top5, settings))
    return results


def authors_protocol(
    name: str,
    train: Features,
    test: Features,
    n_hyper_param: int = N_HYPER_PARAM,
    epochs: Optional[int] = None,
    seed: int = 0,
    chunk_rows: int = 65536,
) -> ProtocolResult:
    """The protocol ``name`` (one of AUTHORS_PROTOCOLS); ``epochs`` replaces a torch head's epochs,
    ``seed`` seeds the draws, held-out split, init and shuffling."""
    if name not in AUTHORS_PROTOCOLS:
        raise ValueError(f"protocol {name!r} is not one of {AUTHORS_PROTOCOLS}")
    if name in ("issl_logistic", "issl_svm"):
        return issl_sklearn(train, test, name.split("_")[1], n_hyper_param, seed)
    if name == "wmse_knn":
        return wmse_knn(train, test, chunk_rows)
    preset = TORCH_HEAD if name == "issl_torch_head" else WMSE_LINEAR
    config = dataclasses.replace(preset, seed=seed, chunk_rows=chunk_rows, epochs=epochs or preset.epochs)
    return (
        issl_torch_head(train, test, n_hyper_param, config)
        if name == "issl_torch_head"
        else wmse_linear(train, test, config)
    )
