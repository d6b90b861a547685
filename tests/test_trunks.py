"""``tv_resnet``, ``resnet_resizer`` and the dimension resizer: checkpoint compatibility with
VISSL's ``resnet`` and with the authors' torch.hub layout, ``resnet_resizer``'s init equal to
VISSL's, the small-image stem, feature keys, config errors."""

import copy
import functools
import math
from pathlib import Path
from typing import Any, Dict, Optional

import vissl_issl.plugin  # noqa: F401  (compat shims + registration)
from vissl_issl.plugin.trunks import ResNeXtResizer, TorchvisionResNet

import pytest
import torch
import torch.nn as nn
import torchvision
import vissl.config
from omegaconf import OmegaConf
from vissl.config import AttrDict
from vissl.models.trunks import get_model_trunk
from vissl.models.trunks.feature_extractor import FeatureExtractorModel

from vissl_issl.architectures.resizer import BottleneckExpand
from vissl_issl.architectures.resnet import ArchitectureError, ResNetArch, build_resnet
from vissl_issl.config import ConfigError

# 2048*512 (conv1) + 512*512*9 (conv2) + 512*8192 (conv3) + 2*(512 + 512 + 8192) (BN affine)
RESIZER_50_TO_8192_PARAMS = 7_620_608
# torchvision's resnet50 (25,557,032) without its fc (2048*1000 + 1000)
RESNET_50_TRUNK_PARAMS = 23_508_032


@functools.lru_cache(maxsize=None)
def default_model_config() -> Dict[str, Any]:
    # OmegaConf, as VISSL's hydra composition does: plain YAML reads 1e-5 as a string.
    defaults = OmegaConf.load(Path(vissl.config.__file__).with_name("defaults.yaml"))
    return OmegaConf.to_container(defaults.config.MODEL, resolve=True)


def model_config(tv_resnet: Optional[Dict[str, Any]] = None, **model_overrides: Any) -> AttrDict:
    config = AttrDict(copy.deepcopy(default_model_config()))
    config.TRUNK.NAME = "tv_resnet"
    if tv_resnet is not None:
        config.TRUNK.TV_RESNET = AttrDict(tv_resnet)
    config.update(model_overrides)
    return config


def tv_resnet(**block: Any) -> TorchvisionResNet:
    return get_model_trunk("tv_resnet")(model_config(block), "tv_resnet")


RESIZER_8192 = {"HIDDEN_DIM": 512, "OUT_DIM": 8192}


def resnet_resizer_config(block: Optional[Dict[str, Any]] = RESIZER_8192, **resnets: Any) -> AttrDict:
    """VISSL's defaults (``RESNETS.DEPTH`` 50) with trunk ``resnet_resizer``; ``block=None`` leaves
    ``RESNET_RESIZER`` out."""
    config = model_config()
    config.TRUNK.NAME = "resnet_resizer"
    config.TRUNK.RESNETS.update(resnets)
    if block is not None:
        config.TRUNK.RESNET_RESIZER = AttrDict(block)
    return config


def build_trunk(name: str, config: AttrDict) -> nn.Module:
    return get_model_trunk(name)(config, name)


def train_bn_statistics(model: nn.Module, *inputs: Any) -> None:
    """One train-mode pass so BN running stats differ from their init and eval mode uses them."""
    model.train()
    with torch.no_grad():
        model(*inputs)
    model.eval()


def test_registered_name():
    assert get_model_trunk("tv_resnet") is TorchvisionResNet


