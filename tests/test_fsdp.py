"""FSDP for the DISSL and CISSL ImageNet recipes: the ``*_fsdp`` recipes, the ``_fsdp`` heads and
VISSL's FSDP optimizer, on fairscale 0.3.7 (the FSDP that VISSL 0.1.6 uses).

fairscale 0.3.7's FSDP cannot run without CUDA: constructing one checks its process group with an
all_gather on its default ``cuda`` compute device, and forward, ``state_dict`` and
``summon_full_params`` use CUDA streams and ``torch.cuda.synchronize``. On CPU these tests build
the real wrappers (VISSL's ``fsdp_wrapper`` and ``fsdp_auto_wrap_bn``) in a gloo group with that
one check skipped, and check their structure, parameters (and shards on 2 ranks), SyncBN
conversion, the task and the optimizer. Forward, backward and training need a GPU and are skipped
without one; on a machine with one GPU, ``OMP_NUM_THREADS=1 python -m pytest tests/test_fsdp.py``
runs them all.
"""

import contextlib
import copy
import functools
import gc
import math
from typing import Any, Dict
from unittest import mock

import vissl_issl.plugin  # noqa: F401  (shims + registration)
from vissl_issl.plugin.launcher import compose

import pytest
import torch
import torch.distributed as dist
from classy_vision.optim import build_optimizer
from ddp import run_on_ranks
from fairscale.nn.data_parallel import FullyShardedDataParallel as FSDP
from fairscale.nn.data_parallel import fully_sharded_data_parallel
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from vissl.models import build_model, convert_sync_bn
from vissl.models.heads import MODEL_HEADS_REGISTRY, get_model_head
from vissl.optimizers.larc_fsdp import LARC_FSDP
from vissl.trainer.train_fsdp_task import SelfSupervisionFSDPTask
from vissl.trainer.trainer_main import build_task
from vissl.utils.fsdp_utils import get_global_group

from conftest import logged
from vissl_issl.config import ConfigError
from vissl_issl.losses.cissl import check_linear_head
from vissl_issl.optim.larc import LARC

RECIPES = [
    "dissl/dissl_resnet50_dNone_e100_m2",
    "dissl/dissl_resnet50_d8192_e400_m6",
    "cissl/cissl_resnet50_dNone_e100_m2",
    "cissl/cissl_resnet50_d8192_e100_m2",
]
DISSL, DISSL_FSDP = RECIPES[0], f"{RECIPES[0]}_fsdp"
HEADS = [
    ("residual_mlp", {"dims": [32, 64, 32]}),
    (
        "jl_mlp",
        {"dims": [32, 64, 16], "use_bn": True, "use_relu": True, "use_bias": False, "skip_last_layer_relu_bn": False},
    ),
    ("jl_mlp", {"dims": [32, 16], "use_bn": True, "use_bias": False, "skip_last_layer_relu_bn": False}),
]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="fairscale 0.3.7's FSDP runs only on CUDA")


@functools.lru_cache(maxsize=None)
def _composed(recipe: str):
    return compose([f"config=pretrain/{recipe}"])[1]


def config_of(recipe: str):
    return copy.deepcopy(_composed(recipe))


def unwrapped_name(name: str) -> str:
    """A parameter's name without FSDP's wrapper level (unflattened parameters)."""
    return ".".join(part for part in name.split(".") if part != "_fsdp_wrapped_module")


@contextlib.contextmanager
def one_rank(backend: str, init_method: str):
    dist.init_process_group(backend, init_method=init_method, rank=0, world_size=1)
    try:
        yield
    finally:
        vars(get_global_group).pop("_global_group", None)  # VISSL caches its FSDP group there
        dist.destroy_process_group()
        # FSDP modules hold the group in reference cycles: collect it here, not in a forked rank
        # (run_on_ranks), where collecting it hangs.
        gc.collect()


def skip_cuda_check_of_process_group():
    """FSDP's only CUDA call at construction: an all_gather on its compute device (default cuda)."""
    return mock.patch.object(fully_sharded_data_parallel, "validate_process_group")


@pytest.fixture
def one_cpu_rank(tmp_path):
    with one_rank("gloo", f"file://{tmp_path / 'init'}"), skip_cuda_check_of_process_group():
        yield


@pytest.fixture
def one_gpu_rank(tmp_path):
    torch.cuda.set_device(0)
    with one_rank("nccl", f"file://{tmp_path / 'init'}"):
        yield


