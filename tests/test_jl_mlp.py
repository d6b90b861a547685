"""``jl_mlp`` (VISSL's mlp with the fork's Johnson-Lindenstrauss init) and the linearity of every
CISSL student head."""

import vissl_issl.plugin  # noqa: F401  (compat shims + registration)
from vissl_issl.plugin.launcher import compose

import pytest
import torch
import torch.nn as nn
from vissl.models.heads import get_model_head

from conftest import model_config
from vissl_issl.config import ConfigError, head_modules

OPTIONS = {"use_bn": True, "use_relu": True, "use_bias": False, "skip_last_layer_relu_bn": False}


def test_same_layers_and_keys_as_vissls_mlp():
    jl = get_model_head("jl_mlp")(model_config(), [64, 32, 16], **OPTIONS)
    mlp = get_model_head("mlp")(model_config(), [64, 32, 16], **OPTIONS)
    assert [type(m) for m in jl.clf] == [type(m) for m in mlp.clf]
    assert {k: v.shape for k, v in jl.state_dict().items()} == {k: v.shape for k, v in mlp.state_dict().items()}


@pytest.mark.parametrize("dims", [[2048, 128], [512, 2048]])
def test_weights_are_normal_with_variance_one_over_out_features(dims):
    torch.manual_seed(0)
    (linear,) = [m for m in get_model_head("jl_mlp")(model_config(), dims).clf if isinstance(m, nn.Linear)]
    weight = linear.weight.detach().flatten()
    expected_std = dims[1] ** -0.5
    assert abs(weight.mean().item()) < 0.1 * expected_std
    assert weight.std().item() == pytest.approx(expected_std, rel=0.02)
    # Normal, not PyTorch's uniform default: about 4.6% of draws lie beyond 2 std (uniform: none).
    assert (weight.abs() > 2 * expected_std).float().mean().item() == pytest.approx(0.0455, abs=0.005)


CISSL_CONFIGS = [
    "pretrain/cissl/cissl_resnet50_dNone_e100_m2",
    "pretrain/cissl/cissl_resnet50_d8192_e100_m2",
    "pretrain/cissl/cissl_resnet18_digits",
]


def build_head(config, index: int) -> nn.Sequential:
    modules = head_modules(config.MODEL.HEAD.PARAMS[index])
    return nn.Sequential(*(get_model_head(name)(config.MODEL, **options) for name, options in modules))


@pytest.mark.parametrize("name", CISSL_CONFIGS)
def test_cissl_student_head_is_affine_like_the_probe(name):
    config = compose([f"config={name}"])[1]
    student = build_head(config, 1)
    for bn in student.modules():
        if isinstance(bn, nn.BatchNorm1d):  # non-trivial statistics, as after training
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
    student.eval()
    dim = config.MODEL.HEAD.PARAMS[1][0][1]["dims"][0]
    x, y, zero = torch.randn(4, dim), torch.randn(4, dim), torch.zeros(4, dim)
    a, b = 1.7, -0.6
    with torch.no_grad():
        combined = student(a * x + b * y)
        expected = a * student(x) + b * student(y) + (1 - a - b) * student(zero)
    torch.testing.assert_close(combined, expected, rtol=1e-4, atol=1e-4)
    # The teacher, by contrast, is not affine: the check above can fail.
    teacher = build_head(config, 0).eval()
    with torch.no_grad():
        assert not torch.allclose(
            teacher(a * x + b * y), a * teacher(x) + b * teacher(y) + (1 - a - b) * teacher(zero), atol=1e-3
        )


@pytest.mark.parametrize("flag", ["use_relu", "use_dropout"])
def test_a_nonlinear_student_head_is_refused_naming_the_key(flag):
    with pytest.raises(ConfigError, match=r"config\.MODEL\.HEAD\.PARAMS\[1\]\[0\]"):
        compose(["config=pretrain/cissl/cissl_resnet18_digits", f"+config.MODEL.HEAD.PARAMS.1.0.1.{flag}=true"])
