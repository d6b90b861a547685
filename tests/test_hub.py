"""vissl_issl/hub.py, weights.load_trunk, hubconf.py and tools/convert_to_torchvision.py: plugin
checkpoints converted to torchvision ResNets give VISSL's features; every hub entrypoint builds,
loads the authors' release layout strictly, and works without VISSL; the converter CLI end to end.
Nothing is downloaded."""

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import vissl_issl.plugin  # noqa: F401  (registers the plugin's trunks)
from vissl_issl.plugin.launcher import compose

import pytest
import torch
import torch.nn as nn
import torchvision
import yaml
from PIL import Image
from torchvision.models.resnet import Bottleneck, ResNet
from vissl.models import build_model

from conftest import REPO, run_tool
from vissl_issl import hub, weights

CONVERTER = REPO / "tools" / "convert_to_torchvision.py"
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS="1")  # see one_thread
RELEASE_URL = "https://github.com/YannDubs/Invariant-Self-Supervised-Learning/releases/download/v1.0.0-alpha"
RELEASES = {
    "dissl_resnet50_dNone_e100_m2": 2048,
    "dissl_resnet50_d8192_e100_m2": 8192,
    "dissl_resnet50_d8192_e100_m6": 8192,
    "dissl_resnet50_dNone_e400_m2": 2048,
    "dissl_resnet50_dNone_e400_m6": 2048,
    "dissl_resnet50_d8192_e400_m6": 8192,
    "dissl_resnet50_d8192_e800_m8": 8192,
}
# The authors' hubconf "num_params" of the two release architectures.
NUM_PARAMS = {2048: 23_508_032, 8192: 31_128_640}


def resnet18_resizer_case(out_dim: int) -> Tuple[List[str], hub.ResNetArch]:
    """The digits ResNet-18 (small-image stem, maxpool) with the resizer 512 -> 512 -> ``out_dim``."""
    overrides = [
        "config=pretrain/dissl/dissl_resnet18_digits",
        f"+config.MODEL.TRUNK.TV_RESNET.RESIZER={{HIDDEN_DIM:512,OUT_DIM:{out_dim}}}",
    ]
    return overrides, hub.ResNetArch(18, small_image_stem=True, maxpool=True, resizer=(512, out_dim))


# Each case: overrides of a shipped config, and the architecture they train.
CASES = {
    "resnet_d2048": (["config=pretrain/dissl/dissl_resnet50_dNone_e100_m2"], hub.ResNetArch(50)),
    "resnet_resizer_d8192": (
        ["config=pretrain/dissl/dissl_resnet50_d8192_e100_m2"],
        hub.ResNetArch(50, resizer=(512, 8192)),
    ),
    "tv_resnet18_small_stem_no_maxpool": (
        ["config=pretrain/dissl/dissl_resnet18_digits", "config.MODEL.TRUNK.TV_RESNET.MAXPOOL=false"],
        hub.ResNetArch(18, small_image_stem=True, maxpool=False),
    ),
    # ISSL's TinyImageNet ResNet-18 with the resizer: residual (input tiled x4), and not (z < 512).
    "tv_resnet18_resizer_d2048": resnet18_resizer_case(2048),
    "tv_resnet18_resizer_d128": resnet18_resizer_case(128),
}
TV18 = "tv_resnet18_small_stem_no_maxpool"


@dataclass(frozen=True)
class VisslRun:
    """A fake run of a shipped config: ``checkpoint`` in VISSL's format next to the
    ``train_config.yaml`` the launcher writes, and the VISSL trunk's eval features of ``inputs``."""

    checkpoint: Path
    arch: hub.ResNetArch
    inputs: torch.Tensor
    features: torch.Tensor


def vissl_checkpoint(trunk: Dict[str, torch.Tensor], heads: Dict[str, torch.Tensor]) -> dict:
    return {"classy_state_dict": {"base_model": {"model": {"trunk": trunk, "heads": heads}}}}


