"""config.MODEL.STEP_OPTIONS (vissl_issl/plugin/step_options.py): its config checks, channels-last
and bf16 autocast against the plain fp32 NCHW model on the digits recipe's model and DISSL loss,
torch.compile without a state_dict change, checkpoints that load both ways, and launcher runs."""

import copy
import logging
import math
import shutil
from pathlib import Path

import vissl_issl.plugin  # noqa: F401  (registration: the digits recipe's trunk, heads and loss)
from vissl_issl.plugin.launcher import compose
from vissl_issl.plugin.step_options import (
    KEY,
    StepOptions,
    apply_step_options,
    install,
    read_step_options,
)

import pytest
import torch
from classy_vision.losses import LOSS_REGISTRY
from test_launcher import assert_same_tensors, load
from vissl.config import AttrDict
from vissl.models import build_model

from conftest import DISSL_DIGITS, LAUNCHER, TINY, logged, run_tool
from vissl_issl.config import ConfigError
from vissl_issl.weights import load_trunk

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHANNELS_LAST = StepOptions(channels_last=True)
BF16 = StepOptions(autocast=torch.bfloat16)
# On a CPU without oneDNN's bf16 kernels the option falls back to fp32 (tested below with the check
# patched); the bf16 maths itself can only be tested where the kernels are.
needs_cpu_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 kernels (AVX-512)"
)


# ---------------------------------------------------------------- config


def config_with(block=None, use_amp=False, task="self_supervision_task") -> AttrDict:
    model = {"AMP_PARAMS": {"USE_AMP": use_amp}, **({} if block is None else {"STEP_OPTIONS": block})}
    return AttrDict({"MODEL": model, "TRAINER": {"TASK_NAME": task}})


@pytest.mark.parametrize(
    "block, named",
    [
        ({"CHANNELS_LAST": "yes"}, f"{KEY}.CHANNELS_LAST='yes' must be True or False"),
        ({"COMPILE": 1}, f"{KEY}.COMPILE=1 must be True or False"),
        ({"AUTOCAST": "bf16"}, f"{KEY}.AUTOCAST='bf16' must be null or one of ['bfloat16']"),
        ({"AUTOCAST": "float16"}, "fp16 autocast is VISSL's config.MODEL.AMP_PARAMS"),
        ({"AUTOCAST": ["bfloat16"]}, f"{KEY}.AUTOCAST=['bfloat16'] must be null"),
        ({"CHANNEL_LAST": True}, f"unknown key(s) {KEY}.CHANNEL_LAST"),
    ],
)
def test_a_bad_value_names_its_key(block, named):
    with pytest.raises(ConfigError) as error:
        read_step_options(config_with(block))
    assert named in str(error.value)


def test_bf16_autocast_and_vissl_amp_together_name_both_keys():
    with pytest.raises(ConfigError) as error:
        read_step_options(config_with({"AUTOCAST": "bfloat16"}, use_amp=True))
    assert f"{KEY}.AUTOCAST='bfloat16' and config.MODEL.AMP_PARAMS.USE_AMP=True" in str(error.value)
    # VISSL's fp16 AMP alone, and the layout options with it, stay allowed.
    assert read_step_options(config_with({"CHANNELS_LAST": True}, use_amp=True)) == CHANNELS_LAST


def test_autocast_and_compile_are_refused_under_fsdp_naming_the_key():
    fsdp = "self_supervision_fsdp_task"
    for block in ({"COMPILE": True}, {"AUTOCAST": "bfloat16"}):
        with pytest.raises(ConfigError) as error:
            read_step_options(config_with(block, task=fsdp))
        [(name, value)] = block.items()
        assert f"{KEY}.{name}={value!r} is not supported with config.TRAINER.TASK_NAME={fsdp}" in str(error.value)
    # The input layout leaves FSDP's flattened parameters alone.
    assert read_step_options(config_with({"CHANNELS_LAST": True, "COMPILE": False}, task=fsdp)) == CHANNELS_LAST