@pytest.mark.slow
def test_depth_50_checkpoints_interchange_with_vissl_resnet():
    torch.manual_seed(0)
    config = model_config({"DEPTH": 50})
    vissl_resnet = get_model_trunk("resnet")(config, "resnet")
    ours = get_model_trunk("tv_resnet")(config, "tv_resnet")
    vissl_shapes = {k: v.shape for k, v in vissl_resnet.state_dict().items()}
    our_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert our_shapes == vissl_shapes
    assert ours.feat_eval_mapping == vissl_resnet.feat_eval_mapping

    x = torch.randn(2, 3, 32, 32)
    # VISSL's resnet cannot take out_feat_keys=None
    train_bn_statistics(vissl_resnet, x, [])
    ours.load_state_dict(vissl_resnet.state_dict(), strict=True)
    ours.eval()
    keys = list(vissl_resnet.feat_eval_mapping)
    with torch.no_grad():
        expected = vissl_resnet(x, keys)
        actual = ours(x, keys)
    assert len(actual) == len(keys)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_resizer_widens_depth_50_to_8192_and_loads_into_the_hub_layout():
    torch.manual_seed(0)
    trunk = tv_resnet(DEPTH=50, RESIZER={"HIDDEN_DIM": 512, "OUT_DIM": 8192})
    assert sum(p.numel() for p in trunk.parameters()) == RESNET_50_TRUNK_PARAMS + RESIZER_50_TO_8192_PARAMS
    assert trunk.feat_eval_mapping["resizer"] == "resizer"
    assert list(trunk._feature_blocks)[-4:] == ["layer4", "resizer", "avgpool", "flatten"]

    # 64 px leaves layer4 at 2x2, so the resizer's padded 3x3 conv is exercised.
    x = torch.randn(2, 3, 64, 64)
    train_bn_statistics(trunk, x)
    with torch.no_grad():
        res5avg, features = trunk(x, ["res5avg", "flatten"])
    assert res5avg.shape == (2, 8192, 1, 1) and features.shape == (2, 8192)
    assert features.min() >= 0

    assert_hub_layout_gives_the_same_features(trunk, x, features)


def assert_hub_layout_gives_the_same_features(trunk: nn.Module, x: torch.Tensor, features: torch.Tensor) -> None:
    """What the authors' hubconf loads: the fork's trunk weights, with the resizer under avgpool.0.,
    strict into torchvision's resnet50, giving ``features`` on ``x`` (``trunk`` in eval mode)."""
    hub_state = {
        key.replace("_feature_blocks.resizer.", "avgpool.0.").replace("_feature_blocks.", ""): value
        for key, value in trunk.state_dict().items()
    }
    hub = torchvision.models.resnet50(weights=None)
    hub.avgpool = nn.Sequential(BottleneckExpand(2048, 512, 8192), nn.AdaptiveAvgPool2d(1))
    hub.fc = nn.Identity()
    hub.load_state_dict(hub_state, strict=True)
    hub.eval()
    with torch.no_grad():
        assert (hub(x) - features).abs().max() < 1e-4


def reference_bottleneck_expand(block: BottleneckExpand, x: torch.Tensor, residual: bool) -> torch.Tensor:
    """Eval-mode transcription of the authors' BottleneckExpand.forward with ``einops.repeat``'s
    tile-major channel order written out: ``relu(branch + tiled x)``, or ``relu(branch)`` when not
    ``residual``."""

    def bn(name: str, y: torch.Tensor) -> torch.Tensor:
        layer = getattr(block, name)
        shape = (1, -1, 1, 1)
        normalized = (y - layer.running_mean.view(shape)) / torch.sqrt(layer.running_var.view(shape) + layer.eps)
        return normalized * layer.weight.view(shape) + layer.bias.view(shape)

    out = torch.relu(bn("bn1", nn.functional.conv2d(x, block.conv1.weight)))
    out = torch.relu(bn("bn2", nn.functional.conv2d(out, block.conv2.weight, padding=1)))
    out = bn("bn3", nn.functional.conv2d(out, block.conv3.weight))
    if not residual:
        return torch.relu(out)
    tiles = out.shape[1] // x.shape[1]
    return torch.relu(out + torch.cat([x] * tiles, dim=1))


def test_bottleneck_expand_matches_reference_transcription():
    torch.manual_seed(0)
    block = BottleneckExpand(8, 4, 24)
    x = torch.randn(3, 8, 5, 5)
    train_bn_statistics(block, x)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_bottleneck_expand(block, x, residual=True))
        # With the branch zeroed, output channel k * in + c must be relu(x[:, c]).
        block.bn3.weight.zero_()
        block.bn3.bias.zero_()
        torch.testing.assert_close(block(x), torch.relu(x).repeat(1, 3, 1, 1))