def features_with_trained_batch_norms(trunk: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Eval-mode features of ``inputs`` after moving every BN away from its init: affine params off
    (1, 0) and running stats set to one batch's statistics (momentum 1), so a BN loaded into the
    wrong place changes the features."""
    with torch.no_grad():
        for module in trunk.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.momentum = 1.0
        trunk.train()
        trunk(inputs, [])  # VISSL's resnet cannot take out_feat_keys=None
        trunk.eval()
        return trunk(inputs, [])[0]


@functools.lru_cache(maxsize=None)
def vissl_run(case: str, root: Path) -> VisslRun:
    overrides, arch = CASES[case]
    out = root / case
    _, config = compose([*overrides, f"config.CHECKPOINT.DIR={out}"], dump_config=True)
    torch.manual_seed(0)
    model = build_model(config.MODEL, config.OPTIMIZER)
    # 64 px keeps CPU time low and leaves the resizer's 3x3 conv a 2x2 map on ResNet-50.
    inputs = torch.randn(2, 3, 64, 64)
    features = features_with_trained_batch_norms(model.trunk, inputs)
    checkpoint = out / "checkpoint.torch"
    torch.save(vissl_checkpoint(model.trunk.state_dict(), model.heads.state_dict()), checkpoint)
    return VisslRun(checkpoint, arch, inputs, features)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(params=list(CASES))
def run(request, runs_root) -> VisslRun:
    return vissl_run(request.param, runs_root)


def hub_load(name: str, *args, **kwargs) -> nn.Module:
    return torch.hub.load(str(REPO), name, *args, source="local", **kwargs)


def max_abs_diff(model: nn.Module, run: VisslRun) -> float:
    with torch.no_grad():
        return (model.eval()(run.inputs) - run.features).abs().max().item()


@pytest.mark.slow
def test_from_checkpoint_gives_the_vissl_trunk_features(run):
    model = hub_load("from_checkpoint", str(run.checkpoint))
    assert run.features.shape == (2, run.arch.feature_dim)
    assert max_abs_diff(model, run) < 1e-4


@pytest.mark.slow
def test_train_config_and_weight_shapes_give_the_trained_architecture(run):
    assert hub.arch_from_train_config(hub.train_config_path(run.checkpoint)) == run.arch
    trunk = hub.read_vissl_trunk(run.checkpoint)
    state = hub.vissl_to_torchvision(trunk, run.checkpoint)
    assert hub.arch_from_state_dict(state, maxpool=run.arch.maxpool, source=run.checkpoint) == run.arch


@pytest.mark.slow
def test_without_train_config_maxpool_comes_from_the_argument(runs_root, tmp_path):
    run = vissl_run(TV18, runs_root)
    checkpoint = tmp_path / "checkpoint.torch"  # a folder without train_config.yaml
    torch.save(vissl_checkpoint(hub.read_vissl_trunk(run.checkpoint), {}), checkpoint)

    model, loaded = weights.load_trunk(str(checkpoint), maxpool=False)
    assert loaded.arch == run.arch
    assert max_abs_diff(model, run) < 1e-4
    model, loaded = weights.load_trunk(str(checkpoint))
    assert loaded.arch.maxpool and max_abs_diff(model, run) > 1e-2


@pytest.mark.slow
def test_maxpool_contradicting_the_train_config_fails_naming_it(runs_root):
    run = vissl_run(TV18, runs_root)
    with pytest.raises(hub.CheckpointError, match="train_config.yaml, whose trunk has maxpool=False"):
        weights.load_trunk(str(run.checkpoint), maxpool=True)


@pytest.mark.slow
def test_converter_cli_writes_the_release_layout_that_hubconf_loads(runs_root, tmp_path):
    run = vissl_run("resnet_resizer_d8192", runs_root)
    out = tmp_path / "dissl_d8192.torch"
    result = run_tool([CONVERTER, run.checkpoint, out], tmp_path, OMP_NUM_THREADS="1")  # see one_thread
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ResNet-50, 7x7 stride-2 stem, maxpool, resizer 2048->512->8192" in result.stdout
    assert "feature dim: 8192" in result.stdout

    keys = list(torch.load(out, map_location="cpu", weights_only=True))
    assert "resizer.conv1.weight" in keys and "layer4.2.bn3.running_var" in keys
    assert not [key for key in keys if key.startswith(("avgpool", "_feature_blocks", "fc"))]
    model = hub_load("dissl_resnet50_d8192_e100_m2", weights=str(out))
    assert max_abs_diff(model, run) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("out_dim, residual", [(2048, True), (128, False)])
def test_converter_cli_exports_a_resnet18_resizer_that_hub_code_loads(out_dim, residual, runs_root, tmp_path):
    run = vissl_run(f"tv_resnet18_resizer_d{out_dim}", runs_root)
    out = tmp_path / "tv_resnet18.torch"
    result = run_tool([CONVERTER, run.checkpoint, out], tmp_path, OMP_NUM_THREADS="1")  # see one_thread
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ResNet-18, 3x3 stride-1 stem, maxpool, resizer 512->512->{out_dim}" in result.stdout
    assert f"feature dim: {out_dim}" in result.stdout

    state = hub.read_weights_file(str(out))
    assert state["avgpool.0.conv3.weight"].shape == (out_dim, 512, 1, 1)
    arch = hub.arch_from_state_dict(state, maxpool=True, source=out)
    assert arch == run.arch
    model = hub.build_resnet(arch)
    hub.load_weights(model, state, out)
    assert model.avgpool[0].is_residual is residual
    assert max_abs_diff(model, run) < 1e-4


@pytest.mark.slow
def test_converter_rejects_a_checkpoint_without_trunk(tmp_path):
    checkpoint = tmp_path / "heads_only.torch"
    torch.save({"classy_state_dict": {"base_model": {"model": {"heads": {}}}}}, checkpoint)
    result = run_tool([CONVERTER, checkpoint, tmp_path / "out.torch"], tmp_path)
    message = result.stderr
    assert result.returncode != 0 and str(checkpoint) in message and "['trunk']" in message
    assert not (tmp_path / "out.torch").exists()


def test_hub_lists_exactly_the_entrypoints():
    # torch.hub.list takes GitHub repos only; this is its rule on the imported hubconf.
    sys.path.insert(0, str(REPO))
    try:
        hubconf = importlib.import_module("hubconf")
    finally:
        sys.path.remove(str(REPO))
    listed = [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")]
    assert sorted(listed) == sorted([*RELEASES, "preprocessor", "from_checkpoint", "compressor"])


@pytest.mark.parametrize("name", list(RELEASES))
def test_release_entrypoint_builds_the_release_architecture(name):
    dim = RELEASES[name]
    model = hub_load(name, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMS[dim]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, dim)


class Downloaded(Exception):
    pass


@pytest.mark.parametrize("name", list(RELEASES))
def test_release_entrypoint_downloads_the_authors_file_by_default(name, monkeypatch):
    def fake_download(url: str, **kwargs):
        raise Downloaded(url)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    with pytest.raises(Downloaded) as downloaded:
        hub_load(name)
    assert downloaded.value.args[0] == f"{RELEASE_URL}/{name}.torch"


def release_like_file(path: Path, layout: str, edit=lambda state: None) -> Dict[str, torch.Tensor]:
    """Writes random weights of the d = 8192 release in ``layout`` ("release": resizer under
    ``resizer.``; "torchvision": under ``avgpool.0.``) after ``edit``; returns them in torchvision's
    layout, before the edit."""
    torch.manual_seed(0)
    model = hub_load("dissl_resnet50_d8192_e100_m2", pretrained=False)
    # Random values everywhere (BN statistics included), so a tensor left at its init is caught.
    state = {key: torch.randn(value.shape).to(value.dtype) for key, value in model.state_dict().items()}
    written = hub.torchvision_to_release(state) if layout == "release" else dict(state)
    edit(written)
    torch.save(written, path)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["release", "torchvision"])
def test_weights_file_loads_strictly_in_either_layout(layout, tmp_path):
    path = tmp_path / "weights.torch"
    expected = release_like_file(path, layout)
    loaded = hub_load("dissl_resnet50_d8192_e100_m2", weights=str(path)).state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)


@pytest.mark.parametrize(
    "edit, named_key",
    [
        (lambda state: state.pop("resizer.bn3.running_var"), "avgpool.0.bn3.running_var"),
        (lambda state: state.update({"fc.weight": torch.zeros(1000, 8192)}), "fc.weight"),
    ],
    ids=["missing", "unexpected"],
)
@pytest.mark.slow
def test_weights_file_that_does_not_fit_fails_naming_key_and_file(edit, named_key, tmp_path):
    path = tmp_path / "weights.torch"
    release_like_file(path, "release", edit)
    with pytest.raises(ValueError, match=named_key) as error:
        hub_load("dissl_resnet50_d8192_e100_m2", weights=str(path))
    assert str(path) in str(error.value)


def test_a_vissl_checkpoint_as_weights_points_to_from_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.torch"
    torch.save(vissl_checkpoint({"_feature_blocks.conv1.weight": torch.zeros(1)}, {}), path)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is a VISSL checkpoint.*from_checkpoint"):
        hub_load("dissl_resnet50_dNone_e100_m2", weights=str(path))


def test_weights_with_pretrained_false_is_refused():
    with pytest.raises(ValueError, match="pretrained=False"):
        hub_load("dissl_resnet50_dNone_e100_m2", pretrained=False, weights="weights.torch")


def test_torchvision_kwargs_reach_the_resnet():
    model = hub_load("dissl_resnet50_dNone_e100_m2", pretrained=False, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    assert isinstance(model.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert isinstance(model.layer4[2].bn3, torchvision.ops.FrozenBatchNorm2d)


def test_preprocessor_maps_an_image_to_a_normalized_224_tensor():
    image = Image.new("RGB", (400, 300), color=(255, 0, 128))
    tensor = hub_load("preprocessor")(image)
    assert tensor.shape == (3, 224, 224)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (torch.tensor([255, 0, 128]) / 255 - mean) / std
    torch.testing.assert_close(tensor[:, 100, 100], expected)


@pytest.mark.slow
def test_hubconf_works_without_vissl(runs_root, tmp_path):
    run = vissl_run(TV18, runs_root)
    reference = tmp_path / "reference.torch"
    torch.save({"inputs": run.inputs, "features": run.features}, reference)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["vissl"] = sys.modules["classy_vision"] = None  # importing them now raises ImportError
        import torch
        reference = torch.load({str(reference)!r})
        release = torch.hub.load({str(REPO)!r}, "dissl_resnet50_d8192_e100_m2", source="local", pretrained=False)
        trunk = torch.hub.load({str(REPO)!r}, "from_checkpoint", {str(run.checkpoint)!r}, source="local")
        with torch.no_grad():
            dim = release.eval()(reference["inputs"]).shape[1]
            diff = (trunk.eval()(reference["inputs"]) - reference["features"]).abs().max().item()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("vissl", "classy_vision") and sys.modules[m])
        print(json.dumps({{"dim": dim, "diff": diff, "loaded": loaded}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"dim": 8192, "diff": pytest.approx(0, abs=1e-4), "loaded": []}


def test_unknown_trunk_key_fails_naming_it(tmp_path):
    path = tmp_path / "checkpoint.torch"
    torch.save(vissl_checkpoint({"base.conv1.weight": torch.zeros(64, 3, 7, 7)}, {}), path)
    message = f"{re.escape(str(path))}: trunk keys base.conv1.weight are not under"
    with pytest.raises(hub.CheckpointError, match=message):
        weights.load_trunk(str(path))


def test_grouped_resnet_weights_fail_naming_the_key_and_shapes(tmp_path):
    # VISSL's resnet with GROUPS 32, WIDTH_PER_GROUP 4 is torchvision's resnext50_32x4d.
    resnext = ResNet(Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4)
    path = tmp_path / "checkpoint.torch"
    state = resnext.state_dict()
    trunk = {f"_feature_blocks.{key}": value for key, value in state.items() if not key.startswith("fc.")}
    torch.save(vissl_checkpoint(trunk, {}), path)
    with pytest.raises(hub.CheckpointError, match=r"layer1.0.conv1.weight: \(128, 64, 1, 1\) in the file") as error:
        weights.load_trunk(str(path))
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "override, named",
    [
        ("config.MODEL.TRUNK.RESNETS.WIDTH_MULTIPLIER=2", "MODEL.TRUNK.RESNETS.WIDTH_MULTIPLIER=2"),
        ("config.MODEL.TRUNK.RESNETS.GROUPS=32", "MODEL.TRUNK.RESNETS.GROUPS=32"),
        ("config.MODEL.INPUT_TYPE=bgr", "MODEL.INPUT_TYPE='bgr'"),
        ("config.MODEL.TRUNK.NAME=vision_transformer", "MODEL.TRUNK.NAME='vision_transformer'"),
    ],
)
def test_unsupported_trunk_in_train_config_fails_naming_the_key(override, named, tmp_path):
    compose(
        ["config=pretrain/dissl/dissl_resnet50_dNone_e100_m2", override, f"config.CHECKPOINT.DIR={tmp_path}"],
        dump_config=True,
    )
    config = tmp_path / "train_config.yaml"
    with pytest.raises(hub.CheckpointError, match=re.escape(f"{config}: {named}")):
        hub.arch_from_train_config(config)


def test_train_config_of_a_tv_resnet_with_the_resizer(tmp_path):
    overrides = [
        "config=pretrain/dissl/dissl_resnet18_digits",
        "+config.MODEL.TRUNK.TV_RESNET.RESIZER={HIDDEN_DIM:128,OUT_DIM:2048}",
        f"config.CHECKPOINT.DIR={tmp_path}",
    ]
    compose(overrides, dump_config=True)
    arch = hub.arch_from_train_config(tmp_path / "train_config.yaml")
    assert arch == hub.ResNetArch(18, small_image_stem=True, maxpool=True, resizer=(128, 2048))
    assert arch.feature_dim == 2048


def test_train_config_without_the_trunk_name_fails_naming_the_key(tmp_path):
    config = tmp_path / "train_config.yaml"
    config.write_text(yaml.dump({"MODEL": {"INPUT_TYPE": "rgb", "TRUNK": {}}}))
    with pytest.raises(hub.CheckpointError, match=re.escape(f"{config} has no MODEL.TRUNK.NAME")):
        hub.arch_from_train_config(config)
