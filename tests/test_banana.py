"""examples/banana_vic.py: the banana, its maximal invariant, and a short run's figure and numbers."""

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from conftest import REPO


@pytest.fixture(scope="module")
def banana_vic():
    spec = importlib.util.spec_from_file_location("banana_vic", REPO / "examples" / "banana_vic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_radius_is_the_maximal_invariant_and_the_representative_lies_on_the_225_degree_ray(banana_vic):
    x = banana_vic.sample_banana(1000, torch.Generator().manual_seed(0))
    radius = x.norm(dim=1)
    rotated = banana_vic.random_rotation(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(rotated, x, atol=1e-2)  # the rotations do move the points
    torch.testing.assert_close(rotated.norm(dim=1), radius)
    # Every point of an orbit has the same representative, at the orbit's radius.
    rep = banana_vic.representative(x)
    torch.testing.assert_close(banana_vic.representative(rotated), rep)
    torch.testing.assert_close(rep.norm(dim=1), radius)
    angles = torch.rad2deg(torch.atan2(rep[:, 1], rep[:, 0]))
    torch.testing.assert_close(angles, torch.full_like(angles, -135.0))  # 225 degrees
    # The authors' description: (-r, 0) rotated by 45 degrees (counter-clockwise).
    left = torch.stack([-radius, torch.zeros_like(radius)], dim=1)
    torch.testing.assert_close(banana_vic.rotate(left, 45.0), rep)
    torch.testing.assert_close(banana_vic.rotate(torch.tensor([[1.0, 0.0]]), 90.0), torch.tensor([[0.0, 1.0]]))
    # VIC trains on random points of x's orbit and reconstructs its representative; VAE: x from x.
    vic, vae = banana_vic.TASKS["VIC"], banana_vic.TASKS["VAE"]
    inputs = vic.train_input(vic.target(x), torch.Generator().manual_seed(2))
    torch.testing.assert_close(inputs.norm(dim=1), radius)
    torch.testing.assert_close(banana_vic.representative(inputs), rep)
    assert torch.equal(vae.train_input(vae.target(x), torch.Generator()), x)


def test_banana_matches_the_spec_formula(banana_vic):
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(3))
    # Independent transcription (numpy, float64): base N(0, diag(3, 0.5)^2); x1 += 0.1 (x0^2 - 9);
    # rotated by -40 degrees; shifted by (-0.75, -1).
    e = noise.double().numpy()
    x0, x1 = 3.0 * e[:, 0], 0.5 * e[:, 1]
    x1 = x1 + 0.1 * (x0**2 - 9)
    a = math.radians(-40)
    expected = np.stack([x0 * math.cos(a) - x1 * math.sin(a), x0 * math.sin(a) + x1 * math.cos(a)], axis=1)
    expected += np.array([-0.75, -1.0])
    np.testing.assert_allclose(banana_vic.banana(noise).numpy(), expected, rtol=1e-5, atol=1e-5)
    # sample_banana is banana() of the generator's standard normal draws.
    sampled = banana_vic.sample_banana(500, torch.Generator().manual_seed(3))
    torch.testing.assert_close(sampled, banana_vic.banana(noise))


def test_short_run_writes_the_figure_and_numbers(banana_vic, tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setattr(banana_vic, "TEST_SIZE", 1000)
    out = tmp_path / "banana.png"
    results = banana_vic.main(["--steps", "30", "--batch-size", "64", "--grid", "40", "--out", str(out)])
    assert out.stat().st_size > 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["settings"]["steps"] == 30
    for name in ("VIC", "VAE"):
        numbers = saved[name]
        assert numbers == pytest.approx(results[name])
        assert all(math.isfinite(numbers[key]) for key in ("rate_bits_estimated", "rate_bits_coded", "distortion"))
        # A record holds the code at about its estimated length, plus the coder's flush (>= 64 bits).
        assert numbers["rate_bits_coded"] >= max(64.0, numbers["rate_bits_estimated"] - 0.5)


def test_coded_records_decode_to_the_evaluation_codes(banana_vic, one_torch_thread):
    torch.manual_seed(0)
    model = banana_vic.Compressor(hidden=64)
    generator = torch.Generator().manual_seed(0)
    banana_vic.train(model, banana_vic.TASKS["VIC"], steps=20, batch_size=64, lr=1e-3, generator=generator)
    model.eval()
    model.bottleneck.update()
    x = banana_vic.sample_banana(200, generator)
    with torch.no_grad():
        features = model.encoder(x)
        z_hat = model(x)[1]
        assert torch.equal(model.bottleneck.decompress(model.bottleneck.compress(features)), z_hat)