def build_pair(name: str, options: Dict[str, Any], model_config):
    """The plain head and its ``_fsdp`` variant, from the same seed."""
    torch.manual_seed(0)
    plain = get_model_head(name)(model_config, **options)
    torch.manual_seed(0)
    return plain, get_model_head(f"{name}_fsdp")(model_config, **options)


# ---------------------------------------------------------------- configs (CPU)


@pytest.mark.parametrize("recipe", RECIPES)
def test_fsdp_recipe_is_the_ddp_recipe_on_the_fsdp_task_with_fsdp_heads(recipe):
    plain, fsdp = config_of(recipe), config_of(f"{recipe}_fsdp")
    assert plain.TRAINER.TASK_NAME == "self_supervision_task"
    assert fsdp.TRAINER.TASK_NAME == "self_supervision_fsdp_task"
    # SGD + LARC becomes VISSL's sgd_fsdp (LARC with norms all-reduced over shards) on one param group.
    assert plain.OPTIMIZER.name == "sgd" and fsdp.OPTIMIZER.name == "sgd_fsdp"
    assert fsdp.OPTIMIZER.construct_single_param_group_only
    fsdp_config = fsdp.MODEL.FSDP_CONFIG
    assert "AUTO_SETUP_FSDP" not in fsdp_config and "AMP_TYPE" not in fsdp_config  # fairscale gets the rest
    assert fsdp_config.flatten_parameters is False  # LARC: one norm per parameter
    assert fsdp_config.mixed_precision and fsdp_config.fp32_reduce_scatter  # pytorch AMP, O1
    assert fsdp_config.compute_dtype is torch.float32
    assert fsdp.MODEL.HEAD.PARAMS == [
        [[f"{name}_fsdp", options] for name, options in head] for head in plain.MODEL.HEAD.PARAMS
    ]
    assert all(name in MODEL_HEADS_REGISTRY for head in fsdp.MODEL.HEAD.PARAMS for name, _ in head)
    # Nothing else differs: trunk, data, loss, LARC settings, AMP, schedule, distributed setup.
    for config in plain, fsdp:
        del config.TRAINER["TASK_NAME"], config.OPTIMIZER["name"], config.OPTIMIZER["construct_single_param_group_only"]
        del config.MODEL.HEAD["PARAMS"], config.MODEL["FSDP_CONFIG"]
    assert fsdp == plain


def test_auto_setup_fsdp_on_any_recipe_is_its_fsdp_recipe():
    # The launcher names the `_fsdp` heads inside the per-head module lists; no heads part needed.
    overrides = ["config.MODEL.FSDP_CONFIG.AUTO_SETUP_FSDP=True", "config.MODEL.FSDP_CONFIG.AMP_TYPE=O1"]
    assert compose([f"config=pretrain/{DISSL}", *overrides])[1] == config_of(DISSL_FSDP)


def test_fsdp_heads_are_registered():
    assert {"residual_mlp_fsdp", "jl_mlp_fsdp", "mlp_fsdp"} <= set(MODEL_HEADS_REGISTRY)


def test_cissl_student_check_accepts_fsdp_linear_heads_only():
    linear = {"dims": [32, 16], "use_bn": True, "use_bias": False}
    check_linear_head([["jl_mlp_fsdp", linear], ["mlp_fsdp", linear]], "key")
    for bad in (["mlp_fsdp", {**linear, "use_relu": True}], ["residual_mlp_fsdp", {"dims": [32, 32]}]):
        with pytest.raises(ConfigError, match="not linear"):
            check_linear_head([bad], "key")


def test_mixed_precision_fsdp_on_one_process_fails_at_composition():
    one_process = [f"config=pretrain/{DISSL_FSDP}", "config.DISTRIBUTED.NUM_PROC_PER_NODE=1"]
    with pytest.raises(ConfigError, match="NUM_PROC_PER_NODE"):
        compose(one_process)
    config = compose([*one_process, "config.MODEL.AMP_PARAMS.USE_AMP=False"])[1]
    assert config.TRAINER.TASK_NAME == "self_supervision_fsdp_task" and not config.MODEL.FSDP_CONFIG.mixed_precision


def test_vissl_builds_the_fsdp_task_from_the_recipe():
    assert type(build_task(config_of(DISSL_FSDP))) is SelfSupervisionFSDPTask


