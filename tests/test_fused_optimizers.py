"""classy's ``adam``/``adamw`` as the plugin builds them (torch's fused kernel) against Adam and AdamW
transcribed from Kingma & Ba (2015) and Loshchilov & Hutter (2019) in numpy, and their checkpoints
against the per-tensor loop's."""

import copy

import vissl_issl.plugin  # noqa: F401  (classy's adam/adamw now build the fused kernel)

import numpy as np
import pytest
import torch
from classy_vision.optim import build_optimizer

LR, BETAS, EPS, WD = 0.01, (0.9, 0.999), 1e-8, 0.1


def numpy_adam(p, grads, decoupled: bool):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - LR * WD)
        else:
            g = g + WD * p
        m = BETAS[0] * m + (1 - BETAS[0]) * g
        v = BETAS[1] * v + (1 - BETAS[1]) * g * g
        m_hat, v_hat = m / (1 - BETAS[0] ** t), v / (1 - BETAS[1] ** t)
        p = p - LR * m_hat / (np.sqrt(v_hat) + EPS)
    return p


def classy(name: str):
    config = {"name": name, "num_epochs": 1, "lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": WD}
    return build_optimizer(config)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_classy_adam_is_fused_and_steps_as_transcribed(name):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 3))
    grads = [rng.normal(size=(5, 3)) for _ in range(4)]
    p = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    optimizer = classy(name)
    optimizer.set_param_groups([p])
    assert optimizer.optimizer.defaults["fused"]
    for g in grads:
        p.grad = torch.tensor(g)
        optimizer.step(where=0.0)
    np.testing.assert_allclose(p.detach().numpy(), numpy_adam(start, grads, decoupled=name == "adamw"), rtol=1e-12)
    # Its own checkpoint, read back, keeps the fused kernel for the resumed run.
    optimizer.optimizer.load_state_dict(copy.deepcopy(optimizer.optimizer.state_dict()))
    assert optimizer.optimizer.param_groups[0]["fused"]


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_a_checkpoint_of_the_per_tensor_loop_loads_and_continues_with_the_same_steps(name):
    torch_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    torch.manual_seed(0)
    grads = [torch.randn(4, 3) for _ in range(5)]
    looped = torch.nn.Parameter(torch.randn(4, 3))
    fused = torch.nn.Parameter(looped.detach().clone())
    loop = torch_class([looped], lr=LR, weight_decay=WD, foreach=False)
    for g in grads[:3]:
        looped.grad = g.clone()
        loop.step()
    fused.data.copy_(looped.detach())
    optimizer = classy(name)
    optimizer.set_param_groups([fused])
    optimizer.optimizer.load_state_dict(copy.deepcopy(loop.state_dict()))  # as read from a file
    for g in grads[3:]:
        looped.grad, fused.grad = g.clone(), g.clone()
        loop.step()
        optimizer.step(where=0.5)
    torch.testing.assert_close(fused.detach(), looped.detach(), rtol=1e-6, atol=1e-7)