def test_every_option_is_off_without_the_block_and_each_reads_as_given():
    assert read_step_options(config_with()) == read_step_options(config_with({})) == StepOptions()
    block = {"CHANNELS_LAST": True, "AUTOCAST": "bfloat16", "COMPILE": True}
    assert read_step_options(config_with(block)) == StepOptions(True, torch.bfloat16, True)


# ---------------------------------------------------------------- the digits model and DISSL loss


@pytest.fixture(scope="module")
def digits():
    return compose([f"config={DISSL_DIGITS}"])[1]


def digits_model(config, options: StepOptions = StepOptions()):
    torch.manual_seed(0)
    model = build_model(config.MODEL, config.OPTIMIZER)
    apply_step_options(model, options, "cpu")
    return model


def dissl_loss(config):
    return LOSS_REGISTRY.get("dissl_loss").from_config(config.LOSS.dissl_loss)


def batch():
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(8, 3, 16, 16, generator=generator) for _ in range(2)]  # 2 crops of 8 digits-sized images


def step(model, config):
    """One forward and backward: the model's outputs, its DISSL loss and the parameters' gradients."""
    outputs = model(batch())
    loss = dissl_loss(config)(outputs, None)
    loss.backward()
    return outputs, loss, {name: p.grad for name, p in model.named_parameters()}


def assert_close_to_scale(actual, expected, fraction, name=""):
    """Every entry of ``actual`` within ``fraction`` of ``expected``'s largest magnitude."""
    error, scale = (actual - expected).abs().max().item(), expected.abs().max().item()
    assert error <= fraction * scale, f"{name}: max |difference| {error:.3g} > {fraction} * {scale:.3g}"


def test_channels_last_runs_the_trunk_in_nhwc_with_the_outputs_and_gradients_of_nchw(digits):
    plain, fast = digits_model(digits), digits_model(digits, CHANNELS_LAST)
    layouts = []
    fast.trunk._feature_blocks.layer1.register_forward_hook(
        lambda module, args, out: layouts.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    (plain_out, plain_loss, plain_grads), (fast_out, fast_loss, fast_grads) = step(plain, digits), step(fast, digits)
    assert layouts == [True]  # activations in NHWC (64 channels, 8x8: not NCHW-contiguous at the same time)
    # Same maths, other kernels: fp32 rounding only (measured: outputs 1.3e-5, gradients 3e-5 of
    # their largest entry; the loss 2e-7 of itself).
    for a, b in zip(plain_out, fast_out):
        assert_close_to_scale(b, a, 1e-4)
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-5, atol=0)
    for name, grad in plain_grads.items():
        assert_close_to_scale(fast_grads[name], grad, 1e-3, name)
    # The state every reader and the optimizer see keeps PyTorch's default layout.
    assert all(t.is_contiguous() for t in [*fast.state_dict().values(), *fast_grads.values()])


@needs_cpu_bf16
def test_bf16_autocast_runs_trunk_and_heads_in_bf16_and_the_loss_in_fp32(digits):
    plain, fast = digits_model(digits), digits_model(digits, BF16)
    trunk_dtypes = []
    fast.trunk.register_forward_hook(lambda module, args, out: trunk_dtypes.extend(o.dtype for o in out))
    (_, plain_loss, _), (fast_out, fast_loss, fast_grads) = step(plain, digits), step(fast, digits)
    assert trunk_dtypes == [torch.bfloat16]
    assert [o.dtype for o in fast_out] == [torch.float32] * 2  # heads' bf16 outputs handed back in fp32
    assert fast_loss.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9) through 18 layers and the heads: the
    # loss (about -2.0 here) within 1% (measured: 0.33%). Gradients through BatchNorm on 8 images
    # per crop are not compared entry by entry (bf16 moves single entries by up to 80% of the largest).
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-2, atol=0)
    assert all(grad.dtype == torch.float32 and grad.isfinite().all() for grad in fast_grads.values())


