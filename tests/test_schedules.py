"""Learning-rate schedules in the papers' terms (``config.OPTIMIZER.lr_schedule``): the plugin
derives VISSL's ``param_schedulers.lr`` from the global batch and ``num_epochs``, so the shipped
recipes keep their schedules, another epoch count keeps the warm-up and the decay points, another
global batch scales the peak lr linearly, and a bad block fails with its key named."""

import copy
import functools
import re
from typing import List, Tuple

from vissl_issl.plugin.launcher import compose

import pytest
from classy_vision.optim.param_scheduler import build_param_scheduler

from conftest import REPO
from vissl_issl.config import ConfigError
from vissl_issl.schedules import derive_lr_schedule, steps_per_epoch

DISSL = "pretrain/dissl/dissl_resnet50_dNone_e400_m2"  # 8 x 320 images, 400 epochs
CISSL = "pretrain/cissl/cissl_resnet50_dNone_e100_m2"  # 8 x 384 images, 100 epochs
CVR_E300 = "pretrain/c_byol/c_byol_resnet50_e300"  # 32 x 128 images, 300 epochs, 0.35 per 256
W_MSE = "pretrain/w_mse/w_mse4_resnet18_cifar10"  # 1 x 256 images, 1000 epochs, 500 warm-up steps
W_MSE2 = "pretrain/w_mse/w_mse2_resnet18_cifar10"  # the same with 512 images per step


@functools.lru_cache(maxsize=None)
def composed(name: str, *overrides: str):
    return compose([f"config={name}", *overrides])[1]


def config_of(name: str, *overrides: str):
    """A fresh copy of the composed config (the cache must stay untouched)."""
    return copy.deepcopy(composed(name, *overrides))


def schedule(config) -> Tuple[List[dict], List[float]]:
    lr = config.OPTIMIZER.param_schedulers.lr
    assert lr.name == "composite" and lr.update_interval == "step" and not lr.auto_lr_scaling.auto_scale
    assert sum(lr.lengths) == pytest.approx(1, abs=1e-12)
    return lr.schedulers, lr.lengths


def ends_in_epochs(config) -> List[float]:
    """Where each phase of the composite ends, in epochs."""
    _, lengths = schedule(config)
    epochs, ends, total = config.OPTIMIZER.num_epochs, [], 0.0
    for length in lengths:
        total += length
        ends.append(total * epochs)
    return ends


def peak(config) -> float:
    return schedule(config)[0][0]["end_value"]  # the warm-up's end


# The shipped recipes keep the schedules they wrote out by hand before (hand-rounded fractions
# aside), and the head follows the trunk's schedule as VISSL's inference sets it.
@pytest.mark.parametrize(
    "name, schedulers, lengths",
    [
        (DISSL, [("linear", 0.001, 3.0), ("cosine", 3.0, 0.0)], [0.025, 0.975]),
        (CISSL, [("linear", 0.001, 3.6), ("cosine", 3.6, 0.0)], [0.1, 0.9]),
        (CVR_E300, [("linear", 0.0, 5.6), ("cosine", 5.6, 0.0)], [0.03333333333333333, 0.9666666666666667]),
        ("pretrain/simclr/simclr_resnet50_e1000", [("linear", 0.0, 3.2), ("cosine", 3.2, 0.0)], [0.01, 0.99]),
        ("pretrain/bince/bince_resnet50_imagenet", [("linear", 1e-5, 1e-3), ("cosine", 1e-3, 1e-6)], [0.05, 0.95]),
        ("pretrain/dissl/dissl_resnet18_digits", [("linear", 2e-4, 2e-3), ("cosine", 2e-3, 0.0)], [0.05, 0.95]),
    ],
)
def test_shipped_recipes_derive_the_schedules_they_wrote_out_before(name, schedulers, lengths):
    config = composed(name)
    derived, derived_lengths = schedule(config)
    as_tuples = [(s["name"], s["start_value"], s["end_value"]) for s in derived]
    assert as_tuples == schedulers  # exact: 0.3 x 3072 / 256 is 3.6, not 3.5999999999999996
    assert derived_lengths == lengths
    assert config.OPTIMIZER.param_schedulers.lr.interval_scaling == ["rescaled", "fixed"]
    assert config.OPTIMIZER.param_schedulers.lr_head == config.OPTIMIZER.param_schedulers.lr


@pytest.mark.parametrize("name, steps_per_epoch_", [(W_MSE, 195), (W_MSE2, 97)])
def test_w_mse_recipes_derive_the_authors_steps(name, steps_per_epoch_):
    config = composed(name)
    schedulers, lengths = schedule(config)
    assert schedulers == [
        {"name": "linear", "start_value": 6e-6, "end_value": 0.003},
        {"name": "constant", "value": 0.003},
        {"name": "constant", "value": 0.0006},
        {"name": "constant", "value": 0.00012},
    ]
    assert config.OPTIMIZER.param_schedulers.lr.interval_scaling == ["rescaled", "fixed", "fixed", "fixed"]
    assert steps_per_epoch(config, 50000) == steps_per_epoch_  # 50,000 // images per step
    assert lengths[0] * steps_per_epoch_ * 1000 == pytest.approx(500)
    assert ends_in_epochs(config)[1:] == pytest.approx([950, 975, 1000])


