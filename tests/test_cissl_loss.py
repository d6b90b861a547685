"""cissl_loss and asymmetric_simclr_loss against direct transcriptions of their equations (ISSL
spec §2), and asymmetric_simclr_loss against VISSL's own simclr_info_nce_loss."""

import math

import vissl_issl.plugin  # noqa: F401  (shims + registration)

import pytest
import torch
from classy_vision.generic.distributed_util import set_cpu_device
from classy_vision.losses import build_loss
from vissl.config import AttrDict
from vissl.losses.simclr_info_nce_loss import SimclrInfoNCELoss

from vissl_issl.config import ConfigError

BATCH, DIM = 5, 7


@pytest.fixture(autouse=True)
def cpu_device():
    set_cpu_device()  # VISSL's SimCLR criterion moves its masks to the GPU otherwise


def embeddings(seed: int = 0):
    """Un-normalised teacher and student embeddings, ``(2 * BATCH, DIM)`` each, crop-major."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(2 * BATCH, DIM, generator=generator) * 3
    student = torch.randn(2 * BATCH, DIM, generator=generator) * 3
    return teacher.requires_grad_(), student.requires_grad_()


def scores(teacher: torch.Tensor, student: torch.Tensor, temperature: float, r: int, c: int) -> torch.Tensor:
    u = student[r] / student[r].norm()
    w = teacher[c] / teacher[c].norm()
    return (u * w).sum() / temperature


def views_of(r: int):
    """(same view, other view) rows of the image in row r, for crop-major 2 x BATCH rows."""
    return r, (r + BATCH) % (2 * BATCH)


def naive_cissl(teacher, student, temperature):
    """-1/2 [log q(same view) + log q(other view)], softmax over all 2B teacher rows, float64."""
    teacher, student = teacher.double(), student.double()
    total = 0
    for r in range(2 * BATCH):
        s = torch.stack([scores(teacher, student, temperature, r, c) for c in range(2 * BATCH)])
        log_normaliser = torch.log(torch.exp(s).sum())
        same, other = views_of(r)
        total = total - ((s[same] - log_normaliser) + (s[other] - log_normaliser)) / 2
    return total / (2 * BATCH)


def naive_asymmetric_simclr(teacher, student, temperature):
    """-log(exp s(r, other view) / sum_{c != same view} exp s(r, c)), float64."""
    teacher, student = teacher.double(), student.double()
    total = 0
    for r in range(2 * BATCH):
        same, other = views_of(r)
        denominator = sum(torch.exp(scores(teacher, student, temperature, r, c)) for c in range(2 * BATCH) if c != same)
        total = total - torch.log(torch.exp(scores(teacher, student, temperature, r, other)) / denominator)
    return total / (2 * BATCH)


def value_and_grads(fn, teacher, student):
    value = fn(teacher, student)
    grads = torch.autograd.grad(value, (teacher, student))
    return value.detach(), grads


def assert_same_value_and_grads(ours, reference, teacher, student):
    value, grads = value_and_grads(ours, teacher, student)
    expected_value, expected_grads = value_and_grads(reference, teacher, student)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), expected_value, rtol=1e-5, atol=1e-6)
    for grad, expected in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def loss(name: str, temperature: float = 0.1):
    return build_loss({"name": name, "temperature": temperature})


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_cissl_matches_transcription_in_value_and_gradients(temperature):
    cissl = loss("cissl_loss", temperature)
    assert_same_value_and_grads(
        lambda t, s: cissl([t, s], None), lambda t, s: naive_cissl(t, s, temperature), *embeddings()
    )


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_asymmetric_simclr_matches_transcription_in_value_and_gradients(temperature):
    simclr = loss("asymmetric_simclr_loss", temperature)
    assert_same_value_and_grads(
        lambda t, s: simclr([t, s], None), lambda t, s: naive_asymmetric_simclr(t, s, temperature), *embeddings()
    )


def vissl_simclr(temperature: float) -> SimclrInfoNCELoss:
    buffer_params = {"world_size": 1, "embedding_dim": DIM, "effective_batch_size": 2 * BATCH}
    return SimclrInfoNCELoss(AttrDict({"temperature": temperature, "buffer_params": buffer_params}))


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_asymmetric_simclr_with_one_head_is_vissls_simclr_loss(temperature):
    ours, theirs = loss("asymmetric_simclr_loss", temperature), vissl_simclr(temperature)
    _, embedding = embeddings()
    value, expected = ours([embedding, embedding], None), theirs(embedding, None)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(value, embedding)
    (expected_grad,) = torch.autograd.grad(expected, embedding)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_cissl_keeps_the_same_view_column_that_simclr_masks():
    # One image: each row's only columns are its two views. SimCLR masks the same view, leaving
    # the positive alone (loss 0); CISSL splits probability 1/2 / 1/2 over both (loss >= log 2,
    # equality when the two teacher views coincide).
    generator = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, DIM, generator=generator), torch.randn(2, DIM, generator=generator)
    assert loss("asymmetric_simclr_loss")([teacher, student], None).item() == pytest.approx(0.0, abs=1e-6)
    assert loss("cissl_loss")([teacher, student], None).item() > math.log(2) + 1e-3
    same_teacher = teacher[:1].repeat(2, 1)
    assert loss("cissl_loss")([same_teacher, student], None).item() == pytest.approx(math.log(2), abs=1e-6)


def test_embeddings_are_normalised_by_the_loss():
    teacher, student = embeddings()
    for name in ("cissl_loss", "asymmetric_simclr_loss"):
        objective = loss(name)
        torch.testing.assert_close(objective([teacher * 4, student * 0.1], None), objective([teacher, student], None))


def test_half_precision_embeddings_give_a_float32_loss():
    teacher, student = embeddings()
    value = loss("cissl_loss")([teacher.half(), student.half()], None)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss("cissl_loss")([teacher, student], None), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", ["cissl_loss", "asymmetric_simclr_loss"])
def test_autocast_leaves_the_loss_in_fp32(name):
    # VISSL calls losses under autocast; bf16 on CPU stands in for fp16 on GPU (both would round the
    # similarity product to ~3 significant digits).
    teacher, student = embeddings()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(name)([teacher, student], None)
    torch.testing.assert_close(value, loss(name)([teacher, student], None), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "teacher_shape,student_shape",
    [((10, 7), (10, 6)), ((10, 7), (8, 7)), ((9, 7), (9, 7)), ((10,), (10,)), ((0, 7), (0, 7))],
)
def test_bad_shapes_are_named(teacher_shape, student_shape):
    with pytest.raises(ValueError, match=r"cissl_loss got teacher embeddings of shape"):
        loss("cissl_loss")([torch.randn(teacher_shape), torch.randn(student_shape)], None)


def test_bad_loss_config_names_the_key():
    with pytest.raises(ConfigError, match=r"config\.LOSS\.cissl_loss\.temperature"):
        loss("cissl_loss", 0.0)
    with pytest.raises(ConfigError, match=r"config\.LOSS\.asymmetric_simclr_loss\.tau"):
        build_loss({"name": "asymmetric_simclr_loss", "tau": 0.1})
