"""The ISSL TinyImageNet recipes (Table 1 of the ISSL paper) compose with the authors' settings
(../shared/specs/issl_experiments.md, issl.md §3.1 and §5), and the cells are their base recipe
plus one part each."""

import functools

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin.launcher import compose

import pytest

from vissl_issl.config import ConfigError

# recipe -> (batch, epochs, z, strength, blur)
RECIPES = {
    "dino/dino_resnet18_tinyimagenet": (256, 300, 512, 1.0, False),
    "dissl/dissl_resnet18_tinyimagenet": (256, 300, 512, 1.0, False),
    "dissl/dissl_resnet18_tinyimagenet_d2048": (256, 300, 2048, 1.0, False),
    "dissl/dissl_resnet18_tinyimagenet_d2048_e1000": (256, 1000, 2048, 1.0, False),
    "dissl/dissl_resnet18_tinyimagenet_d2048_e1000_coarse": (256, 1000, 2048, 2.0, True),
    "simclr/simclr_resnet18_tinyimagenet": (512, 300, 512, 1.0, False),
    "cissl/cissl_resnet18_tinyimagenet": (512, 300, 512, 1.0, False),
    "cissl/cissl_resnet18_tinyimagenet_d2048": (512, 300, 2048, 1.0, False),
    "cissl/cissl_resnet18_tinyimagenet_d2048_e1000": (512, 1000, 2048, 1.0, False),
    "cissl/cissl_resnet18_tinyimagenet_d2048_e1000_coarse": (512, 1000, 2048, 2.0, True),
}


@functools.lru_cache(maxsize=None)  # a composition takes seconds; the tests only read it
def composed(recipe, *overrides):
    return compose([f"config=pretrain/{recipe}", *overrides])[1]


def input_widths(head_params):
    """Input width of each head reading the trunk: both heads of the ISSL recipes (a list of
    modules each), the first module of VISSL's single sequential head otherwise."""
    if isinstance(head_params[0][0], list):
        return [head[0][1]["dims"][0] for head in head_params]
    return [head_params[0][1]["dims"][0]]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_has_the_authors_shared_settings(recipe):
    batch, epochs, z, strength, blur = RECIPES[recipe]
    config = composed(recipe)
    trunk = config.MODEL.TRUNK
    assert trunk.NAME == "tv_resnet"
    assert (trunk.TV_RESNET.DEPTH, trunk.TV_RESNET.SMALL_IMAGE_STEM, trunk.TV_RESNET.MAXPOOL) == (18, True, True)
    resizer = trunk.TV_RESNET.get("RESIZER")
    assert (resizer is None and z == 512) or dict(resizer) == {"HIDDEN_DIM": 512, "OUT_DIM": z}
    assert set(input_widths(config.MODEL.HEAD.PARAMS)) == {z}
    assert config.DATA.TRAIN.BATCHSIZE_PER_REPLICA == batch and config.DISTRIBUTED.NUM_PROC_PER_NODE == 1
    views = config.DATA.TRAIN.TRANSFORMS[0]
    assert [views[key] for key in ("name", "size", "strength", "blur", "total_num_crops")] == [
        "ImgPilToIsslViews", 64, strength, blur, 2,
    ]  # fmt: skip
    optimizer = config.OPTIMIZER
    assert (optimizer.name, optimizer.weight_decay, optimizer.num_epochs) == ("adam", 1e-6, epochs)
    assert optimizer.regularize_bn and optimizer.regularize_bias
    warmup, cosine = optimizer.param_schedulers.lr.schedulers
    values = [warmup["start_value"], warmup["end_value"], cosine["start_value"], cosine["end_value"]]
    assert [warmup["name"], cosine["name"]] == ["linear", "cosine"] and values == [0.0, 0.002, 0.002, 0.0]
    assert optimizer.param_schedulers.lr.lengths[0] == pytest.approx(10 / epochs)
    assert config.MODEL.GRAD_CLIP_VALUE == 2.0
    assert config.MODEL.AMP_PARAMS.USE_AMP and config.MODEL.AMP_PARAMS.AMP_TYPE == "pytorch"


