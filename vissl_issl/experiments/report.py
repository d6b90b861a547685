"""Collects an experiment's ``probes.json`` files into ``results.csv``, ``table.md`` and figures.

Every number is a test top-1 (%) of the authors' TinyImageNet probe protocol, given two ways:
``max`` is the best test accuracy over the probe's weight-decay sweep (what the ISSL paper reports),
``selected`` the test accuracy at the weight decay chosen on held-out train rows (no test label
chose it). Tables and figures show the mean over seeds with the sample standard deviation; a
difference between two cells exceeds the seed spread when their mean ± std intervals do not overlap.
"""

import csv
import json
import statistics
from pathlib import Path
from typing import Dict, List, Tuple

from vissl_issl.experiments.definitions import Experiment
from vissl_issl.experiments.runner import PROBES_FILE, run_dir

COLUMNS = ("experiment", "cell", "seed", "recipe", "probe", "head", "label_fraction", "train_rows",
           "selected_top1", "selected_wd", "max_top1", "pretrain_seconds", "probe_seconds")  # fmt: skip


def rows(experiment: Experiment, out: Path, seeds: List[int]) -> List[Dict]:
    """One row per run and probe found under ``out`` (runs not finished yet are left out)."""
    found = []
    for cell in experiment.cells:
        for seed in seeds:
            path = run_dir(out, experiment, cell, seed) / PROBES_FILE
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
            seconds = record.get("seconds", {})  # runs from before the runner recorded them have none
            for name, result in record["probes"].items():
                found.append({
                    "experiment": experiment.name, "cell": cell.name, "seed": seed, "recipe": cell.recipe,
                    "probe": name, "head": result["head"], "label_fraction": result["label_fraction"],
                    "train_rows": result["train_rows"], "selected_top1": result["test_top1"],
                    "selected_wd": result["wd"], "max_top1": result["max_test_top1"],
                    "pretrain_seconds": seconds.get("pretrain"), "probe_seconds": seconds.get("probe"),
                })  # fmt: skip
    return found


def seeds_in(out: Path, experiment: Experiment) -> List[int]:
    """Every seed that has a run directory of ``experiment`` under ``out``."""
    return sorted({int(path.name[4:]) for path in (out / experiment.name).glob("*/seed*") if path.name[4:].isdigit()})


def summary(values: List[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def mean_std(values: List[float]) -> Tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def change(values: List[float], before: List[float]) -> str:
    """``values``' mean minus ``before``'s, and whether it exceeds the seed spread (the two mean ± std
    intervals do not overlap); a spread needs two seeds on both sides."""
    if not values or not before:
        return "–"
    (mean, std), (mean_before, std_before) = mean_std(values), mean_std(before)
    if min(len(values), len(before)) < 2:
        verdict = "one seed"
    else:
        verdict = "exceeds the spread" if abs(mean - mean_before) > std + std_before else "within the spread"
    return f"{mean - mean_before:+.1f} ({verdict})"


def table(experiment: Experiment, found: List[Dict]) -> str:
    lines = [
        f"# {experiment.title}",
        "",
        "Test top-1 (%), mean ± std over seeds; `max` is the best over the probe's wd sweep (the paper's",
        "number), `selected` the wd chosen on held-out train rows. `max vs. above` compares `max` with the",
        "nearest cell above that has the same probe; the difference exceeds the seed spread when the two",
        "mean ± std intervals do not overlap.",
        "",
        "| cell | probe | seeds | max | selected | max vs. above | authors (1 seed, TinyImageNet) |",
        "|---|---|---|---|---|---|---|",
    ]
    above: Dict[str, List[float]] = {}
    for cell in experiment.cells:
        for probe in cell.probes:
            picked = [row for row in found if row["cell"] == cell.name and row["probe"] == probe.name]
            best = [row["max_top1"] for row in picked]
            authors = "–" if cell.authors is None or probe.label_fraction != 1 else f"{cell.authors:.1f}"
            lines.append(
                f"| {cell.name} | {probe.head}, {100 * probe.label_fraction:g}% of the labels | {len(picked)} "
                f"| {summary(best)} | {summary([row['selected_top1'] for row in picked])} "
                f"| {change(best, above.get(probe.name, []))} | {authors} |"
            )
            above[probe.name] = best
    return "\n".join(lines + ["", run_times(found)]) + "\n"


def run_times(found: List[Dict]) -> str:
    """The median pretraining and probing wall-clock minutes over the runs that recorded them."""
    runs = {(row["cell"], row["seed"]): row for row in found}.values()
    parts = []
    for stage in ("pretrain", "probe"):
        minutes = [row[f"{stage}_seconds"] / 60 for row in runs if row[f"{stage}_seconds"] is not None]
        if minutes:
            spread = f"{min(minutes):.1f}-{max(minutes):.1f}, {len(minutes)} run{'s' * (len(minutes) != 1)}"
            parts.append(f"{stage} {statistics.median(minutes):.1f} min ({spread})")
    timed = ", ".join(parts) if parts else "none recorded"
    return f"Wall-clock per run, median (range, runs that recorded it; a resumed run records no pretraining): {timed}."


def write_csv(found: List[Dict], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(found)


def figure(experiment: Experiment, found: List[Dict], out: Path, name: str, x_key: str, x_label: str, log: int):
    """Mean max-top-1 against ``x_key`` per series, with std error bars; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, Dict[float, List[float]]] = {}
    for cell in experiment.cells:
        for row in (row for row in found if row["cell"] == cell.name):
            x = cell.x if x_key == "x" else row[x_key]
            series.setdefault(cell.series or cell.name, {}).setdefault(x, []).append(row["max_top1"])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, points in series.items():
        xs = sorted(points)
        stats = [mean_std(points[x]) for x in xs]
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=log)
    ax.set_xlabel(x_label)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(experiment.title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    for suffix in ("png", "pdf"):
        fig.savefig(out / f"{name}.{suffix}")
    plt.close(fig)


def report(experiment: Experiment, out: Path) -> Path:
    """Writes ``results.csv``, ``table.md`` and the figures the experiment has into
    ``<out>/<experiment>/``; returns that folder."""
    folder = out / experiment.name
    found = rows(experiment, out, seeds_in(out, experiment))
    if not found:
        raise FileNotFoundError(f"no finished run of {experiment.name} under {folder}: run it first")
    write_csv(found, folder / "results.csv")
    (folder / "table.md").write_text(table(experiment, found))
    if any(len(cell.probes) > 1 for cell in experiment.cells):  # Fig. 7a: probe labels on x
        figure(experiment, found, folder, "fig7a", "train_rows", "probe training samples", 10)
    if any(cell.x is not None for cell in experiment.cells):  # Fig. 7c: z on x
        figure(experiment, found, folder, "fig7c", "x", "dimension z", 2)
    return folder
