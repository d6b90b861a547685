"""Configs resolve from the repo root, from any directory and from a wheel install; bad DISSL
configs fail at composition (before any process starts) with the offending key named."""

import subprocess
import sys

import vissl_issl.plugin  # noqa: F401
from vissl_issl.plugin.launcher import compose

import pytest

from conftest import REPO, TINY_DISSL, launch
from vissl_issl.config import ConfigError

RECIPES = [
    "dNone_e100_m2",
    "d8192_e100_m2",
    "d8192_e100_m6",
    "dNone_e400_m2",
    "dNone_e400_m6",
    "d8192_e400_m6",
    "d8192_e800_m8",
]


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_imagenet_recipe_composes_with_the_authors_settings(recipe):
    _, config = compose([f"config=pretrain/dissl/dissl_resnet50_{recipe}"])
    dim, epochs, crops = recipe.split("_")
    block = config.LOSS.dissl_loss
    assert block.num_crops == int(crops[1:]) and block.num_classes == 16384
    assert config.MODEL.HEAD_CROPS == [[0, 1], None]
    assert config.OPTIMIZER.num_epochs == int(epochs[1:])
    warmup_fraction = config.OPTIMIZER.param_schedulers.lr.lengths[0]
    assert warmup_fraction * config.OPTIMIZER.num_epochs == pytest.approx(10)
    assert [s["end_value"] for s in config.OPTIMIZER.param_schedulers.lr.schedulers] == [3.0, 0.0]
    assert config.DATA.TRAIN.BATCHSIZE_PER_REPLICA * config.DISTRIBUTED.NUM_PROC_PER_NODE == 2560
    assert config.OPTIMIZER.use_larc and config.OPTIMIZER.larc_config.trust_coefficient == 0.001
    assert config.MODEL.AMP_PARAMS.AMP_TYPE == "pytorch" and config.MODEL.SYNC_BN_CONFIG.GROUP_SIZE == 0
    trunk_dim = 8192 if dim == "d8192" else 2048
    assert all(head[0][1]["dims"][0] == trunk_dim for head in config.MODEL.HEAD.PARAMS)
    assert block.warmup_beta_iters == (1000 if epochs == "e800" else None)


def test_pretrain_dissl_alone_is_the_best_recipe():
    assert compose(["config=pretrain/dissl"])[1] == compose(["config=pretrain/dissl/dissl_resnet50_d8192_e400_m6"])[1]


