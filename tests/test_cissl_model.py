"""The CISSL recipes' models hand cissl_loss its contract: [teacher, student], each (2 * B, 128)."""

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.launcher import compose

import pytest
import torch
from classy_vision.losses import build_loss
from vissl.models import build_model


@pytest.mark.parametrize(
    "name", ["pretrain/cissl/cissl_resnet50_dNone_e100_m2", "pretrain/cissl/cissl_resnet50_d8192_e100_m2"]
)
@pytest.mark.slow
def test_model_output_feeds_cissl_loss(name):
    config = compose([f"config={name}"])[1]
    torch.manual_seed(0)
    model = build_model(config.MODEL, config.OPTIMIZER)
    images = 3
    views = [torch.randn(images, 3, 64, 64) for _ in range(2)]  # as multicrop_collator gives them
    teacher, student = model(views)
    assert teacher.shape == student.shape == (2 * images, 128)
    # Each head saw every view: changing view 1 of the input changes rows of view 1 only.
    views[1] = views[1] + 1.0
    model.eval()
    before = model([views[0], views[1] - 1.0])
    after = model(views)
    for before_head, after_head in zip(before, after):
        torch.testing.assert_close(before_head[:images], after_head[:images])
        assert not torch.allclose(before_head[images:], after_head[images:])
    loss = build_loss({"name": "cissl_loss", **config.LOSS.cissl_loss})([teacher, student], None)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.heads.parameters() if p.requires_grad)