@pytest.mark.parametrize("out_dim, residual", [(128, False), (512, True), (2048, True), (8192, True)])
def test_resizer_on_resnet_18_for_any_z(out_dim: int, residual: bool):
    """ISSL's Fig. 7c: every z through the 512-hidden resizer of the TinyImageNet ResNet-18, residual
    with the input tiled z / 512 times (expansion 1 at z = 512), plain below 512."""
    torch.manual_seed(0)
    trunk = tv_resnet(DEPTH=18, SMALL_IMAGE_STEM=True, MAXPOOL=True, RESIZER={"HIDDEN_DIM": 512, "OUT_DIM": out_dim})
    resizer = trunk._feature_blocks["resizer"]
    assert isinstance(resizer, BottleneckExpand) and resizer.is_residual is residual

    # 64 px leaves layer4 at 4x4, so the resizer's padded 3x3 conv is exercised.
    x = torch.randn(2, 3, 64, 64)
    train_bn_statistics(trunk, x)
    with torch.no_grad():
        res5, resizer_out, features = trunk(x, ["res5", "resizer", "flatten"])
        expected = reference_bottleneck_expand(resizer, res5, residual=residual)
    assert res5.shape == (2, 512, 4, 4) and features.shape == (2, out_dim)
    torch.testing.assert_close(resizer_out, expected)
    torch.testing.assert_close(features, resizer_out.mean(dim=(2, 3)))


def test_bottleneck_expand_init():
    torch.manual_seed(0)
    block = BottleneckExpand(256, 128, 1024)
    assert block.conv1.weight.std().item() == pytest.approx(1 / math.sqrt(128), rel=0.03)
    for conv in (block.conv2, block.conv3):
        fan_in = conv.weight[0].numel()
        target_std = math.sqrt(1 / fan_in)
        assert conv.weight.std().item() == pytest.approx(target_std, rel=0.03)
        assert conv.weight.abs().max().item() <= 2 * target_std / 0.87962566103423978 + 1e-7
    for bn in (block.bn1, block.bn2, block.bn3):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert all(conv.bias is None for conv in (block.conv1, block.conv2, block.conv3))