def compose_elsewhere(cwd, python_path_first=None) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        + (
            f"sys.path.insert(0, {str(python_path_first)!r}); sys.path.remove({str(REPO)!r})\n"
            if python_path_first
            else ""
        )
        + "import vissl_issl.plugin\n"
        "from vissl_issl.plugin.launcher import compose\n"
        "config = compose(['config=pretrain/dissl'])[1]\n"
        "print(vissl_issl.__file__, config.LOSS.dissl_loss.num_crops)\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_configs_resolve_from_any_directory(tmp_path):
    result = compose_elsewhere(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "6"


@pytest.mark.slow
def test_configs_resolve_after_a_wheel_install(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path / "dist",
            REPO,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("vissl_issl-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel], check=True)
    configs = site / "vissl_issl/hydra_configs/config"
    assert (configs / "pretrain/parts/imagenet.yaml").is_file()
    assert (configs / "pretrain/cissl/head_ablations/simclr_tmlp_slin.yaml").is_file()
    result = compose_elsewhere(tmp_path, python_path_first=site)
    assert result.returncode == 0, result.stderr[-2000:]
    installed_from, num_crops = result.stdout.split()[-2:]
    assert installed_from.startswith(str(site)) and num_crops == "6"


BAD = [
    ("+config.LOSS.dissl_loss.temperature=0.1", "config.LOSS.dissl_loss.temperature"),
    ("config.LOSS.dissl_loss.num_classes=1000", "config.LOSS.dissl_loss.num_classes"),
    ("config.LOSS.dissl_loss.crops_for_teacher=[0,6]", "config.LOSS.dissl_loss.crops_for_teacher"),
    ("config.LOSS.dissl_loss.num_crops=8", "config.LOSS.dissl_loss.num_crops"),
]


@pytest.mark.parametrize("override,key", BAD)
def test_bad_dissl_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose(["config=pretrain/dissl", override])


def test_head_output_size_must_match_between_teacher_and_student():
    student_to_100 = "config.MODEL.HEAD.PARAMS.1.1.1.dims=[512,100]"
    with pytest.raises(ConfigError, match=r"config\.MODEL\.HEAD\.PARAMS"):
        compose(["config=pretrain/dissl", student_to_100])


@pytest.mark.slow
def test_launcher_fails_before_training_and_writes_nothing(tmp_path):
    out = tmp_path / "never"
    result = launch([*TINY_DISSL, f"config.CHECKPOINT.DIR={out}", "config.LOSS.dissl_loss.num_crops=6"], tmp_path)
    assert result.returncode != 0
    assert "config.LOSS.dissl_loss.num_crops" in result.stderr
    assert not out.exists()  # no process was launched, no checkpoint folder made


@pytest.mark.parametrize("recipe,trunk_dim", [("dNone_e100_m2", 2048), ("d8192_e100_m2", 8192)])
def test_cissl_imagenet_recipes_compose_with_the_authors_settings(recipe, trunk_dim):
    _, config = compose([f"config=pretrain/cissl/cissl_resnet50_{recipe}"])
    assert config.LOSS.name == "cissl_loss" and config.LOSS.cissl_loss.temperature == 0.1
    assert config.MODEL.HEAD_CROPS == [None, None]
    crops = config.DATA.TRAIN.TRANSFORMS[0]
    assert crops["total_num_crops"] == 2 and crops["size_crops"] == [224]
    global_batch = config.DATA.TRAIN.BATCHSIZE_PER_REPLICA * config.DISTRIBUTED.NUM_PROC_PER_NODE
    assert global_batch == 3072
    schedulers = config.OPTIMIZER.param_schedulers.lr.schedulers
    assert schedulers[0]["end_value"] == schedulers[1]["start_value"] == pytest.approx(0.3 * global_batch / 256)
    assert config.OPTIMIZER.num_epochs == 100
    assert config.OPTIMIZER.param_schedulers.lr.lengths[0] * config.OPTIMIZER.num_epochs == pytest.approx(10)
    assert config.OPTIMIZER.use_larc and config.MODEL.SYNC_BN_CONFIG.CONVERT_BN_TO_SYNC_BN
    teacher, student = config.MODEL.HEAD.PARAMS
    assert teacher[0][1]["dims"][0] == student[0][1]["dims"][0] == trunk_dim
    assert [module[0] for module in student] == ["jl_mlp"] and student[0][1]["dims"] == [trunk_dim, 128]


ABLATIONS = {
    "simclr_shared_mlp": "simclr_info_nce_loss",
    "simclr_tmlp_smlp": "asymmetric_simclr_loss",
    "simclr_tmlp_slin": "asymmetric_simclr_loss",
    "simclr_tlin_slin": "asymmetric_simclr_loss",
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_head_ablations_change_only_heads_and_loss(name):
    _, cissl = compose(["config=pretrain/cissl/cissl_resnet50_dNone_e100_m2"])
    _, ablation = compose([f"config=pretrain/cissl/head_ablations/{name}"])
    loss = ABLATIONS[name]
    assert ablation.LOSS.name == loss and ablation.LOSS[loss].temperature == 0.1
    one_shared_head = isinstance(ablation.MODEL.HEAD.PARAMS[0][0], str)  # a single chain of modules
    assert one_shared_head == (loss == "simclr_info_nce_loss")
    for key in ("DATA", "OPTIMIZER", "DISTRIBUTED"):
        assert ablation[key] == cissl[key], key
    assert ablation.MODEL.TRUNK == cissl.MODEL.TRUNK
    if loss == "simclr_info_nce_loss":  # VISSL's own inference: 2 views of 3072 images on 8 ranks
        assert ablation.LOSS[loss].buffer_params.effective_batch_size == 6144
        assert ablation.LOSS[loss].buffer_params.world_size == 8


BAD_CISSL = [
    ("+config.LOSS.cissl_loss.tau=0.1", "config.LOSS.cissl_loss.tau"),
    ("config.DATA.TRAIN.COLLATE_FUNCTION=simclr_collator", "config.DATA.TRAIN.COLLATE_FUNCTION"),
    ("config.DATA.TRAIN.TRANSFORMS.0.total_num_crops=3", "config.DATA.TRAIN.TRANSFORMS"),
    ("config.MODEL.HEAD.PARAMS.1.0.1.dims=[512,64]", "config.MODEL.HEAD.PARAMS"),
    ("config.MODEL.BASE_MODEL_NAME=multi_input_output_model", "config.MODEL.BASE_MODEL_NAME"),
]


@pytest.mark.parametrize("override,key", BAD_CISSL)
def test_bad_cissl_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose(["config=pretrain/cissl/cissl_resnet18_digits", override])


def test_cissl_on_several_processes_needs_equal_batches():
    two_processes = ["config=pretrain/cissl/cissl_resnet18_digits", "config.DISTRIBUTED.NUM_PROC_PER_NODE=2"]
    compose(two_processes)
    with pytest.raises(ConfigError, match=r"config\.DATA\.TRAIN\.DROP_LAST"):
        compose([*two_processes, "config.DATA.TRAIN.DROP_LAST=false"])


def test_folder_datasets_need_only_data_paths(tmp_path):
    from vissl.data.dataset_catalog import get_data_files

    (tmp_path / "n01440764").mkdir()
    _, config = compose(["config=pretrain/dissl", f"config.DATA.TRAIN.DATA_PATHS=[{tmp_path}]"])
    assert config.DATA.TRAIN.LABEL_PATHS == [str(tmp_path)]
    # VISSL would otherwise look 'imagenet1k_folder' up in a dataset catalog the wheel lacks.
    assert get_data_files("TRAIN", config.DATA) == [[str(tmp_path)], [str(tmp_path)]]
    _, digits = compose(["config=pretrain/dissl/dissl_resnet18_digits"])
    assert digits.DATA.TRAIN.LABEL_PATHS == []


W_MSE = {  # the authors' README commands: dataset -> (epochs, lr, emb, w_size, W-MSE 2 w_iter)
    "cifar10": (1000, 3e-3, 64, 128, 1),
    "cifar100": (1000, 3e-3, 64, 128, 1),
    "stl10": (2000, 2e-3, 128, 256, 4),
    "tinyimagenet": (1000, 2e-3, 128, 256, 4),
}


@pytest.mark.parametrize("views", [4, 2])
@pytest.mark.parametrize("dataset", sorted(W_MSE))
def test_w_mse_recipes_compose_with_the_authors_settings(dataset, views):
    _, config = compose([f"config=pretrain/w_mse/w_mse{views}_resnet18_{dataset}"])
    epochs, lr, emb, w_size, w_iter = W_MSE[dataset]
    block = config.LOSS.w_mse_loss
    assert (block.num_samples, block.embedding_dim, block.w_size) == (views, emb, w_size)
    assert block.w_iter == (1 if views == 4 else w_iter)
    assert config.DATA.TRAIN.TRANSFORMS[0] == {"name": "ImgReplicatePil", "num_times": views}
    batch = config.DATA.TRAIN.BATCHSIZE_PER_REPLICA
    assert batch == (256 if views == 4 else 512)
    assert config.OPTIMIZER.num_epochs == epochs and config.OPTIMIZER.name == "adam"
    schedule = config.OPTIMIZER.param_schedulers.lr
    assert [s.get("end_value", s.get("value")) for s in schedule.schedulers] == pytest.approx(
        [lr, lr, 0.2 * lr, 0.04 * lr]
    )
    images = {"cifar10": 50000, "cifar100": 50000, "stl10": 105000, "tinyimagenet": 100000}[dataset]
    steps = images // batch * epochs
    assert schedule.lengths[0] * steps == pytest.approx(500)  # 500 warm-up iterations
    assert sum(schedule.lengths[:2]) * epochs == pytest.approx(epochs - 50)  # x0.2 at E - 50, E - 25
    assert schedule.lengths[2] * epochs == pytest.approx(25)
    assert config.MODEL.TRUNK.TV_RESNET.SMALL_IMAGE_STEM
    assert config.MODEL.TRUNK.TV_RESNET.MAXPOOL == (dataset not in ("cifar10", "cifar100"))  # 32 px: none
    assert config.CHECKPOINT.CHECKPOINT_FREQUENCY == 100


@pytest.mark.parametrize("views", [4, 2])
def test_w_mse_imagenet100_recipes_compose_with_the_authors_readme_command(views):
    # The authors' final README, ImageNet-100: --dataset imagenet --epoch 240 --lr 2e-3 --emb 128
    # --w_size 256 --crop_s0 0.08 --cj0 0.8 --cj1 0.8 --cj2 0.8 --cj3 0.2 --gs_p 0.2, and for
    # W-MSE 4 --num_samples 4 --bs 256 (W-MSE 2: the defaults, 2 views, bs 512, w_iter 1).
    # The authors' order, as written; with DEVICE_AUGMENTATION the flip moves ahead of the colour steps.
    _, config = compose(
        [f"config=pretrain/w_mse/w_mse{views}_resnet18_imagenet100", "config.DATA.TRAIN.DEVICE_AUGMENTATION=False"]
    )
    block = config.LOSS.w_mse_loss
    assert (block.num_samples, block.embedding_dim, block.w_size, block.w_iter) == (views, 128, 256, 1)
    batch = config.DATA.TRAIN.BATCHSIZE_PER_REPLICA
    assert batch == (256 if views == 4 else 512)
    assert config.OPTIMIZER.num_epochs == 240 and config.OPTIMIZER.name == "adam"
    assert config.OPTIMIZER.weight_decay == pytest.approx(1e-6)
    schedule = config.OPTIMIZER.param_schedulers.lr
    lr = 2e-3
    assert [s.get("end_value", s.get("value")) for s in schedule.schedulers] == pytest.approx(
        [lr, lr, 0.2 * lr, 0.04 * lr]
    )
    assert sum(schedule.lengths) == pytest.approx(1)
    assert schedule.lengths[0] * (126689 // batch * 240) == pytest.approx(500)  # 500 warm-up iterations
    assert sum(schedule.lengths[:2]) * 240 == pytest.approx(190)  # x0.2 at E - 50 and E - 25
    assert schedule.lengths[2] * 240 == pytest.approx(25)
    # The standard ImageNet stem (the authors' model.py changes conv1 for every other dataset).
    assert not config.MODEL.TRUNK.TV_RESNET.SMALL_IMAGE_STEM and config.MODEL.TRUNK.TV_RESNET.MAXPOOL
    assert config.DATA.TRAIN.DATA_SOURCES == ["disk_folder"]
    transforms = {t["name"]: {k: v for k, v in t.items() if k != "name"} for t in config.DATA.TRAIN.TRANSFORMS}
    assert list(transforms)[0] == "ImgReplicatePil" and transforms["ImgReplicatePil"]["num_times"] == views
    assert transforms["RandomResizedCrop"] == {"size": 224, "scale": [0.08, 1.0], "interpolation": 3}
    assert transforms["ImgPilRandomColorJitter"] == {"strength": 1.0, "p": 0.8}  # ColorJitter(0.8, 0.8, 0.8, 0.2)
    assert transforms["RandomGrayscale"] == {"p": 0.2} and transforms["RandomHorizontalFlip"] == {"p": 0.5}
    assert transforms["ImgPilGaussianBlur"] == {"p": 0.5, "radius_min": 0.1, "radius_max": 2.0}
    names = list(transforms)
    assert names.index("ImgPilGaussianBlur") == names.index("RandomHorizontalFlip") + 1  # blur after the flip
    assert transforms["Normalize"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_w_mse_imagenet100_transforms_build_four_224px_views_with_the_blur():
    from PIL import Image
    from vissl.data.ssl_transforms import get_transform

    # The PIL pipeline as written, which the device augmentation reproduces in distribution.
    _, config = compose(
        ["config=pretrain/w_mse/w_mse4_resnet18_imagenet100", "config.DATA.TRAIN.DEVICE_AUGMENTATION=False"]
    )
    transform = get_transform(config.DATA.TRAIN.TRANSFORMS)
    sample = {
        "data": [Image.new("RGB", (500, 375), (120, 60, 30))],
        "label": [0],
        "data_valid": [True],
        "data_idx": [0],
    }
    views = transform(sample)["data"]
    assert len(views) == 4 and all(tuple(v.shape) == (3, 224, 224) for v in views)
    blur = [t.transform for t in transform.transforms if type(t.transform).__name__ == "ImgPilGaussianBlur"]
    assert [(b.prob, b.radius_min, b.radius_max) for b in blur] == [(0.5, 0.1, 2.0)]
    jitter = [t.transform for t in transform.transforms if type(t.transform).__name__ == "ImgPilRandomColorJitter"]
    assert [(j.p, j.strength) for j in jitter] == [(0.8, 1.0)]


def test_stl10_unlabeled_source_reads_an_existing_root_and_never_downloads(tmp_path):
    from vissl.data import build_dataset

    _, config = compose(["config=pretrain/w_mse/w_mse4_resnet18_stl10", f"config.DATA.TRAIN.DATA_PATHS=[{tmp_path}]"])
    with pytest.raises(RuntimeError, match="Dataset not found"):
        build_dataset(config, "TRAIN")
    assert list(tmp_path.iterdir()) == []
