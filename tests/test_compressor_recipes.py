"""The compressor recipes: the ImageNet configs compose with the authors' settings and build a model
that feeds its loss, the coder's quantiles get no weight decay, and a feature compressor trains over
a frozen DISSL trunk through the plugin launcher."""

import math

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.launcher import compose

import pytest
import torch
from classy_vision.losses import build_loss
from test_launcher import load
from vissl.models import build_model
from vissl.optimizers import get_optimizer_param_groups

from conftest import TINY_DISSL, launch, logged

BINCE_IMAGENET = "pretrain/bince/bince_resnet50_imagenet"
FEATURE_IMAGENET = "pretrain/feature_compressor/feature_compressor_dissl_resnet50"
FEATURE_DIGITS = "pretrain/feature_compressor/feature_compressor_dissl_resnet18_digits"


def test_bince_imagenet_recipe_composes_with_the_authors_settings():
    config = compose([f"config={BINCE_IMAGENET}"])[1]
    optimizer = config.OPTIMIZER
    assert (optimizer.name, optimizer.use_larc, optimizer.weight_decay) == ("adamw", False, 1e-5)
    assert optimizer.param_schedulers.lr.schedulers[0]["end_value"] == 1e-3
    assert "quantiles" in optimizer.non_regularized_parameters
    bottleneck, projection = config.MODEL.HEAD.PARAMS
    assert bottleneck == ["entropy_bottleneck", {"dims": [2048, 512], "prior": "hyperprior"}]
    assert projection[0] == "bince_projection" and projection[1]["dims"] == [512, 128, 256]  # z -> 128 -> z / 2
    block = config.LOSS.bince_loss
    assert block.beta == pytest.approx((1 / 0.003) / (0.1 * math.log(2)))  # lambda / (code beta ln 2)
    assert (block.rate_weight_start, block.rate_anneal_fraction) == (1e-5, 0.1)
    assert config.DATA.TRAIN.COLLATE_FUNCTION == "simclr_collator"


def test_feature_compressor_recipe_freezes_the_trunk_with_the_authors_schedule():
    config = compose([f"config={FEATURE_IMAGENET}"])[1]
    evaluation = config.MODEL.FEATURE_EVAL_SETTINGS
    assert evaluation.EVAL_MODE_ON and evaluation.FREEZE_TRUNK_ONLY
    assert config.MODEL.HEAD.PARAMS == [["entropy_bottleneck", {"dims": [2048, 2048], "prior": "hyperprior"}]]
    optimizer = config.OPTIMIZER
    assert (optimizer.name, optimizer.weight_decay, optimizer.num_epochs) == ("adamw", 3e-8, 30)
    lr = optimizer.param_schedulers.lr
    assert lr["values"] == pytest.approx([1e-3, 1e-4, 1e-5, 1e-6]) and lr["milestones"] == [
        7,
        14,
        21,
    ]  # / 1000 in 3 steps
    assert config.LOSS.feature_compression_loss.beta == pytest.approx(1 / (0.05 * math.log(2)))
    assert [t["name"] for t in config.DATA.TRAIN.TRANSFORMS] == ["Resize", "RandomCrop", "ToTensor", "Normalize"]


@pytest.mark.slow
def test_bince_resnet50_model_feeds_its_loss_and_keeps_quantiles_out_of_weight_decay():
    config = compose([f"config={BINCE_IMAGENET}"])[1]
    torch.manual_seed(0)
    model = build_model(config.MODEL, config.OPTIMIZER)
    (output,) = model([torch.randn(4, 3, 64, 64)])  # 2 images x 2 views, as simclr_collator stacks them
    assert output.shape == (4, 256 + 3)  # [projection | bits | aux | logit_scale]
    value = build_loss({"name": "bince_loss", **config.LOSS.bince_loss})(output, None)
    value.backward()
    assert torch.isfinite(value)
    schedulers = {"lr": 1e-3, "lr_head": 1e-3, "weight_decay": 1e-5, "weight_decay_head": 1e-5}
    groups = get_optimizer_param_groups(model, config.MODEL, config.OPTIMIZER, schedulers)
    quantiles = [p for name, p in model.named_parameters() if name.endswith("quantiles")]
    assert quantiles
    for group in groups:
        ids = {id(p) for p in group["params"]}
        if any(id(q) in ids for q in quantiles):
            assert group["weight_decay"] == 0


@pytest.mark.slow
def test_feature_compressor_trains_over_a_frozen_dissl_trunk(tmp_path):
    tiny = ["config.OPTIMIZER.num_epochs=1", "config.DATA.NUM_DATALOADER_WORKERS=0"]
    dissl = tmp_path / "dissl"
    result = launch([*TINY_DISSL, *tiny, f"config.CHECKPOINT.DIR={dissl}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    compressor = tmp_path / "compressor"
    overrides = [
        f"config={FEATURE_DIGITS}", *tiny,
        "config.DATA.TRAIN.DATA_LIMIT=64", "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=16", "config.LOG_FREQUENCY=1",
        f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={dissl / 'checkpoint.torch'}", f"config.CHECKPOINT.DIR={compressor}",
    ]  # fmt: skip
    result = launch(overrides, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [r["loss"] for r in logged(compressor) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    trunk = load(dissl / "checkpoint.torch")["classy_state_dict"]["base_model"]["model"]["trunk"]
    trained = load(compressor / "checkpoint.torch")["classy_state_dict"]["base_model"]["model"]
    # VISSL's feature-evaluation mode wraps the trunk, whose keys gain a "base_model." prefix.
    frozen = {key.removeprefix("base_model."): value for key, value in trained["trunk"].items()}
    assert frozen.keys() == trunk.keys()
    for key, value in trunk.items():  # weights and BatchNorm statistics: the trunk stayed frozen
        if not key.endswith("num_batches_tracked"):  # a counter VISSL's weight loading skips on purpose
            assert torch.equal(value, frozen[key]), key
    assert not torch.equal(trained["heads"]["0.log_scale"], torch.ones_like(trained["heads"]["0.log_scale"]))
