"""The method table: every method the plugin trains, with what the tools need to run it.

``tools/quick_start.py`` trains the rows with a ``digits_config``, ``tools/benchmark.py`` times the
rows with a ``benchmark``, and the README's registry rows are :func:`readme_loss_rows` (a test
keeps them equal, defaults included). Adding a method adds one row here.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# The benchmark runs one epoch; the recipes' warm-ups (10 epochs, W-MSE's 500 steps) and drops
# (E - 50) would not fit in it (vissl_issl/schedules.py refuses them).
ONE_EPOCH_SCHEDULE = ("config.OPTIMIZER.lr_schedule.warmup_epochs=0.1",)
ONE_EPOCH_W_MSE_SCHEDULE = (
    "config.OPTIMIZER.lr_schedule.warmup_steps=0",
    "config.OPTIMIZER.lr_schedule.decay_epochs_before_end=[0.5,0.25]",
)


@dataclass(frozen=True)
class Benchmark:
    """A row of ``tools/benchmark.py step``: a recipe and the overrides that make it a one-epoch
    ResNet-50 run on synthetic data."""

    label: str
    config: str
    overrides: Tuple[str, ...] = ()
    # Overrides for more than 2 crops; None: a 2-view method (no multi-crop row).
    multicrop: Optional[Tuple[str, ...]] = None
    larc: bool = True
    gpu_only: str = ""  # why the method cannot run on CPU
    min_batch: int = 1  # the loss needs at least this many images per GPU


@dataclass(frozen=True)
class Method:
    label: str
    loss: str  # the registered loss; VISSL's own for a baseline
    summary: str  # the README's description of the loss ("" for VISSL's)
    recipes: str  # the config folder of its recipes
    digits_config: Optional[str] = None  # the quick start's config (trains on its own)
    benchmark: Optional[Benchmark] = None
    compressor: bool = False  # the quick start codes its representations

    @property
    def multicrop(self) -> bool:
        return self.benchmark is not None and self.benchmark.multicrop is not None


METHODS: Dict[str, Method] = {
    "dissl": Method(
        "DISSL",
        "dissl_loss",
        "L = mean CE(t_a -> s_b) - lambda mean_a H(global batch marginal of t_a) + beta mean CE(t_a -> t_a')",
        "pretrain/dissl",
        "pretrain/dissl/dissl_resnet18_digits",
        Benchmark("DISSL", "pretrain/dissl/dissl_resnet50_dNone_e100_m2", ONE_EPOCH_SCHEDULE, multicrop=()),
    ),
    "cissl": Method(
        "CISSL",
        "cissl_loss",
        "L = mean_r -1/2 [log q(same view of r) + log q(other view of r)], q = softmax over all 2B global "
        "teacher columns of normalize(student_r) . normalize(teacher_c) / temperature, same-view column kept",
        "pretrain/cissl",
        "pretrain/cissl/cissl_resnet18_digits",
        Benchmark("CISSL", "pretrain/cissl/cissl_resnet50_dNone_e100_m2", ONE_EPOCH_SCHEDULE),
    ),
    "asymmetric_simclr": Method(
        "SimCLR, teacher/student heads",
        "asymmetric_simclr_loss",
        "SimCLR's NT-Xent between student rows and teacher columns (positive: the other view; both views of "
        "the same image excluded as negatives); with one shared head it equals VISSL's `simclr_info_nce_loss` "
        "(tested, 1 and 2 processes)",
        "pretrain/cissl/head_ablations",
    ),
    "simclr": Method(
        "SimCLR (VISSL's loss)",
        "simclr_info_nce_loss",
        "",
        "pretrain/simclr",
        "pretrain/simclr/simclr_resnet18_digits",
        Benchmark(
            "SimCLR (VISSL)",
            "pretrain/simclr/simclr_8node_resnet",
            multicrop=(
                "config.LOSS.name=multicrop_simclr_info_nce_loss",
                "config.DATA.TRAIN.COLLATE_FUNCTION=multicrop_collator",
            ),
        ),
    ),
    "c_simclr": Method(
        "C-SimCLR",
        "c_simclr_loss",
        "contrastive CEB (C-SimCLR): mean over images of beta (R + R') + H + H' with vMF codes",
        "pretrain/c_simclr",
        "pretrain/c_simclr/c_simclr_resnet18_digits",
        Benchmark("C-SimCLR", "pretrain/c_simclr/c_simclr_resnet50_e300", ONE_EPOCH_SCHEDULE),
    ),
    "byol": Method(
        "BYOL",
        "byol_loss",
        "w / B sum_i of both directions' \\|\\|l2n(q) - l2n(t of the other view)\\|\\|^2, EMA target run by the "
        "plugin's hook",
        "pretrain/byol",
        "pretrain/byol/byol_resnet18_digits",
        Benchmark("BYOL", "pretrain/byol/byol_resnet50_e300", ONE_EPOCH_SCHEDULE),
    ),
    "c_byol": Method(
        "C-BYOL",
        "c_byol_loss",
        "`byol_loss` on q + beta / B sum_r R_r, R_r = log vMF(z_r; mu_r, kappa_e) - log vMF(z_r; nu_r', kappa_b)",
        "pretrain/c_byol",
        "pretrain/c_byol/c_byol_resnet18_digits",
        Benchmark("C-BYOL", "pretrain/c_byol/c_byol_resnet50_e300", ONE_EPOCH_SCHEDULE),
    ),
    "w_mse": Method(
        "W-MSE 2",
        "w_mse_loss",
        "for each of `w_iter` random partitions of the local batch into groups of `w_size`, whiten every view "
        "per group through a fp32 Cholesky factor (shrinkage `w_eps`), then mean 2 - 2 cos (or MSE, "
        "`normalize: false`) over all view pairs",
        "pretrain/w_mse",
        "pretrain/w_mse/w_mse_resnet18_digits",
        Benchmark(
            "W-MSE 2",
            "pretrain/w_mse/w_mse2_resnet18_imagenet100",
            ("config.MODEL.HEAD.PARAMS.0.1.dims=[2048,1024]", *ONE_EPOCH_W_MSE_SCHEDULE),
            min_batch=256,  # w_size: whitening needs more images than the 128 embedding dimensions
        ),
    ),
    "bince": Method(
        "BINCE compressor",
        "bince_loss",
        "w(t) mean bits + beta InfoNCE(l2n proj(z_hat) of two views, gathered, tau = 1/min(e^s, 100)) + aux; "
        "the default beta is the authors' lambda 1/0.003 at code beta 0.1",
        "pretrain/bince",
        "pretrain/bince/bince_resnet18_digits",
        Benchmark("BINCE (compressor)", "pretrain/bince/bince_resnet50_imagenet", ONE_EPOCH_SCHEDULE, larc=False),
        compressor=True,
    ),
    "vic": Method(
        "VIC compressor",
        "vic_loss",
        "w(t) mean bits + beta (-log q(canonical image \\| z_hat)) + aux",
        "pretrain/vic",
        "pretrain/vic/vic_resnet18_digits",
        compressor=True,
    ),
    "feature_compressor": Method(
        "feature compressor",
        "feature_compression_loss",
        "w(t) mean bits + beta \\|\\|z_hat - z\\|\\|_1 + aux over a frozen trunk's features; the default beta is "
        "the authors' CLIP compressor's",
        "pretrain/feature_compressor",
    ),
}


def quick_start_methods() -> List[str]:
    return [name for name, method in METHODS.items() if method.digits_config]


def render_default(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def readme_loss_rows() -> List[str]:
    """The README's rows of the plugin's losses, with each loss's defaults read from its class."""
    from vissl_issl.losses import LOSSES

    by_name = {cls.NAME: cls for cls in LOSSES}
    rows = []
    for method in METHODS.values():
        cls = by_name.get(method.loss)
        if cls is None:
            continue
        settings = [f"`{k}` {render_default(v)}" for k, v in cls.DEFAULTS.items() if k not in cls.INFERRED]
        inferred = [f"`{k}`" for k in cls.INFERRED]
        block = ", ".join(settings) + (f"; {', '.join(inferred)} inferred" if inferred else "")
        rows.append(f"| loss | `{cls.NAME}` | {method.summary}; block `LOSS.{cls.NAME}` ({block}) |")
    return rows