def test_steps_per_epoch_are_vissls_over_ranks_data_limit_and_drop_last():
    config = config_of(W_MSE)
    config.DISTRIBUTED.NUM_PROC_PER_NODE = 3  # the sampler pads 50,000 to 3 x 16,667
    assert steps_per_epoch(config, 50000) == 16667 // 256
    config.DATA.TRAIN.DROP_LAST = False
    assert steps_per_epoch(config, 50000) == 16667 // 256 + 1
    config.DATA.TRAIN.DATA_LIMIT = 3000  # VISSL trains on the first 3,000 only
    assert steps_per_epoch(config, 50000) == 4


# Another epoch count: the warm-up keeps its epochs (or steps), the decay keeps its points.
@pytest.mark.parametrize("name", [DISSL, CISSL, CVR_E300])
@pytest.mark.parametrize("epochs", [50, 800])
def test_other_epochs_keep_ten_warm_up_epochs_and_the_cosine_to_the_end(name, epochs):
    shipped = composed(name)
    config = composed(name, f"config.OPTIMIZER.num_epochs={epochs}")
    schedulers, lengths = schedule(config)
    assert ends_in_epochs(config) == pytest.approx([10, epochs])
    assert schedulers == schedule(shipped)[0]  # same lr values: the batch did not change


@pytest.mark.parametrize("epochs", [200, 2000])
def test_other_epochs_keep_w_mses_500_warm_up_steps_and_its_drops_before_the_end(epochs):
    config = composed(W_MSE, f"config.OPTIMIZER.num_epochs={epochs}")
    schedulers, lengths = schedule(config)
    assert lengths[0] * 195 * epochs == pytest.approx(500)
    assert ends_in_epochs(config)[1:] == pytest.approx([epochs - 50, epochs - 25, epochs])  # the authors' E-50, E-25
    assert [s.get("value") for s in schedulers[1:]] == [0.003, 0.0006, 0.00012]


def test_milestones_counted_from_the_start_stay_at_their_epochs():
    overrides = (
        "config.OPTIMIZER.lr_schedule.decay_epochs_before_end=null",
        "+config.OPTIMIZER.lr_schedule.decay_epochs=[300,600]",
    )
    for epochs in (700, 1500):
        config = composed(W_MSE, *overrides, f"config.OPTIMIZER.num_epochs={epochs}")
        assert ends_in_epochs(config)[1:] == pytest.approx([300, 600, epochs])


# Another global batch: the peak follows it linearly; W-MSE's lr is the authors' at any batch.
@pytest.mark.parametrize(
    "name, overrides, factor",
    [
        (DISSL, ("config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=160",), 0.5),
        (DISSL, ("config.DISTRIBUTED.NUM_NODES=2",), 2),
        (CISSL, ("config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=256", "config.DISTRIBUTED.NUM_NODES=4"), 8 / 3),
        (CVR_E300, ("config.DISTRIBUTED.NUM_NODES=1",), 0.25),
    ],
)
def test_another_global_batch_scales_the_peak_lr_linearly(name, overrides, factor):
    shipped, config = composed(name), composed(name, *overrides)
    assert peak(config) == pytest.approx(factor * peak(shipped), rel=1e-12)
    assert schedule(config)[0][1]["start_value"] == peak(config)  # the cosine starts at the new peak
    assert schedule(config)[0][0]["start_value"] == schedule(shipped)[0][0]["start_value"]  # absolute
    assert schedule(config)[1] == schedule(shipped)[1]  # the epochs did not change


