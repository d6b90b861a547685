"""Gradient clipping by value (``config.MODEL.GRAD_CLIP_VALUE``): every gradient entry clamped to
[-c, c], on the true gradients when AMP scales the loss."""

import types

import vissl_issl.plugin  # noqa: F401  (registration)
from vissl_issl.plugin.hooks.grad_value_clip import GradValueClipHook

import torch


def model_and_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    inputs = torch.randn(5, 4) * 10  # gradients well beyond 2
    return model, (model(inputs) ** 2).sum()


def test_gradients_are_clamped_entry_wise():
    model, loss = model_and_loss()
    loss.backward()
    expected = [p.grad.clamp(-2.0, 2.0) for p in model.parameters()]
    assert any((p.grad.abs() > 2).any() for p in model.parameters())
    GradValueClipHook(2.0).on_backward(types.SimpleNamespace(model=model, amp_grad_scaler=None))
    assert all(torch.equal(p.grad, e) for p, e in zip(model.parameters(), expected))


def test_with_a_grad_scaler_the_unscaled_gradients_are_clipped_and_stepped_once():
    model, loss = model_and_loss()
    reference, reference_loss = model_and_loss()
    reference_loss.backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(loss).backward()
    GradValueClipHook(2.0).on_backward(types.SimpleNamespace(model=model, amp_grad_scaler=scaler, optimizer=optimizer))
    scaler.step(optimizer)  # must not unscale a second time
    for p, r in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, r - 0.1 * r.grad.clamp(-2.0, 2.0))