# ---------------------------------------------------------------- construction (CPU, real FSDP)


@pytest.mark.parametrize("name,options", HEADS)
def test_factory_wraps_the_plain_head_with_its_batchnorms_in_fp32(one_cpu_rank, name, options):
    plain, wrapped = build_pair(name, options, config_of(DISSL_FSDP).MODEL)
    assert isinstance(wrapped, FSDP) and type(wrapped.module) is type(plain)
    assert not wrapped.flatten_parameters and wrapped.mixed_precision and wrapped.fp32_reduce_scatter
    inner = [m for m in wrapped.modules() if isinstance(m, FSDP) and m is not wrapped]
    batchnorms = [m for m in plain.modules() if isinstance(m, nn.BatchNorm1d)]
    assert batchnorms and [type(m.module) for m in inner] == [nn.BatchNorm1d] * len(batchnorms)
    assert all(not m.mixed_precision and not m.flatten_parameters for m in inner)
    # One process: FSDP keeps every parameter whole, under the plain head's names and init.
    params = {unwrapped_name(n): p.detach() for n, p in wrapped.named_parameters()}
    expected = {n: p.detach() for n, p in plain.named_parameters()}
    assert params.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(params[key], value, rtol=0, atol=0)


def _shards(model_config, name: str, options: Dict[str, Any], rank: int):
    with skip_cuda_check_of_process_group():
        _, wrapped = build_pair(name, options, model_config)
    return {unwrapped_name(n): (p.detach().clone(), tuple(p._orig_size)) for n, p in wrapped.named_parameters()}


@pytest.mark.parametrize("name,options", HEADS[:2])
def test_two_ranks_each_hold_half_of_every_parameter(tmp_path, name, options):
    model_config = config_of(DISSL_FSDP).MODEL
    ranks = run_on_ranks(functools.partial(_shards, model_config, name, options), tmp_path)
    torch.manual_seed(0)
    plain = get_model_head(name)(model_config, **options)
    for key, value in plain.named_parameters():
        (shard0, size), (shard1, _) = ranks[0][key], ranks[1][key]
        assert size == tuple(value.shape)
        assert shard0.shape == shard1.shape == (math.ceil(value.numel() / 2),)
        torch.testing.assert_close(
            torch.cat([shard0, shard1])[: value.numel()].view(size), value.detach(), rtol=0, atol=0
        )


def test_recipe_model_has_fsdp_heads_on_a_plain_trunk_and_converts_to_syncbn(one_cpu_rank):
    config = config_of(DISSL_FSDP)
    model = build_model(config.MODEL, config.OPTIMIZER)
    # The trunk has no FSDP of its own: with more than one process, the task's root FSDP shards it.
    assert not any(isinstance(m, FSDP) for m in model.trunk.modules())
    assert [[type(m.module).__name__ for m in head] for head in model.heads] == [
        ["ResidualMLP", "MLP", "MLP"],
        ["MLP", "MLP"],
    ]
    # The task converts BatchNorm to SyncBatchNorm after building the model: inside each BN's FSDP,
    # the SyncBatchNorm holds the very parameters that FSDP shards.
    model = convert_sync_bn(config, model)
    bn_wrappers = [m for m in model.heads.modules() if isinstance(m, FSDP) and isinstance(m.module, _BatchNorm)]
    assert len(bn_wrappers) == 4  # teacher: 2 in the residual MLP + 1; student: 1
    for wrapper in bn_wrappers:
        assert type(wrapper.module) is nn.SyncBatchNorm
        assert [id(p) for p in wrapper.params] == [id(wrapper.module.weight), id(wrapper.module.bias)]


def test_sgd_fsdp_steps_exactly_as_the_plugin_larc(one_cpu_rank):
    """The plugin swaps apex's LARC for its own under ``sgd`` only; under FSDP, VISSL's sgd_fsdp
    wraps plain SGD (the plugin's ``prepare``, LARC off) in LARC_FSDP, with the same rule."""
    fsdp_optimizer = build_optimizer(config_of(DISSL_FSDP).OPTIMIZER)
    ddp_optimizer = build_optimizer(config_of(DISSL).OPTIMIZER)
    start = [torch.randn(4, 3), torch.randn(3), torch.tensor([1.0, -2.0])]
    grads = [[torch.randn(4, 3), torch.randn(3), torch.zeros(2)] for _ in range(2)]  # zero norm: left alone
    updates = []
    for optimizer in fsdp_optimizer, ddp_optimizer:
        params = [nn.Parameter(t.clone()) for t in start]
        optimizer.set_param_groups(params)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.optimizer.step()
        updates.append([p.detach() - t for p, t in zip(params, start)])
    assert type(fsdp_optimizer.optimizer) is LARC_FSDP and type(fsdp_optimizer.optimizer.optim) is torch.optim.SGD
    assert isinstance(ddp_optimizer.optimizer, LARC)
    for fsdp_update, ddp_update in zip(*updates):
        torch.testing.assert_close(fsdp_update, ddp_update, rtol=1e-5, atol=1e-12)
    assert updates[0][0].abs().min() > 0 and updates[0][2].abs().max() == 0