@pytest.mark.parametrize("maxpool", [True, False])
@pytest.mark.parametrize("size", [16, 32])
def test_small_image_stem_spatial_path(maxpool: bool, size: int):
    torch.manual_seed(0)
    trunk = tv_resnet(DEPTH=18, SMALL_IMAGE_STEM=True, MAXPOOL=maxpool)
    conv1 = trunk._feature_blocks["conv1"]
    assert (conv1.kernel_size, conv1.stride, conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert conv1.bias is None
    assert isinstance(trunk._feature_blocks["maxpool"], nn.MaxPool2d if maxpool else nn.Identity)

    x = torch.randn(2, 3, size, size)
    # stride 1 stem, then x1/2 for the maxpool and x1/8 over layer2..layer4
    layer4_size = (size // 2 if maxpool else size) // 8
    res4, layer4, res5avg = trunk(x, ["res4", "res5", "res5avg"])
    assert res4.shape == (2, 256, 2 * layer4_size, 2 * layer4_size)
    assert layer4.shape == (2, 512, layer4_size, layer4_size)
    assert res5avg.shape == (2, 512, 1, 1)


def test_default_stem_is_torchvisions():
    trunk = tv_resnet(DEPTH=18)
    conv1 = trunk._feature_blocks["conv1"]
    assert (conv1.kernel_size, conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(trunk._feature_blocks["maxpool"], nn.MaxPool2d)
    assert "resizer" not in trunk._feature_blocks and "resizer" not in trunk.feat_eval_mapping
    (features,) = trunk(torch.randn(2, 3, 16, 16))  # no keys: the last block
    assert features.shape == (2, 512)


def test_missing_block_defaults_to_resnet_50():
    trunk = get_model_trunk("tv_resnet")(model_config(), "tv_resnet")
    assert len(trunk._feature_blocks["layer3"]) == 6  # ResNet-50's (3, 4, 6, 3)
    assert trunk._feature_blocks["layer4"][-1].conv3.out_channels == 2048


def test_vissl_feature_extractor_runs_on_resizer_features():
    config = model_config({"DEPTH": 18, "SMALL_IMAGE_STEM": True, "RESIZER": {"HIDDEN_DIM": 64, "OUT_DIM": 1024}})
    config.FEATURE_EVAL_SETTINGS.LINEAR_EVAL_FEAT_POOL_OPS_MAP = [
        ["res5", ["AdaptiveAvgPool2d", [[1, 1]]]],
        ["resizer", ["AdaptiveAvgPool2d", [[1, 1]]]],
    ]
    config.FEATURE_EVAL_SETTINGS.SHOULD_FLATTEN_FEATS = True
    extractor = FeatureExtractorModel(config)
    res5, resizer = extractor(torch.randn(2, 3, 16, 16), ["res5", "resizer"])
    assert res5.shape == (2, 512) and resizer.shape == (2, 1024)


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_output():
    torch.manual_seed(0)
    block = {"DEPTH": 18, "SMALL_IMAGE_STEM": True}
    plain = get_model_trunk("tv_resnet")(model_config(block), "tv_resnet")
    config = model_config(block)
    config.ACTIVATION_CHECKPOINTING.USE_ACTIVATION_CHECKPOINTING = True
    checkpointed = get_model_trunk("tv_resnet")(config, "tv_resnet")
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.use_checkpointing
    x = torch.randn(2, 3, 16, 16)
    expected = plain(x)[0]
    actual = checkpointed(x.clone())[0]
    torch.testing.assert_close(actual, expected)
    actual.sum().backward()
    assert checkpointed._feature_blocks["conv1"].weight.grad is not None


@pytest.mark.parametrize(
    "block, key",
    [
        ({"DEPHT": 18}, "config.MODEL.TRUNK.TV_RESNET.DEPHT"),
        ({"DEPTH": 26}, "config.MODEL.TRUNK.TV_RESNET.DEPTH"),
        ({"DEPTH": 18, "RESIZER": {"OUT_DIM": 2048}}, "config.MODEL.TRUNK.TV_RESNET.RESIZER"),
        ({"DEPTH": 18, "RESIZER": {"HIDDEN_DIM": 64, "OUT_DIM": 1000}}, "config.MODEL.TRUNK.TV_RESNET.RESIZER.OUT_DIM"),
    ],
)
def test_config_errors_name_the_key(block: Dict[str, Any], key: str):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        tv_resnet(**block)


def test_resizer_out_larger_than_in_but_not_a_multiple_fails_naming_key_and_numbers():
    with pytest.raises(ValueError, match="out_channels=1000 is larger than in_channels=512 but not a multiple"):
        BottleneckExpand(512, 512, 1000)
    with pytest.raises(ArchitectureError, match=r"output channels \(1000\).*last channel count 512"):
        build_resnet(ResNetArch(18, resizer=(512, 1000)))
    key = r"config\.MODEL\.TRUNK\.TV_RESNET\.RESIZER\.OUT_DIM=1000"
    with pytest.raises(ConfigError, match=key + r".*last channel count 512"):
        tv_resnet(DEPTH=18, SMALL_IMAGE_STEM=True, RESIZER={"HIDDEN_DIM": 512, "OUT_DIM": 1000})


def test_single_channel_input_type_is_rejected():
    with pytest.raises(ValueError, match=r"config\.MODEL\.INPUT_TYPE"):
        get_model_trunk("tv_resnet")(model_config({"DEPTH": 18}, INPUT_TYPE="lab"), "tv_resnet")


@pytest.mark.slow
def test_resnet_resizer_is_vissl_resnet_plus_the_resizer_with_the_same_init():
    assert get_model_trunk("resnet_resizer") is ResNeXtResizer
    config = resnet_resizer_config()
    torch.manual_seed(0)
    vissl_resnet = build_trunk("resnet", config)
    torch.manual_seed(0)
    ours = build_trunk("resnet_resizer", config)
    assert isinstance(ours, get_model_trunk("resnet"))

    vissl_state, our_state = vissl_resnet.state_dict(), ours.state_dict()
    resizer_keys = [key for key in our_state if key.startswith("_feature_blocks.resizer.")]
    assert resizer_keys and [key for key in our_state if key not in resizer_keys] == list(vissl_state)
    for key, value in vissl_state.items():
        assert torch.equal(our_state[key], value), key  # VISSL's init, not torchvision's
    assert list(ours._feature_blocks)[-4:] == ["layer4", "resizer", "avgpool", "flatten"]
    assert ours.feat_eval_mapping == {**vissl_resnet.feat_eval_mapping, "resizer": "resizer"}
    resizer = ours._feature_blocks["resizer"]
    assert isinstance(resizer, BottleneckExpand)
    assert sum(p.numel() for p in resizer.parameters()) == RESIZER_50_TO_8192_PARAMS


@pytest.mark.slow
def test_resnet_resizer_features_checkpoint_and_hub_layout():
    torch.manual_seed(0)
    ours = build_trunk("resnet_resizer", resnet_resizer_config())
    # 64 px leaves layer4 at 2x2, so the resizer's padded 3x3 conv is exercised.
    x = torch.randn(2, 3, 64, 64)
    train_bn_statistics(ours, x, [])
    with torch.no_grad():
        res5, resizer_out, features = ours(x, ["res5", "resizer", "flatten"])
    assert resizer_out.shape == (2, 8192, 2, 2) and features.shape == (2, 8192)

    # Its checkpoint minus the resizer loads strict into VISSL's resnet, which then gives the same
    # layer4 output; resizer -> avgpool on top gives our features.
    vissl_resnet = build_trunk("resnet", resnet_resizer_config())
    vissl_resnet.load_state_dict(
        {k: v for k, v in ours.state_dict().items() if not k.startswith("_feature_blocks.resizer.")}, strict=True
    )
    vissl_resnet.eval()
    with torch.no_grad():
        (vissl_res5,) = vissl_resnet(x, ["res5"])
        expected = nn.functional.adaptive_avg_pool2d(ours._feature_blocks["resizer"](vissl_res5), 1).flatten(1)
    torch.testing.assert_close(vissl_res5, res5, rtol=0, atol=1e-6)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)

    assert_hub_layout_gives_the_same_features(ours, x, features)


def test_resnet_resizer_reads_its_input_width_from_layer4():
    trunk = build_trunk("resnet_resizer", resnet_resizer_config(WIDTH_MULTIPLIER=2))
    resizer = trunk._feature_blocks["resizer"]
    assert resizer.conv1.in_channels == 4096 and resizer.bn3.num_features == 8192


@pytest.mark.parametrize(
    "block, key",
    [
        (None, "config.MODEL.TRUNK.RESNET_RESIZER.HIDDEN_DIM"),
        ({"OUT_DIM": 8192}, "config.MODEL.TRUNK.RESNET_RESIZER.HIDDEN_DIM"),
        ({"HIDDEN_DIM": 512}, "config.MODEL.TRUNK.RESNET_RESIZER.OUT_DIM"),
        ({**RESIZER_8192, "IN_DIM": 2048}, "config.MODEL.TRUNK.RESNET_RESIZER.IN_DIM"),
        ({"HIDDEN_DIM": 512, "OUT_DIM": 3000}, "config.MODEL.TRUNK.RESNET_RESIZER.OUT_DIM"),
    ],
)
def test_resnet_resizer_config_errors_name_the_key(block: Optional[Dict[str, Any]], key: str):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_trunk("resnet_resizer", resnet_resizer_config(block))
