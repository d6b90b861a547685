"""``entropy_bottleneck`` head and its CompressAI rate models (``vissl_issl.maths.rate``): exact
decoding, real vs estimated bits, noise/quantisation modes, gradients, precision, errors."""

import vissl_issl.plugin  # noqa: F401  (compat shims + registration)
from vissl_issl.plugin.heads.entropy_bottleneck import EntropyBottleneckHead

import pytest
import torch
from vissl.models.heads import get_model_head

from conftest import model_config
from vissl_issl.architectures.packed_outputs import split_bottleneck
from vissl_issl.maths.rate import FactorizedRate, HyperpriorRate

PRIORS = {"factorized": FactorizedRate, "hyperprior": HyperpriorRate}
D = 12
# A fixed code distribution in quantisation steps: per-dimension means and scales.
MEANS = torch.linspace(-3, 3, D)
SCALES = torch.linspace(0.5, 4, D)


def gaussian_codes(n: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return MEANS + offset + SCALES * torch.randn(n, D, generator=generator)


def coded(rate, z):
    """Updated ``rate`` in eval mode: eval-forward ``(z_hat, bits)``, records, real bits per record."""
    rate.eval()
    rate.update()
    z_hat, bits = rate(z)
    records = rate.compress(z)
    return z_hat, bits, records, torch.tensor([8.0 * len(r) for r in records])


def head(prior: str, dims=(20, D), seed: int = 0) -> EntropyBottleneckHead:
    torch.manual_seed(seed)
    module = get_model_head("entropy_bottleneck")(model_config(), list(dims), prior=prior)
    with torch.no_grad():  # a non-trivial affine map
        module.log_scale.uniform_(-1, 2)
        module.shift.normal_()
    return module


@pytest.fixture(scope="module")
def trained():
    """Each prior fitted to ``gaussian_codes`` (rate + aux loss), so that its tables are meaningful."""
    rates = {}
    for name, steps, batch in [("factorized", 300, 256), ("hyperprior", 150, 128)]:
        torch.manual_seed(0)
        rate = PRIORS[name](D)
        optimizer = torch.optim.Adam(rate.parameters(), lr=1e-2)
        for step in range(steps):
            _, bits = rate(gaussian_codes(batch, seed=step))
            optimizer.zero_grad()
            (bits.mean() + rate.aux_loss()).backward()
            optimizer.step()
        rates[name] = rate.eval()
    return rates


@pytest.mark.slow
@pytest.mark.parametrize("dim", [1, D])
@pytest.mark.parametrize("prior", PRIORS)
def test_rate_decodes_exactly_the_eval_forward(prior, dim):
    torch.manual_seed(0)
    rate = PRIORS[prior](dim)
    # 1000: outliers, escape-coded; at dim 1 every row overflowed CompressAI's own encoder buffer.
    for scale in [0.1, 1.0, 10.0, 1000.0]:
        z = scale * torch.randn(64, dim)
        z_hat, _, records, _ = coded(rate, z)
        assert torch.equal(rate.decompress(records), z_hat)
        # Each record on its own, in any order: the decoder's Gaussians do not depend on the batch.
        assert torch.equal(torch.cat([rate.decompress([r]) for r in reversed(records)]), z_hat.flip(0))


@pytest.mark.parametrize("dims", [(20, D), (D, D)])
@pytest.mark.parametrize("prior", PRIORS)
def test_head_decodes_exactly_the_eval_forward(prior, dims):
    module = head(prior, dims).eval()
    module.update()
    for scale in [0.1, 1.0, 30.0]:
        features = scale * torch.randn(32, dims[0])
        out = split_bottleneck(module(features))
        assert torch.equal(module.decompress(module.compress(features)), out.z_hat)
        assert torch.equal(module.codes(features), out.z)
        # Rounded in the rate's space: within half a step exp(-s) of the code.
        assert ((out.z_hat - out.z).abs() <= torch.exp(-module.log_scale) / 2 + 1e-5).all()


@pytest.mark.slow
@pytest.mark.parametrize("prior", PRIORS)
def test_real_bits_are_the_estimate_plus_the_coders_overhead(trained, prior):
    """rANS flushes its 64-bit state and writes 32-bit words: each string costs its information
    plus 32 to 64 bits. Hyperprior records hold two strings and a 1-byte length prefix. Slack for
    the tables (16-bit CDFs; the scale table rounds scales up): 1 bit + 0.1 bit per dimension."""
    strings, prefix = (1, 0) if prior == "factorized" else (2, 8)
    z_hat, bits, records, real = coded(trained[prior], gaussian_codes(2000, seed=10**6))
    overhead = real - bits
    slack = 1 + 0.1 * D
    assert overhead.min() >= 32 * strings + prefix - slack
    assert overhead.max() <= 64 * strings + prefix + slack
    assert 32 * strings + prefix <= overhead.mean() <= 64 * strings + prefix
    # Trained-ish: close to the codes' differential entropy sum_d log2(sqrt(2 pi e) sigma_d).
    entropy = torch.log2((2 * torch.pi * torch.e) ** 0.5 * SCALES).sum()
    assert bits.mean() < entropy + 3
    assert torch.equal(trained[prior].decompress(records), z_hat)


def test_hyperprior_codes_around_the_predicted_means():
    """With means far from 0, coding around anything else (the authors' coder used the scales)
    would escape-code every value and decode to other values than the forward's."""
    torch.manual_seed(0)
    rate = HyperpriorRate(D)
    with torch.no_grad():  # the Gaussians of the codes, whatever the side code
        rate.z_decoder[-1].weight.zero_()
        rate.z_decoder[-1].bias.copy_(torch.cat([SCALES, MEANS + 40]))
    z = gaussian_codes(500, seed=1, offset=40)
    z_hat, bits, records, real = coded(rate, z)
    assert torch.equal(rate.decompress(records), z_hat)
    overhead = real - bits
    assert 2 * 32 + 8 - 1 - 0.1 * D <= overhead.min() and overhead.max() <= 2 * 64 + 8 + 1 + 0.1 * D


@pytest.mark.parametrize("prior", PRIORS)
def test_training_forward_is_noisy_and_eval_forward_quantised(prior):
    torch.manual_seed(0)
    rate = PRIORS[prior](D)
    z = gaussian_codes(256, seed=0)
    first, second = rate(z)[0], rate(z)[0]
    assert (first - z).abs().max() <= 0.5 + 1e-5
    assert (first - z).std() == pytest.approx(12**-0.5, rel=0.1)  # U(-1/2, 1/2)
    assert not torch.equal(first, second)

    rate.eval()
    z_hat = rate(z)[0]
    assert torch.equal(z_hat, rate(z)[0])
    if prior == "factorized":
        centres = rate.bottleneck.quantiles[:, 0, 1].detach()
    else:
        side_hat, _ = rate.side_bottleneck(rate.side_encoder(z))
        centres = rate._gaussian(side_hat)[1].detach()
    steps = z_hat - centres
    assert (steps - steps.round()).abs().max() < 1e-4
    assert (z_hat - z).abs().max() <= 0.5 + 1e-4


@pytest.mark.parametrize("prior", PRIORS)
def test_aux_loss_trains_only_the_quantiles_and_the_rate_everything_else(prior):
    module = head(prior).train()
    features = torch.randn(16, 20)
    split_bottleneck(module(features)).aux.sum().backward()
    with_grad = {name for name, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {name for name, _ in module.named_parameters() if name.endswith("quantiles")}

    module.zero_grad(set_to_none=True)
    split_bottleneck(module(features)).bits.sum().backward()
    for name, p in module.named_parameters():
        if name.endswith("quantiles"):
            assert p.grad is None or not p.grad.any()
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name  # incl. the Linear, s, b, MLPs


@pytest.mark.parametrize("prior", PRIORS)
def test_fp32_under_bf16_autocast(prior):
    module = head(prior).eval()
    features = torch.randn(16, 20).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(features)
        z_hat, bits = module.rate(torch.randn(16, D).bfloat16())
    assert out.dtype == z_hat.dtype == bits.dtype == torch.float32
    assert torch.equal(out, module(features.float()))  # autocast changed nothing


@pytest.mark.parametrize("prior", PRIORS)
def test_split_bottleneck_and_the_aux_column(prior):
    module = head(prior)
    features = torch.randn(10, 20)
    packed = module(features)
    assert packed.shape == (10, 2 * D + 2) and packed.dtype == torch.float32
    parts = split_bottleneck(packed)
    assert [tuple(p.shape) for p in parts] == [(10, D), (10, D), (10,), (10,)]
    assert torch.equal(torch.cat([parts.z_hat, parts.z, parts.bits[:, None], parts.aux[:, None]], 1), packed)
    assert parts.aux.sum().item() == pytest.approx(module.rate.aux_loss().item(), rel=1e-5)
    assert torch.all(parts.aux == parts.aux[0])
    with pytest.raises(ValueError, match="2D \\+ 2"):
        split_bottleneck(packed[:, :-1])


@pytest.mark.parametrize("prior", PRIORS)
def test_update_keeps_the_quantiles_and_checkpoints_carry_the_tables(prior):
    module = head(prior).eval()
    features = torch.randn(32, 20)
    before = module(features)
    quantiles = {n: p.clone() for n, p in module.named_parameters() if n.endswith("quantiles")}
    module.update()
    assert all(torch.equal(p, quantiles[n]) for n, p in module.named_parameters() if n.endswith("quantiles"))
    assert torch.equal(module(features), before)

    records = module.compress(features)
    fresh = head(prior, seed=1)  # tables not built: empty buffers
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh.eval().decompress(records), split_bottleneck(before).z_hat)


def test_affine_map_starts_at_scale_e():
    """lossyless initialises s to ones, not zeros: the quantisation step starts at 1/e."""
    module = EntropyBottleneckHead(model_config(), [20, D])
    assert torch.equal(module.log_scale, torch.ones(D)) and torch.equal(module.shift, torch.zeros(D))
    assert isinstance(module.encoder, torch.nn.Linear)
    assert isinstance(EntropyBottleneckHead(model_config(), [D, D]).encoder, torch.nn.Identity)


def test_option_errors():
    with pytest.raises(ValueError, match="prior.*factorized.*hyperprior"):
        EntropyBottleneckHead(model_config(), [20, D], prior="gaussian")
    for dims in ([D], [20, 16, D], [20, 0]):
        with pytest.raises(ValueError, match="dims"):
            EntropyBottleneckHead(model_config(), dims)


@pytest.mark.parametrize("prior", PRIORS)
def test_coding_errors(prior):
    module = head(prior).eval()
    features = torch.randn(4, 20)
    for call in (lambda: module.compress(features), lambda: module.decompress([bytes(16)])):
        with pytest.raises(ValueError, match="update()"):
            call()
    module.update()
    record = module.compress(features)[0]
    malformed = [b"", record[:-1], record + b"\x00", record[:1] + b"\x00" * 3]
    if prior == "hyperprior":
        malformed += [b"\x80", bytes([200]) + record[1:], bytes([record[0] - 1]) + record[1:]]
    for bad in malformed:
        with pytest.raises(ValueError, match="record 1 is malformed"):
            module.decompress([record, bad])
    with pytest.raises(ValueError, match="not bytes"):
        module.decompress([record.hex()])
    with pytest.raises(ValueError, match="finite"):
        module.compress(torch.full((1, 20), float("nan")))