# ---------------------------------------------------------------- forward, backward, training (GPU)


@needs_gpu
@pytest.mark.parametrize("name,options", HEADS)
def test_factory_forward_and_backward_match_the_plain_head_on_one_gpu(one_gpu_rank, name, options):
    plain, wrapped = build_pair(name, options, config_of(DISSL_FSDP).MODEL)
    x = torch.randn(8, options["dims"][0], device="cuda")
    outputs, grads = [], []
    for head in plain.cuda(), wrapped.cuda():
        with torch.autocast("cuda", dtype=torch.float16):  # mixed precision needs pytorch AMP
            out = head(x).float()
        out.square().mean().backward()
        torch.cuda.synchronize()
        outputs.append(out.detach())
        grads.append({unwrapped_name(n): p.grad for n, p in head.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-2, atol=1e-2)
    assert grads[1].keys() == grads[0].keys()
    for key, grad in grads[0].items():
        assert grads[1][key].dtype == torch.float32 and grads[1][key].shape == grad.shape
        torch.testing.assert_close(grads[1][key], grad, rtol=2e-2, atol=1e-3)


@needs_gpu
@pytest.mark.parametrize("mixed_precision", [True, False])
def test_alone_a_mixed_precision_fsdp_head_cuts_the_gradient_to_its_input(one_gpu_rank, mixed_precision):
    """Why one process may not train FSDP with AMP (``vissl_issl.plugin.inference.check_fsdp_world_size``):
    without the task's root FSDP each head is a root, which casts its input under no_grad."""
    model_config = config_of(DISSL_FSDP).MODEL
    model_config.FSDP_CONFIG.update(mixed_precision=mixed_precision, fp32_reduce_scatter=mixed_precision)
    upstream = nn.Linear(16, 16).cuda()
    head = get_model_head("residual_mlp_fsdp")(model_config, dims=[16, 16]).cuda()
    with torch.autocast("cuda", dtype=torch.float16, enabled=mixed_precision):
        out = head(upstream(torch.randn(8, 16, device="cuda")))
    out.float().sum().backward()
    torch.cuda.synchronize()
    assert all(p.grad is not None for p in head.parameters())
    assert (upstream.weight.grad is None) == mixed_precision


@pytest.mark.slow
@needs_gpu
def test_dissl_fsdp_recipe_trains_on_one_gpu_and_its_checkpoint_loads_into_the_ddp_heads(run_launcher):
    out = run_launcher(
        [
            "config.DATA.TRAIN.DATA_SOURCES=[sklearn_digits]",
            "config.DATA.TRAIN.DATASET_NAMES=[sklearn_digits]",
            "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
            "config.MODEL.AMP_PARAMS.USE_AMP=False",  # one process: see check_fsdp_world_size
            "config.OPTIMIZER.num_epochs=1",
            "config.OPTIMIZER.lr_schedule.warmup_epochs=0.1",  # the recipe's 10 must fit in the 1 epoch
        ],
        config=f"pretrain/{DISSL_FSDP}",
    )
    losses = [r["loss"] for r in logged(out) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)  # 64 images / 16 per step
    checkpoint = torch.load(out / "model_final_checkpoint_phase0.torch", map_location="cpu", weights_only=False)
    heads = checkpoint["classy_state_dict"]["base_model"]["model"]["heads"]
    plain = config_of(DISSL).MODEL
    ddp_heads = nn.ModuleList(
        nn.Sequential(*(get_model_head(name)(plain, **options) for name, options in head)) for head in plain.HEAD.PARAMS
    )
    assert {k: v.shape for k, v in heads.items()} == {k: v.shape for k, v in ddp_heads.state_dict().items()}
