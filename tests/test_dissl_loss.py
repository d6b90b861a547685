import copy
from typing import List

import vissl_issl.plugin  # noqa: F401  (shims + registration)

import pytest
import torch
from classy_vision.losses import build_loss
from torch.distributions import Categorical
from vissl.config import AttrDict

from vissl_issl.config import ConfigError
from vissl_issl.losses.dissl import DISSLLoss

BLOCK = {
    "temperature_teacher": 0.5,
    "temperature_student": 1.0,
    "lambda_maximality": 2.3,
    "beta_det_inv": 0.6,
    "crops_for_teacher": [0, 1],
    "warmup_beta_iters": None,
    "num_crops": 2,
    "num_classes": 7,
}
BATCH = 5


def make_loss(**overrides) -> DISSLLoss:
    return build_loss({"name": "dissl_loss", **BLOCK, **overrides})


def random_logits(num_teacher_crops: int, num_crops: int, num_classes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    teacher = 3 * torch.randn(num_teacher_crops * BATCH, num_classes, generator=generator)
    student = 3 * torch.randn(num_crops * BATCH, num_classes, generator=generator)
    return teacher.requires_grad_(), student.requires_grad_()


def naive_dissl(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    crops_for_teacher: List[int],
    num_crops: int,
    beta: float,
    temperature_teacher: float = 0.5,
    temperature_student: float = 1.0,
    lambda_maximality: float = 2.3,
) -> torch.Tensor:
    """Straight transcription of the DISSL equation, in float64, one pair at a time."""
    teacher_chunks = teacher_logits.double().chunk(len(crops_for_teacher))
    student_chunks = student_logits.double().chunk(num_crops)
    teacher = [torch.softmax(x / temperature_teacher, -1) for x in teacher_chunks]
    student = [torch.softmax(x / temperature_student, -1) for x in student_chunks]

    def cross_entropy(p, q):
        return -(p * q.log()).sum(-1).mean()

    distill = [
        cross_entropy(teacher[i], student[b])
        for i, a in enumerate(crops_for_teacher)
        for b in range(num_crops)
        if b != a
    ]
    det_inv = [
        cross_entropy(teacher[i], teacher[j]) for i in range(len(teacher)) for j in range(len(teacher)) if i != j
    ]
    entropies = [Categorical(probs=t.mean(0)).entropy() for t in teacher]
    return (
        sum(distill) / len(distill)
        - lambda_maximality * sum(entropies) / len(entropies)
        + beta * sum(det_inv) / len(det_inv)
    )


@pytest.mark.parametrize(
    "num_crops, crops_for_teacher",
    [(2, [0, 1]), (6, [0, 1]), (4, [1, 2]), (4, [3, 0, 2])],
)
def test_matches_naive_formula_and_gradients(num_crops, crops_for_teacher):
    loss_fn = make_loss(num_crops=num_crops, crops_for_teacher=crops_for_teacher)
    teacher, student = random_logits(len(crops_for_teacher), num_crops, BLOCK["num_classes"])
    loss = loss_fn([teacher, student], None)
    expected = naive_dissl(teacher, student, crops_for_teacher, num_crops, BLOCK["beta_det_inv"])

    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(loss, [teacher, student])
    expected_grads = torch.autograd.grad(expected, [teacher, student])
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_logits_give_fp32_loss(dtype):
    loss_fn = make_loss(num_crops=6)
    teacher, student = (x.detach().to(dtype) for x in random_logits(2, 6, 7))
    loss = loss_fn([teacher, student], None)
    assert loss.dtype == torch.float32
    # Only the logits' rounding may differ: the computation itself must run in fp32.
    upcast = loss_fn([teacher.float(), student.float()], None)
    torch.testing.assert_close(loss, upcast, rtol=0, atol=1e-6)
    fp32_teacher, fp32_student = random_logits(2, 6, 7)
    torch.testing.assert_close(loss, loss_fn([fp32_teacher, fp32_student], None), rtol=0, atol=0.1)


def test_autocast_does_not_lower_the_precision():
    loss_fn = make_loss(num_crops=6)
    teacher, student = random_logits(2, 6, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn([teacher, student], None)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_fn([teacher, student], None), rtol=0, atol=1e-6)


def test_beta_warmup_schedule_and_counter():
    loss_fn = make_loss(warmup_beta_iters=10)
    teacher, student = random_logits(2, 2, 7)
    lam, beta = BLOCK["lambda_maximality"], BLOCK["beta_det_inv"]

    def forwards(n: int) -> torch.Tensor:
        for _ in range(n):
            loss = loss_fn([teacher, student], None)
        return loss

    def assert_uses_beta(loss: torch.Tensor, expected_beta: float) -> None:
        expected = naive_dissl(teacher, student, [0, 1], 2, beta=expected_beta)
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)

    assert float(loss_fn.current_beta()) == pytest.approx(lam)
    assert_uses_beta(forwards(1), lam)
    forwards(4)
    mid = lam + (beta - lam) * 0.5
    assert float(loss_fn.current_beta()) == pytest.approx(mid)
    assert_uses_beta(forwards(1), mid)

    loss_fn.eval()
    forwards(3)
    assert int(loss_fn.num_iteration) == 6
    loss_fn.train()

    forwards(4)
    assert float(loss_fn.current_beta()) == pytest.approx(beta)
    forwards(5)
    assert float(loss_fn.current_beta()) == pytest.approx(beta)
    assert int(loss_fn.num_iteration) == 15


def test_counter_is_checkpointed():
    loss_fn = make_loss(warmup_beta_iters=10)
    teacher, student = random_logits(2, 2, 7)
    for _ in range(3):
        loss_fn([teacher, student], None)
    state = copy.deepcopy(loss_fn.state_dict())
    assert int(state["num_iteration"]) == 3

    restored = make_loss(warmup_beta_iters=10)
    restored.load_state_dict(state)
    assert float(restored.current_beta()) == pytest.approx(float(loss_fn.current_beta()))


