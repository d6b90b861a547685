"""How the training step computes, set per recipe: channels-last activations, bf16 autocast and
``torch.compile`` of the trunk. What it computes (the losses' fp32 maths, the checkpoints) stays.

``config.MODEL.STEP_OPTIONS`` (not in VISSL's defaults: absent, every option is off; on the
command line a new key takes a leading ``+``, or ``++`` to set it whether a recipe has it or not)::

    CHANNELS_LAST: False  # the model's 4-D inputs (the crops) in channels-last (NHWC) memory format
    AUTOCAST: null        # or bfloat16: trunk and heads under torch.autocast, the loss in fp32
    COMPILE: False        # torch.compile of the trunk's forward

- ``CHANNELS_LAST``: the model's input crops are made channels-last; concatenation and
  convolutions keep that format, so every activation, batch norm and ReLU of the trunk runs in
  NHWC, the layout oneDNN (CPU) and cuDNN's tensor-core kernels (GPU) prefer. The parameters
  stay in PyTorch's default layout (a convolution takes its weight in either, reordering it per
  call): gradients and optimizer state keep it, so checkpoints, DDP's gradient buckets and
  torch's fused SGD see what an NCHW run gives them, and a run may switch the option at a resume.
  Converting the parameters as well measured 1.15x instead of 1.13x on a CPU ResNet-50 forward
  and backward (2 threads) and no gain on the digits trunk, and would leave a converted run's
  momentum buffers in another layout than the parameters of a run that resumes it without the
  option, where torch 2.15's fused SGD computes a wrong step without an error. Same maths in
  fp32: on the digits model the outputs stay within 1e-4 and the gradients within 1e-3 of their
  largest entry, the DISSL loss within 1e-5 of itself (tested; measured 1.3e-5, 3e-5, 2e-7).
- ``AUTOCAST: bfloat16``: the whole model forward (trunk and heads) runs under
  ``torch.autocast(<device>, torch.bfloat16)`` on CPU or CUDA, and its outputs are handed back in
  fp32, so every loss, the plugin's and VISSL's, computes outside autocast in fp32 on fp32 inputs
  (gradients flow back through the cast). bf16 has fp32's exponent range: no loss scaler. On a
  CPU without oneDNN's bf16 kernels (no AVX-512), where emulated bf16 is slower than fp32, the
  model runs in fp32 and a warning names the key: a recipe may turn bf16 on for every CPU.
  VISSL's own AMP (``config.MODEL.AMP_PARAMS``: fp16 autocast around forward *and* loss, with a
  GradScaler) stays available and unchanged; the two are exclusive. A deep copy of the model
  (BYOL's momentum target) runs the same way: it keeps the model's hooks. VISSL's DINO teacher,
  which its hook builds anew from the config, runs in fp32 and NCHW; so does the online
  evaluation, which calls the trunk alone: its features stay those of ``tools/probe.py``.
- ``COMPILE``: ``trunk.compile()``, PyTorch's in-place compilation: the module, its parameters
  and ``state_dict`` keys are unchanged (no ``_orig_mod.`` prefix), so every checkpoint reader
  (``vissl_issl.checkpoints``, ``vissl_issl.weights``, VISSL's resume) reads the run's checkpoints.
  A deep copy of the model (BYOL's target) runs eagerly; the online evaluation, which calls the
  trunk, runs it compiled in eval mode (a second graph). The first steps compile (minutes on CPU,
  more for each new input shape); when ``torch.compile`` cannot run here (no C++ compiler on CPU,
  no Triton on GPU, an unsupported Python) the trunk runs eagerly and a warning names the key
  and the reason.

The options are applied to the model VISSL's task builds (:func:`install` wraps
``SelfSupervisionTask._build_model``), before it is moved to the GPU, wrapped by DDP, loaded from
a checkpoint or copied by a hook: every later reader (the train step, BYOL's target made in its
hook's ``on_start``, VISSL's feature extraction, ``tools/benchmark.py``) gets the model as it
will run, with no hook order to keep. None of the options changes a ``state_dict``, an optimizer
state or the data a step draws: a resumed run stays bit-identical to the uninterrupted one with
the same options (tested with channels-last and bf16 on the digits recipe; a compiled trunk
recompiles on resume to the same code, not tested).

``AUTOCAST`` and ``COMPILE`` are refused under VISSL's FSDP task, which casts the parameters for
its own mixed precision and wraps the trunk's modules in its own; ``CHANNELS_LAST``, which leaves
the parameters alone, applies there too.
"""

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.nn as nn

