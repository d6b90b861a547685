"""``residual_mlp``: the fork's ``mlp ... is_residual: True`` head (spec §3.2)."""

from typing import List

import vissl_issl.plugin  # noqa: F401  (compat shims + registration)
from vissl_issl.plugin.heads.residual_mlp import ResidualMLP

import pytest
import torch
import torch.nn as nn
from vissl.models.heads import MODEL_HEADS_REGISTRY, get_model_head

from conftest import model_config


def randomize_batchnorms(module: nn.Module) -> None:
    """Non-default affine parameters and running stats, so eval mode is a real check."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm1d):
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)


class Reference:
    """Independent transcription: per layer ``relu(batchnorm(x @ W.T))``, then ``+ input``."""

    def __init__(self, weights: List[torch.Tensor], bns: List[nn.BatchNorm1d]):
        self.weights = [w.clone() for w in weights]
        self.gammas = [bn.weight.detach().clone() for bn in bns]
        self.betas = [bn.bias.detach().clone() for bn in bns]
        self.means = [bn.running_mean.clone() for bn in bns]
        self.variances = [bn.running_var.clone() for bn in bns]
        self.eps = bns[0].eps
        self.momentum = bns[0].momentum

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        out = x
        for i, weight in enumerate(self.weights):
            out = out @ weight.T
            if training:
                mean, variance = out.mean(0), out.var(0, unbiased=False)
                m = self.momentum
                self.means[i] = (1 - m) * self.means[i] + m * mean
                self.variances[i] = (1 - m) * self.variances[i] + m * out.var(0, unbiased=True)
            else:
                mean, variance = self.means[i], self.variances[i]
            out = (out - mean) / torch.sqrt(variance + self.eps) * self.gammas[i] + self.betas[i]
            out = torch.clamp(out, min=0)
        return out + x


def layers_of(head: ResidualMLP, kind: type) -> List[nn.Module]:
    return [m for m in head.clf if isinstance(m, kind)]


def test_registered_without_clashing_with_vissl_heads():
    assert get_model_head("residual_mlp") is ResidualMLP
    other_heads = [cls for name, cls in MODEL_HEADS_REGISTRY.items() if name != "residual_mlp"]
    assert ResidualMLP.__name__ not in {getattr(cls, "__name__", None) for cls in other_heads}


def test_layout_is_linear_bn_relu_for_every_layer_including_the_last():
    head = get_model_head("residual_mlp")(model_config(BATCHNORM_EPS=1e-3, BATCHNORM_MOMENTUM=0.3), dims=[8, 16, 8])
    kinds = [type(m) for m in head.clf]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2
    assert all(linear.bias is None for linear in layers_of(head, nn.Linear))
    assert all((bn.eps, bn.momentum) == (1e-3, 0.3) for bn in layers_of(head, nn.BatchNorm1d))


@pytest.mark.parametrize("training", [True, False])
def test_matches_independent_transcription(training: bool):
    torch.manual_seed(0)
    head = ResidualMLP(model_config(BATCHNORM_EPS=1e-3, BATCHNORM_MOMENTUM=0.3), dims=[12, 20, 7, 12])
    randomize_batchnorms(head)
    bns = layers_of(head, nn.BatchNorm1d)
    reference = Reference([linear.weight.detach() for linear in layers_of(head, nn.Linear)], bns)
    head.train(training)
    x = torch.randn(16, 12)
    with torch.no_grad():
        torch.testing.assert_close(head(x), reference(x, training))
        # A second step checks the running statistics the first one left behind.
        head.eval()
        torch.testing.assert_close(head(x), reference(x, training=False))


def test_residual_is_added_after_the_final_relu():
    head = ResidualMLP(model_config(), dims=[6, 6])
    nn.init.zeros_(head.clf[1].weight)
    nn.init.constant_(head.clf[1].bias, -1.0)  # every pre-ReLU activation is negative
    x = torch.randn(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(head(x), x)


def test_accepts_n_c_1_1_input():
    torch.manual_seed(0)
    head = ResidualMLP(model_config(), dims=[8, 4, 8]).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(head(x[:, :, None, None]), head(x))
    with pytest.raises(ValueError, match=r"\(3, 2, 2, 2\)"):
        head(torch.randn(3, 2, 2, 2))


def test_params_multiplier_scales_linear_weights():
    torch.manual_seed(0)
    plain = ResidualMLP(model_config(), dims=[8, 4, 8])
    torch.manual_seed(0)
    scaled = ResidualMLP(model_config(PARAMS_MULTIPLIER=0.5), dims=[8, 4, 8])
    for p, s in zip(layers_of(plain, nn.Linear), layers_of(scaled, nn.Linear)):
        torch.testing.assert_close(s.weight, 0.5 * p.weight)


@pytest.mark.parametrize("dims", [[16, 32, 8], [16]])
def test_dims_must_start_and_end_equal(dims: List[int]):
    with pytest.raises(ValueError, match=r"residual_mlp dims=" + repr(dims).replace("[", r"\[").replace("]", r"\]")):
        ResidualMLP(model_config(), dims=dims)