def test_bf16_on_a_cpu_without_bf16_kernels_runs_in_fp32_with_a_warning_naming_the_key(digits, monkeypatch, caplog):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with caplog.at_level(logging.WARNING):
        fast = digits_model(digits, StepOptions(channels_last=True, autocast=torch.bfloat16))
    assert f"{KEY}.AUTOCAST='bfloat16' but this CPU has no bf16 kernels" in caplog.text
    trunk_dtypes = []
    fast.trunk.register_forward_hook(lambda module, args, out: trunk_dtypes.extend(o.dtype for o in out))
    with torch.no_grad():
        fast(batch())
    assert trunk_dtypes == [torch.float32]


@needs_cpu_bf16
def test_a_deep_copy_runs_as_the_model_it_copies(digits):
    """BYOL's momentum target is a deep copy of the model: it keeps the options (its own hooks)."""
    model = digits_model(digits, StepOptions(channels_last=True, autocast=torch.bfloat16))
    target = copy.deepcopy(model)
    trunk_dtypes = []
    target.trunk.register_forward_hook(lambda module, args, out: trunk_dtypes.extend(o.dtype for o in out))
    with torch.no_grad():
        outputs = target(batch())
    assert trunk_dtypes == [torch.bfloat16] and [o.dtype for o in outputs] == [torch.float32] * 2
    with torch.no_grad():
        torch.testing.assert_close(outputs, model(batch()), rtol=0, atol=0)


def test_the_trunk_called_alone_computes_as_without_the_layout_and_precision_options(digits):
    """The online evaluation calls the trunk alone: its features stay those of tools/probe.py."""
    plain = digits_model(digits).eval()
    fast = digits_model(digits, StepOptions(channels_last=True, autocast=torch.bfloat16)).eval()
    images = batch()[0]
    with torch.no_grad():
        assert_same_tensors(fast.trunk(images), plain.trunk(images))


def test_compile_keeps_the_state_dict_keys_and_a_copy_runs_eagerly(digits):
    plain, compiled = digits_model(digits), digits_model(digits, StepOptions(compile=True))
    assert compiled.trunk._compiled_call_impl is not None  # compiles at its first forward
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert copy.deepcopy(compiled).trunk._compiled_call_impl is None


def test_compile_unavailable_runs_eagerly_with_a_warning_naming_the_key(digits, monkeypatch, caplog):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("no-such-c++-compiler",))
    with caplog.at_level(logging.WARNING):
        model = digits_model(digits, StepOptions(compile=True))
    assert model.trunk._compiled_call_impl is None
    assert f"{KEY}.COMPILE=True but torch.compile needs a C++ compiler" in caplog.text


def test_checkpoints_load_both_ways_between_a_model_with_every_option_and_a_plain_one(digits):
    every = StepOptions(channels_last=True, autocast=torch.bfloat16, compile=True)
    # A training step with the layout and precision options (compiling is left to the slow test).
    trained = digits_model(digits, StepOptions(channels_last=True, autocast=torch.bfloat16))
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9, fused=True)
    step(trained, digits)
    optimizer.step()
    assert all(b["momentum_buffer"].is_contiguous() for b in optimizer.state.values())

    assert all(t.dtype != torch.bfloat16 and t.is_contiguous() for t in trained.state_dict().values())

    saved = copy.deepcopy(trained.get_classy_state())
    plain = digits_model(digits)
    plain.set_classy_state(saved)
    assert_same_tensors(plain.get_classy_state(), saved)

    with_options = digits_model(digits, every)
    with_options.set_classy_state(copy.deepcopy(plain.get_classy_state()))
    assert_same_tensors(with_options.get_classy_state(), saved)


def test_install_wraps_the_task_once(monkeypatch):
    from vissl.trainer.train_task import SelfSupervisionTask

    monkeypatch.setattr(SelfSupervisionTask, "_build_model", SelfSupervisionTask._build_model)  # restored after
    install()
    wrapped = SelfSupervisionTask._build_model
    install()
    assert SelfSupervisionTask._build_model is wrapped and wrapped.applies_step_options