from vissl_issl.config import ConfigError, check_known_keys

KEY = "config.MODEL.STEP_OPTIONS"
DEFAULTS = {"CHANNELS_LAST": False, "AUTOCAST": None, "COMPILE": False}
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16}
FSDP_TASK = "self_supervision_fsdp_task"


@dataclass(frozen=True)
class StepOptions:
    """``config.MODEL.STEP_OPTIONS`` as read: ``autocast`` is the dtype, None for off."""

    channels_last: bool = False
    autocast: Optional[torch.dtype] = None
    compile: bool = False


def read_step_options(config) -> StepOptions:
    """The options of a VISSL config (``cfg.config``); a bad value raises ``ConfigError`` naming
    its key, as do options that cannot work with the rest of the config."""
    block = config.MODEL.get("STEP_OPTIONS") or {}
    check_known_keys(block, DEFAULTS, KEY)
    values = {**DEFAULTS, **block}
    for name in ("CHANNELS_LAST", "COMPILE"):
        if not isinstance(values[name], bool):
            raise ConfigError(f"{KEY}.{name}={values[name]!r} must be True or False")
    autocast = values["AUTOCAST"]
    if autocast is not None and not (isinstance(autocast, str) and autocast in AUTOCAST_DTYPES):
        raise ConfigError(
            f"{KEY}.AUTOCAST={autocast!r} must be null or one of {sorted(AUTOCAST_DTYPES)}; fp16 autocast is "
            "VISSL's config.MODEL.AMP_PARAMS (USE_AMP: True, AMP_TYPE: pytorch), with the GradScaler that fp16 "
            "gradients need"
        )
    options = StepOptions(values["CHANNELS_LAST"], AUTOCAST_DTYPES.get(autocast), values["COMPILE"])
    if options.autocast is not None and config.MODEL.AMP_PARAMS.USE_AMP:
        raise ConfigError(
            f"{KEY}.AUTOCAST={autocast!r} and config.MODEL.AMP_PARAMS.USE_AMP=True both set the mixed precision: "
            f"bf16 autocast needs no loss scaler, so set config.MODEL.AMP_PARAMS.USE_AMP=False, or {KEY}.AUTOCAST=null "
            "to keep VISSL's fp16 AMP with its GradScaler"
        )
    if config.TRAINER.TASK_NAME == FSDP_TASK:
        for name in ("AUTOCAST", "COMPILE"):
            if values[name] != DEFAULTS[name]:
                raise ConfigError(
                    f"{KEY}.{name}={values[name]!r} is not supported with config.TRAINER.TASK_NAME={FSDP_TASK}: "
                    "FSDP casts the parameters for its own mixed precision (config.MODEL.AMP_PARAMS) and wraps the "
                    f"trunk's modules in its own; use DDP or {KEY}.{name}={DEFAULTS[name]!r}"
                )
    return options


def channels_last(batch: Any) -> Any:
    """``batch`` (a tensor, or lists, tuples and dicts of them: VISSL's model inputs) with its 4-D
    tensors in channels-last memory format."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, list):
        return [channels_last(item) for item in batch]
    if isinstance(batch, tuple):
        return tuple(channels_last(item) for item in batch)
    if isinstance(batch, dict):
        return {key: channels_last(value) for key, value in batch.items()}
    return batch


def channels_last_inputs(module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """Forward pre-hook: the module's inputs through :func:`channels_last`."""
    return channels_last(args)