def test_dissl_has_the_authors_heads_and_loss():
    config = composed("dissl/dissl_resnet18_tinyimagenet")
    teacher, student = config.MODEL.HEAD.PARAMS
    assert [module[1]["dims"] for module in teacher] == [[512, 1024], [1024, 512], [512, 16384]]
    assert [module[1]["dims"] for module in student] == [[512, 512], [512, 16384]]
    assert [module[1].get("use_relu", False) for module in teacher] == [True, False, False]
    loss = config.LOSS.dissl_loss
    assert (loss.num_classes, loss.lambda_maximality, loss.beta_det_inv) == (16384, 2.3, 0.8)
    assert (loss.temperature_teacher, loss.temperature_student) == (0.5, 1.0)


def test_contrastive_baseline_and_cissl_have_the_authors_heads_and_temperature():
    simclr = composed("simclr/simclr_resnet18_tinyimagenet")
    assert simclr.LOSS.name == "simclr_info_nce_loss" and simclr.LOSS.simclr_info_nce_loss.temperature == 0.07
    assert [head[1]["dims"] for head in simclr.MODEL.HEAD.PARAMS] == [[512, 1024], [1024, 128]]
    cissl = composed("cissl/cissl_resnet18_tinyimagenet")
    teacher, student = cissl.MODEL.HEAD.PARAMS
    assert [module[1]["dims"] for module in teacher] == [[512, 1024], [1024, 128]]
    assert [module[1]["dims"] for module in student] == [[512, 128]]
    assert cissl.LOSS.name == "cissl_loss" and cissl.LOSS.cissl_loss.temperature == 0.07


def test_dino_has_the_authors_head_and_schedules():
    config = composed("dino/dino_resnet18_tinyimagenet")
    [(name, head)] = config.MODEL.HEAD.PARAMS
    assert name == "swav_head" and head["dims"] == [512, 1024, 256] and head["num_clusters"] == [1000]
    assert head["activation_name"] == "GELU" and head["use_bn"] and head["skip_last_bn"]
    assert head["normalize_feats"] and head["use_weight_norm_prototypes"] and not head["return_embeddings"]
    assert config.MODEL.NON_TRAINABLE_PARAMS == ["heads.0.prototypes0.weight_g"]
    loss = config.LOSS.dino_loss
    assert (loss.output_dim, loss.num_crops, loss.crops_for_teacher) == (1000, 2, [0, 1])  # VISSL's inference
    assert (loss.student_temp, loss.teacher_temp_min, loss.teacher_temp_max) == (0.1, 0.04, 0.07)
    assert (loss.teacher_temp_warmup_epochs, loss.freeze_last_layer_epochs) == (50, 1)
    assert (loss.momentum, loss.ema_center, loss.normalize_last_layer) == (0.996, 0.9, False)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["config.MODEL.REPRESENTATION_DIM=1024"], "config.MODEL.REPRESENTATION_DIM=1024"),
        (["config.MODEL.GRAD_CLIP_VALUE=0"], "config.MODEL.GRAD_CLIP_VALUE=0"),
        (["config.LOSS.dino_loss.teacher_temp_warmup_epochs=400"], "config.LOSS.dino_loss.teacher_temp_warmup_epochs"),
        (["config.LOSS.dino_loss.freeze_last_layer_epochs=-1"], "config.LOSS.dino_loss.freeze_last_layer_epochs"),
    ],
)
def test_bad_settings_fail_at_composition_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        composed("dino/dino_resnet18_tinyimagenet", *overrides)


def test_cissl_checks_the_student_head_against_the_probe_it_names():
    config = composed("cissl/cissl_mlp_resnet18_tinyimagenet")
    assert config.LOSS.cissl_loss.probe == "mlp"
    assert [module[1]["dims"] for module in config.MODEL.HEAD.PARAMS[1]] == [[512, 2048, 2048], [2048, 128]]
    with pytest.raises(ConfigError, match=r"config\.MODEL\.HEAD\.PARAMS\[1\]\[0\] = mlp .* is not linear"):
        composed("cissl/cissl_mlp_resnet18_tinyimagenet", "config.LOSS.cissl_loss.probe=linear")
    with pytest.raises(ConfigError, match=r"config\.LOSS\.cissl_loss\.probe='svm' must be one of"):
        composed("cissl/cissl_resnet18_tinyimagenet", "config.LOSS.cissl_loss.probe=svm")