@pytest.mark.slow
def test_inductor_compiles_a_tiny_trunk_to_the_eager_outputs(digits):
    """torch.compile's default backend (C++ code on CPU: tens of seconds the first time, cached
    after) on the digits trunk in eval mode: the eager outputs up to other kernel fusions' rounding
    (measured: 1e-6 of the largest entry)."""
    plain, compiled = digits_model(digits).eval(), digits_model(digits, StepOptions(compile=True)).eval()
    images = batch()[0][:4]
    with torch.no_grad():
        for a, b in zip(plain.trunk(images), compiled.trunk(images)):
            assert_close_to_scale(b, a, 1e-4)
    assert list(compiled.state_dict()) == list(plain.state_dict())


# ---------------------------------------------------------------- launcher runs

# 2 epochs of 2 steps (32 images, batch 16) with channels-last and bf16 autocast.
OPTIONS = ["++config.MODEL.STEP_OPTIONS.CHANNELS_LAST=True", "++config.MODEL.STEP_OPTIONS.AUTOCAST=bfloat16"]
RUN = [
    f"config={DISSL_DIGITS}",
    *TINY,
    "config.DATA.TRAIN.DATA_LIMIT=32",
    "config.OPTIMIZER.num_epochs=2",
    *OPTIONS,
]
FIRST, FINAL = "model_phase0.torch", "model_final_checkpoint_phase1.torch"


def train(directory: Path, *overrides: str) -> Path:
    """The plugin launcher with the step options installed (as ``import vissl_issl.plugin`` does
    once it calls :func:`install`)."""
    script = directory.parent / f"{directory.name}_launcher.py"
    script.write_text(
        "import runpy, sys\n"
        "from vissl_issl.plugin import step_options\n"
        "step_options.install()\n"
        f"sys.argv = [{str(LAUNCHER)!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(LAUNCHER)!r}, run_name='__main__')\n"
    )
    result = run_tool([script, *RUN, f"config.CHECKPOINT.DIR={directory}", *overrides], directory.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("step_options") / "run")


@pytest.mark.slow
@needs_cpu_bf16
def test_a_digits_run_with_channels_last_and_bf16_trains_and_its_checkpoint_loads_as_a_trunk(trained):
    losses = [r["loss"] for r in logged(trained) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)  # 2 epochs of 32 images / 16 per step
    assert "AUTOCAST: bfloat16" in (trained / "train_config.yaml").read_text()
    applied = f"{KEY}: StepOptions(channels_last=True, autocast=torch.bfloat16, compile=False)"
    assert applied in (trained / "log.txt").read_text()  # by the task's model build, in the rank
    trunk, weights = load_trunk(str(trained / FINAL))
    assert weights.arch.depth == 18
    state = load(trained / FINAL)["classy_state_dict"]["base_model"]["model"]["trunk"]
    assert all(t.dtype != torch.bfloat16 and t.is_contiguous() for t in state.values())
    assert trunk(torch.zeros(2, 3, 16, 16)).dtype == torch.float32


def resume_first_epoch(trained: Path, directory: Path, *overrides: str) -> Path:
    directory.mkdir()
    shutil.copy(trained / FIRST, directory / FIRST)
    shutil.copy(trained / FIRST, directory / "checkpoint.torch")
    train(directory, *overrides)
    assert len([r for r in logged(directory) if "loss" in r]) == 2  # the second epoch only
    return directory


@pytest.mark.slow
def test_a_run_with_the_options_resumed_from_its_first_epoch_ends_bit_for_bit_as_the_uninterrupted_one(
    trained, tmp_path
):
    resumed = resume_first_epoch(trained, tmp_path / "run")
    a, b = load(trained / FINAL)["classy_state_dict"], load(resumed / FINAL)["classy_state_dict"]
    for part in ("base_model", "optimizer", "loss"):
        assert_same_tensors(a[part], b[part])


@pytest.mark.slow
def test_a_run_without_the_options_resumes_from_a_checkpoint_written_with_them(trained, tmp_path):
    off = ["++config.MODEL.STEP_OPTIONS.CHANNELS_LAST=False", "++config.MODEL.STEP_OPTIONS.AUTOCAST=null"]
    resumed = resume_first_epoch(trained, tmp_path / "run", *off)
    assert "StepOptions(" not in (resumed / "log.txt").read_text()
    losses = [r["loss"] for r in logged(resumed) if "loss" in r]
    assert all(math.isfinite(x) for x in losses)