def float32_outputs(output: Any, dtype: torch.dtype) -> Any:
    """``output`` (a tensor or nested lists and tuples of them) with its ``dtype`` tensors cast to fp32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.dtype == dtype else output
    if isinstance(output, list):
        return [float32_outputs(item, dtype) for item in output]
    if isinstance(output, tuple):
        return tuple(float32_outputs(item, dtype) for item in output)
    return output


class Autocast:
    """A module's forward under ``torch.autocast(<its parameters' device>, dtype)``, its outputs
    handed back in fp32: :meth:`enter` is a forward pre-hook, :meth:`leave` a forward hook called
    even when the forward raises. Hooks, unlike a wrapper module, leave the ``state_dict`` keys as
    they are, and a deep copy of the module copies them with it (its own ``Autocast``)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.active: List[torch.autocast] = []

    def enter(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        # The device is read per call: the task moves the model to the GPU after it is built.
        context = torch.autocast(next(module.parameters()).device.type, self.dtype)
        context.__enter__()
        self.active.append(context)

    def leave(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        self.active.pop().__exit__(None, None, None)
        return float32_outputs(output, self.dtype)


def compile_unavailable(device_type: str) -> Optional[str]:
    """Why ``torch.compile`` (its default inductor backend) cannot run on ``device_type`` here, or None."""
    import torch._dynamo

    if not torch._dynamo.is_inductor_supported():
        return f"torch.compile does not support this Python ({torch.__version__})"
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton, which torch.compile needs for GPU code, is not installed"
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as error:  # inductor's InvalidCxxCompiler, or whatever a future torch raises
        return f"torch.compile needs a C++ compiler for CPU code: {error}"
    return None


def apply_step_options(model: nn.Module, options: StepOptions, device_type: str) -> None:
    """Applies ``options`` to a VISSL model (``model.trunk``, heads) in place, for ``device_type``
    (``cpu`` or ``cuda``)."""
    if options != StepOptions():
        logging.info(f"{KEY}: {options}")
    if options.channels_last:
        model.register_forward_pre_hook(channels_last_inputs)
    if options.compile:
        reason = compile_unavailable(device_type)
        if reason is None:
            model.trunk.compile()
        else:
            logging.warning(f"{KEY}.COMPILE=True but {reason}: the trunk runs eagerly")
    if options.autocast is not None:
        if device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"{KEY}.AUTOCAST='bfloat16' but {torch.cuda.get_device_name()} has no bf16 support: use "
                "config.MODEL.AMP_PARAMS (fp16 autocast with VISSL's GradScaler)"
            )
        if device_type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            logging.warning(
                f"{KEY}.AUTOCAST='bfloat16' but this CPU has no bf16 kernels (AVX-512): the model runs in fp32"
            )
            return
        autocast = Autocast(options.autocast)
        model.register_forward_pre_hook(autocast.enter)
        model.register_forward_hook(autocast.leave, always_call=True)


def install() -> None:
    """Makes VISSL's task apply ``config.MODEL.STEP_OPTIONS`` to every model it builds (idempotent).

    ``SelfSupervisionTask._build_model`` returns the model built, SyncBN-converted and initialised
    from ``MODEL.WEIGHTS_INIT``, before the task moves it to the GPU, wraps it in DDP or loads a
    checkpoint into it."""
    from vissl.trainer.train_task import SelfSupervisionTask

    build_model = SelfSupervisionTask._build_model
    if getattr(build_model, "applies_step_options", False):
        return

    def build_model_with_step_options(self):
        model = build_model(self)
        device_type = "cuda" if self.config.MACHINE.DEVICE == "gpu" else "cpu"
        apply_step_options(model, read_step_options(self.config), device_type)
        return model

    build_model_with_step_options.applies_step_options = True
    SelfSupervisionTask._build_model = build_model_with_step_options
