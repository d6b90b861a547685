"""The pure-PyTorch LARC against steps computed by hand with apex's rule (see larc.py)."""

import vissl_issl.plugin  # noqa: F401  (shims: VISSL's sgd with use_larc now builds without apex)

import pytest
import torch
from classy_vision.optim import build_optimizer

from vissl_issl.optim.larc import LARC

# p = (3, 4): ||p|| = 5; grad = (0.6, 0.8): ||grad|| = 1; lr 0.5, weight decay 0.1, trust 0.02, eps 0.
# local_lr = 0.02 * 5 / (1 + 0.1 * 5) = 1/15; decayed grad = grad + 0.1 p = (0.9, 1.2).
P, G = (3.0, 4.0), (0.6, 0.8)


def one_step(clip: bool, momentum: float = 0.0):
    p = torch.nn.Parameter(torch.tensor(P))
    p.grad = torch.tensor(G)
    frozen = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    frozen.grad = torch.zeros(2)  # zero gradient norm: apex leaves it alone, decay included
    sgd = torch.optim.SGD([p, frozen], lr=0.5, momentum=momentum, weight_decay=0.1)
    larc = LARC(sgd, trust_coefficient=0.02, clip=clip, eps=0.0)
    larc.step()
    return p.detach(), frozen.detach(), sgd


def test_scaling_mode_step():
    p, frozen, sgd = one_step(clip=False)
    # p - lr * local_lr * decayed grad = (3, 4) - 0.5 * (0.06, 0.08)
    torch.testing.assert_close(p, torch.tensor([2.97, 3.96]))
    torch.testing.assert_close(frozen, torch.tensor([1.0, 2.0]))
    assert sgd.param_groups[0]["weight_decay"] == 0.1  # handed back after the step


def test_clipping_mode_step():
    p, _, _ = one_step(clip=True)
    # min(local_lr / lr, 1) = 2/15: (3, 4) - 0.5 * 2/15 * (0.9, 1.2)
    torch.testing.assert_close(p, torch.tensor([2.94, 3.92]))


def test_clipping_caps_at_the_base_rate():
    p = torch.nn.Parameter(torch.tensor(P))
    p.grad = torch.tensor([0.0006, 0.0008])  # tiny gradient: local_lr / lr > 1, so the cap is 1
    LARC(torch.optim.SGD([p], lr=0.5), trust_coefficient=0.02, clip=True, eps=0.0).step()
    torch.testing.assert_close(p.detach(), torch.tensor([3.0 - 0.0003, 4.0 - 0.0004]))


def test_every_param_group_gets_its_own_rate_and_decay():
    a = torch.nn.Parameter(torch.tensor(P))
    b = torch.nn.Parameter(torch.tensor(P))
    a.grad, b.grad = torch.tensor(G), torch.tensor(G)
    sgd = torch.optim.SGD(
        [{"params": [a], "lr": 0.5, "weight_decay": 0.1}, {"params": [b], "lr": 1.0, "weight_decay": 0.0}]
    )
    LARC(sgd, trust_coefficient=0.02, clip=False, eps=0.0).step()
    torch.testing.assert_close(a.detach(), torch.tensor([2.97, 3.96]))
    # group b: local_lr = 0.02 * 5 / 1 = 0.1, no decay: (3, 4) - 1.0 * 0.1 * (0.6, 0.8)
    torch.testing.assert_close(b.detach(), torch.tensor([2.94, 3.92]))


def test_momentum_buffer_holds_the_scaled_gradient_and_state_round_trips():
    _, _, sgd = one_step(clip=False, momentum=0.9)
    larc = LARC(sgd)
    buffer = larc.state_dict()["state"][0]["momentum_buffer"]
    torch.testing.assert_close(buffer, torch.tensor([0.06, 0.08]))
    fresh = LARC(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))], lr=0.5, momentum=0.9)
    )
    fresh.load_state_dict(larc.state_dict())
    torch.testing.assert_close(fresh.state_dict()["state"][0]["momentum_buffer"], buffer)


@pytest.mark.parametrize("clip", [False, True])
def test_vissl_sgd_with_use_larc_wraps_it(clip):
    config = {
        "name": "sgd",
        "use_larc": True,
        "larc_config": {"clip": clip, "trust_coefficient": 0.02, "eps": 0.0},
        "momentum": 0.0,
        "weight_decay": 0.1,
        "num_epochs": 1,
        "lr": 0.5,
    }
    optimizer = build_optimizer(config)
    p = torch.nn.Parameter(torch.tensor(P))
    optimizer.set_param_groups([p])
    assert isinstance(optimizer.optimizer, LARC)
    assert optimizer.optimizer.optim.defaults["fused"]  # torch's single-pass SGD kernel
    p.grad = torch.tensor(G)
    optimizer.optimizer.step()
    expected = [2.94, 3.92] if clip else [2.97, 3.96]
    torch.testing.assert_close(p.detach(), torch.tensor(expected))
