"""The ISSL paper's TinyImageNet experiments as data: the cells of the authors'
``bin/tinyimagenet/*.sh`` scripts (../shared/specs/issl_experiments.md), each a plugin recipe plus
overrides, with the probes that score it and the authors' single-seed number where they published one.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

LABEL_FRACTIONS = (1.0, 0.1, 0.01, 0.002)  # Fig. 7a: all train labels, then stratified subsets


@dataclass(frozen=True)
class Probe:
    """One probe of a run: its head (``linear`` or ``mlp``) on a stratified ``label_fraction`` of the
    train labels, with the authors' TinyImageNet protocol."""

    head: str = "linear"
    label_fraction: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.head}_{self.label_fraction:g}"


@dataclass(frozen=True)
class Cell:
    """One pretraining run of an experiment (per seed): ``config=pretrain/<recipe>`` plus ``overrides``.

    ``series`` and ``x`` place it in a figure (Fig. 7a: series = the augmentation strength; Fig. 7c:
    series = Linear / MLP, x = z); ``authors`` is the number the ISSL README reports for it.
    """

    name: str
    recipe: str
    overrides: Tuple[str, ...] = ()
    probes: Tuple[Probe, ...] = (Probe(),)
    series: Optional[str] = None
    x: Optional[float] = None
    authors: Optional[float] = None


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    cells: Tuple[Cell, ...]


def table1(name: str, title: str, baseline: Cell, method: str, authors: Tuple[float, ...]) -> Experiment:
    """A Table 1 column: the baseline, then the method and its cumulative cells."""
    recipe = f"{method}/{method}_resnet18_tinyimagenet"
    suffixes = ("", "_d2048", "_d2048_e1000", "_d2048_e1000_coarse")
    names = (method.upper(), "+ dim.", "+ epochs", "+ aug.")
    cells = [Cell(n, recipe + suffix, authors=a) for n, suffix, a in zip(names, suffixes, authors[1:])]
    return Experiment(name, title, (Cell(baseline.name, baseline.recipe, authors=authors[0]), *cells))


def fig7a_cell(strength: float, classes: int) -> Cell:
    """DISSL at augmentation strength ``strength`` with C = ``classes``, batch 512, probed on every
    label fraction."""
    overrides = (
        "config.DATA.TRAIN.BATCHSIZE_PER_REPLICA=512",
        f"config.DATA.TRAIN.TRANSFORMS.0.strength={strength}",
        f"config.MODEL.HEAD.PARAMS.0.2.1.dims=[512,{classes}]",  # the teacher's last layer
        f"config.MODEL.HEAD.PARAMS.1.1.1.dims=[512,{classes}]",  # the student's
    )
    probes = tuple(Probe("linear", fraction) for fraction in LABEL_FRACTIONS)
    return Cell(f"s={strength:g}", "dissl/dissl_resnet18_tinyimagenet", overrides, probes, series=f"s={strength:g}")


def fig7c_cell(z: int, mlp: bool) -> Cell:
    """CISSL for 1000 epochs with z = ``z`` through the resizer (bottleneck 512); the MLP series has
    MLP heads on both sides and is probed by an MLP."""
    recipe = "cissl/cissl_mlp_resnet18_tinyimagenet" if mlp else "cissl/cissl_resnet18_tinyimagenet"
    overrides = (
        "config.OPTIMIZER.num_epochs=1000",
        f"config.MODEL.REPRESENTATION_DIM={z}",
        f"config.MODEL.TRUNK.TV_RESNET.RESIZER={{HIDDEN_DIM:512,OUT_DIM:{z}}}",
    )
    series = "MLP" if mlp else "Linear"
    return Cell(f"{series} z={z}", recipe, overrides, (Probe("mlp" if mlp else "linear"),), series=series, x=z)


EXPERIMENTS: Dict[str, Experiment] = {
    experiment.name: experiment
    for experiment in (
        table1(
            "table1_distillation",
            "Table 1, distillation: DINO -> DISSL -> + dim. -> + epochs -> + aug.",
            Cell("DINO", "dino/dino_resnet18_tinyimagenet"),
            "dissl",
            (43.3, 45.1, 48.0, 49.0, 50.7),
        ),
        table1(
            "table1_contrastive",
            "Table 1, contrastive: SimCLR -> CISSL -> + dim. -> + epochs -> + aug.",
            Cell("SimCLR", "simclr/simclr_resnet18_tinyimagenet"),
            "cissl",
            (45.2, 45.8, 47.6, 48.7, 51.2),
        ),
        Experiment(
            "fig7a_augmentations",
            "Fig. 7a: DISSL's augmentation strength vs. the number of probe labels",
            tuple(fig7a_cell(s, c) for s, c in ((0.25, 24000), (0.5, 20000), (1.0, 16384))),
        ),
        Experiment(
            "fig7c_dimensions",
            "Fig. 7c: CISSL's dimension z, probe matching the head (linear / MLP)",
            tuple(fig7c_cell(z, mlp) for mlp in (False, True) for z in (128, 512, 2048, 8192)),
        ),
    )
}