def test_w_mses_lr_stays_and_its_warm_up_stays_500_steps_at_another_batch():
    config = composed(W_MSE, "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=1024")
    schedulers, lengths = schedule(config)
    assert peak(config) == 0.003 and [s.get("value") for s in schedulers[1:]] == [0.003, 0.0006, 0.00012]
    assert lengths[0] * (50000 // 1024) * 1000 == pytest.approx(500)


def test_derived_schedule_follows_the_equation_in_vissls_scheduler():
    config = composed(W_MSE)
    lr = build_param_scheduler(config.OPTIMIZER.param_schedulers.lr)
    total = 195 * 1000
    assert lr(0) == pytest.approx(6e-6)
    assert lr(250 / total) == pytest.approx(6e-6 + (0.003 - 6e-6) / 2)
    assert lr(501 / total) == pytest.approx(0.003)
    assert lr(949.9 / 1000) == pytest.approx(0.003) and lr(950.1 / 1000) == pytest.approx(0.0006)
    assert lr(975.1 / 1000) == pytest.approx(0.00012)
    dissl = build_param_scheduler(composed(DISSL).OPTIMIZER.param_schedulers.lr)
    assert dissl(0) == pytest.approx(0.001) and dissl(0.5 * 10 / 400) == pytest.approx((0.001 + 3.0) / 2)
    assert dissl(0.5) == pytest.approx(1.5)  # cosine over the whole run: (1 + cos(pi / 2)) / 2 x 3.0
    assert dissl(0.9999) == pytest.approx(0, abs=1e-6)


# Bad blocks fail with the key and value named.
@pytest.mark.parametrize(
    "name, changes, message",
    [
        (DISSL, {"warmup_epochs": -1}, r"config\.OPTIMIZER\.lr_schedule\.warmup_epochs=-1 must be a number >= 0"),
        (DISSL, {"warmup_epochs": 400}, r"config\.OPTIMIZER\.lr_schedule\.warmup_epochs=400 does not end before"),
        (DISSL, {"warmup_epochs": "ten"}, r"config\.OPTIMIZER\.lr_schedule\.warmup_epochs='ten'"),
        (DISSL, {"warmup_epochs": 5, "warmup_steps": 500}, r"config\.OPTIMIZER\.lr_schedule\.warmup_steps=500"),
        (DISSL, {"lr_per_256": None}, r"exactly one of lr_per_256, lr"),
        (DISSL, {"lr": 0.1}, r"config\.OPTIMIZER\.lr_schedule\.lr=0\.1"),
        (DISSL, {"lr_per_256": -0.3}, r"config\.OPTIMIZER\.lr_schedule\.lr_per_256=-0\.3"),
        (DISSL, {"warmup_epoch": 10}, r"unknown key\(s\) config\.OPTIMIZER\.lr_schedule\.warmup_epoch=10"),
        (DISSL, {"decay": "linear"}, r"config\.OPTIMIZER\.lr_schedule\.decay='linear'"),
        (DISSL, {"decay_factor": 0.1}, r"config\.OPTIMIZER\.lr_schedule\.decay_factor=0\.1 is for decay step"),
        (W_MSE, {"warmup_steps": 195 * 1000}, r"config\.OPTIMIZER\.lr_schedule\.warmup_steps=195000"),
        (W_MSE, {"num_train_images": None}, r"config\.OPTIMIZER\.lr_schedule\.num_train_images=None"),
        (W_MSE, {"decay_epochs_before_end": [50, 1000]}, r"lr_schedule\.decay_epochs_before_end=\[50, 1000\]"),
        (W_MSE, {"decay_epochs_before_end": [25, 50]}, r"decay_epochs_before_end=\[25, 50\] must give increasing"),
        (W_MSE, {"decay_epochs_before_end": None, "decay_epochs": [500, 1200]}, r"decay_epochs=\[500, 1200\]"),
        (W_MSE, {"decay_epochs_before_end": None}, r"exactly one of decay_epochs, decay_epochs_before_end"),
        (W_MSE, {"warmup_steps": 195 * 960}, r"warm-up \(960 epochs\) ends after the first decay"),
        (W_MSE, {"final_lr": 0.0}, r"config\.OPTIMIZER\.lr_schedule\.final_lr=0\.0 is for decay cosine"),
    ],
)
def test_bad_blocks_name_the_key_and_value(name, changes, message):
    config = config_of(name)
    config.OPTIMIZER.lr_schedule.update(changes)
    with pytest.raises(ConfigError, match=message):
        derive_lr_schedule(config)


def test_bad_epochs_name_num_epochs_and_a_bad_block_fails_at_composition():
    config = config_of(DISSL)
    config.OPTIMIZER.num_epochs = -5
    with pytest.raises(ConfigError, match=r"config\.OPTIMIZER\.num_epochs=-5"):
        derive_lr_schedule(config)
    with pytest.raises(ConfigError, match=r"config\.OPTIMIZER\.lr_schedule\.warmup_epochs=10 does not end"):
        compose([f"config={DISSL}", "config.OPTIMIZER.num_epochs=10"])  # the launcher's inference


def test_without_the_block_a_hand_written_schedule_is_left_alone():
    config = composed("pretrain/feature_compressor/feature_compressor_dissl_resnet50")
    lr = config.OPTIMIZER.param_schedulers.lr
    assert config.OPTIMIZER.lr_schedule is None
    assert lr.name == "multistep" and lr.milestones == [7, 14, 21] and lr.update_interval == "epoch"


def test_no_pretrain_yaml_writes_a_schedule_out_by_hand():
    """Every pretraining schedule is derived: no hand-computed ``lengths`` fraction, no pre-multiplied
    learning rate in a ``param_schedulers`` block, except where a file opts out (``lr_schedule: null``)."""
    offenders = []
    for path in sorted((REPO / "configs/config/pretrain").rglob("*.yaml")):
        text = re.sub(r"#.*", "", path.read_text())  # comments may quote the old values
        opted_out = re.search(r"^\s*lr_schedule:\s*null\s*$", text, re.M)
        if re.search(r"^\s*lengths:", text, re.M):
            offenders.append(f"{path.relative_to(REPO)}: lengths")
        if re.search(r"^\s*param_schedulers:", text, re.M) and not opted_out:
            offenders.append(f"{path.relative_to(REPO)}: param_schedulers without lr_schedule: null")
        if re.search(r"^\s*(start_value|end_value|value|auto_lr_scaling):", text, re.M) and not opted_out:
            offenders.append(f"{path.relative_to(REPO)}: scheduler values")
    assert offenders == []