def test_without_warmup_beta_is_constant():
    loss_fn = make_loss()
    teacher, student = random_logits(2, 2, 7)
    for _ in range(3):
        loss_fn([teacher, student], None)
    assert loss_fn.current_beta() == BLOCK["beta_det_inv"]


def test_build_from_complete_block():
    loss_fn = make_loss(num_crops=8, num_classes=16384, warmup_beta_iters=1000)
    assert isinstance(loss_fn, DISSLLoss)
    assert (loss_fn.num_crops, loss_fn.num_classes, loss_fn.warmup_beta_iters) == (8, 16384, 1000)


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"config\.LOSS\.dissl_loss\.beta_pM_unif"):
        make_loss(beta_pM_unif=2.3)


@pytest.mark.parametrize("key", ["num_classes", "num_crops"])
def test_missing_inferred_key_is_named(key):
    block = {k: v for k, v in BLOCK.items() if k != key}
    with pytest.raises(ValueError, match=rf"config\.LOSS\.dissl_loss\.{key}"):
        build_loss({"name": "dissl_loss", **block})
    with pytest.raises(ValueError, match=rf"config\.LOSS\.dissl_loss\.{key}"):
        make_loss(**{key: None})


def test_shape_mismatch_names_both_shapes():
    loss_fn = make_loss(num_crops=6)
    teacher, student = random_logits(2, 6, 7)
    with pytest.raises(ValueError, match=r"\(15, 7\).*\(30, 7\).*\(2 \* B, 7\).*\(6 \* B, 7\)"):
        loss_fn([torch.cat([teacher, teacher[:5]]), student], None)
    with pytest.raises(ValueError, match=r"\(10, 7\).*\(30, 6\)"):
        loss_fn([teacher, student[:, :6]], None)


# ---- infer_config ----------------------------------------------------------------------------


def make_config(**loss_overrides) -> AttrDict:
    head = [["mlp", {"dims": [32, 64]}], ["mlp", {"dims": [64, 16]}]]
    return AttrDict(
        {
            "LOSS": {
                "name": "dissl_loss",
                "dissl_loss": {**BLOCK, "num_crops": None, "num_classes": None, **loss_overrides},
            },
            "DATA": {
                "TRAIN": {
                    "TRANSFORMS": [
                        {
                            "name": "ImgPilToMultiCrop",
                            "total_num_crops": 6,
                            "num_crops": [2, 4],
                            "size_crops": [224, 96],
                            "crop_scales": [[0.14, 1], [0.05, 0.14]],
                        },
                        {"name": "RandomHorizontalFlip", "p": 0.5},
                    ],
                    "COLLATE_FUNCTION": "multicrop_collator",
                }
            },
            "MODEL": {
                "BASE_MODEL_NAME": "heads_on_crops_model",
                "HEAD": {"PARAMS": [head, [["mlp", {"dims": [32, 16]}]]]},
            },
        }
    )


def test_infer_config_fills_inferred_keys_and_head_crops():
    config = make_config()
    DISSLLoss.infer_config(config)
    block = config.LOSS.dissl_loss
    assert (block.num_crops, block.num_classes) == (6, 16)
    assert config.MODEL.HEAD_CROPS == [[0, 1], None]
    assert isinstance(build_loss({"name": "dissl_loss", **block}), DISSLLoss)


def test_infer_config_fills_defaults_and_accepts_consistent_values():
    config = make_config(num_crops=6, num_classes=16, crops_for_teacher=[1, 2])
    del config.LOSS.dissl_loss["lambda_maximality"]
    config.MODEL.HEAD_CROPS = None
    DISSLLoss.infer_config(config)
    assert config.LOSS.dissl_loss.lambda_maximality == 2.3
    assert config.MODEL.HEAD_CROPS == [[1, 2], None]
    DISSLLoss.infer_config(config)  # idempotent: an explicit matching HEAD_CROPS is accepted


ONE_MODULE_HEAD = [["mlp", {"dims": [32, 16]}]]


@pytest.mark.parametrize(
    "path, value, also_named",
    [
        ("LOSS.dissl_loss.temperature", 0.1, []),
        ("LOSS.dissl_loss.num_crops", 8, ["config.DATA.TRAIN.TRANSFORMS"]),
        ("LOSS.dissl_loss.crops_for_teacher", [0], []),
        ("LOSS.dissl_loss.crops_for_teacher", [1, 1], []),
        ("LOSS.dissl_loss.crops_for_teacher", [0, 6], []),
        ("LOSS.dissl_loss.num_classes", 32, ["config.MODEL.HEAD.PARAMS"]),
        ("MODEL.HEAD.PARAMS", [ONE_MODULE_HEAD], []),
        ("MODEL.HEAD.PARAMS", [ONE_MODULE_HEAD] * 3, []),
        ("MODEL.HEAD.PARAMS", [ONE_MODULE_HEAD, [["mlp", {"dims": [32, 8]}]]], []),
        ("MODEL.BASE_MODEL_NAME", "multi_input_output_model", []),
        ("DATA.TRAIN.COLLATE_FUNCTION", "simclr_collator", []),
        ("MODEL.HEAD_CROPS", [[0, 1], [0, 1]], []),
    ],
)
def test_infer_config_errors_name_the_key(path, value, also_named):
    config = make_config()
    *parents, last = path.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[last] = value
    with pytest.raises(ConfigError) as error:
        DISSLLoss.infer_config(config)
    for key in [f"config.{path}", *also_named]:
        assert key in str(error.value)
