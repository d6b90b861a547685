"""The lossyless headline on digits: a feature compressor over a frozen self-supervised trunk,
swept over beta, against JPEG, WebP and PNG of the same images (Dubois et al. 2021, spec
compression_ssl.md §A.5-A.7; their CLIP compressor, with the DISSL digits trunk in CLIP's place).

For each seed::

    dissl/seed<k>                  DISSL digits pretraining (pretrain/dissl/dissl_resnet18_digits)
    <trunk>/beta_<b>/seed<k>       feature compressor (pretrain/feature_compressor/
                                   feature_compressor_dissl_resnet18_digits) over the frozen trunk:
                                   trunk "dissl" (the run above) or "random" (no weights: the
                                   seed's random initialisation, the control)
      report/results.json          tools/compress.py report: rates, the probe on the decoded codes
                                   z_hat; for the largest beta also the codec sweep

The probe (tools/probe.py's linear probe, authors' lr x wd sweep selected on held-out train rows)
scores the decoded codes, and for the codecs the trunk features of the decoded images (the 512-d
features are coded as they are, dims [512, 512], so the compressor's unquantised code ``z`` IS the
trunk's features: the codec sweep does not depend on beta, and runs once per trunk and seed).

Bits are compared the same way for both: each image's byte string alone, with no container around
it (ours: the range coder's record, the "payload" rate; the codecs: the whole file Pillow writes,
headers included). Storing many images in one file adds the same length field per image to both.

``run`` resumes: a finished report is not redone, a finished pretraining not retrained, a killed
one resumes from its last checkpoint (VISSL's AUTO_RESUME). ``report`` writes ``results.csv``,
``table.md`` and ``rate_accuracy.png``/``.pdf`` (mean and standard deviation over seeds).
"""

import csv
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from vissl_issl.compression import tool as compress_tool
from vissl_issl.compression.matched_accuracy import RatePoint, at_edge, cheapest_reaching
from vissl_issl.experiments.runner import duration, pretrain, pretrained

TRUNK_RECIPE = "config=pretrain/dissl/dissl_resnet18_digits"
COMPRESSOR_RECIPE = "config=pretrain/feature_compressor/feature_compressor_dissl_resnet18_digits"
TRUNKS = ("dissl", "random")
DEFAULT_BETAS = (0.1, 0.5, 3.0, 28.854)  # 28.854: the authors' CLIP compressor (code beta 0.05)
QUALITIES = ("1", "2", "5", "10", "20", "30", "50", "70", "90", "95")
REPORT_FILE = "report/results.json"
FEATURES = "features"  # the trunk's float32 features, uncompressed


def compressor_dir(out: Path, trunk: str, beta: float, seed: int) -> Path:
    return out / trunk / f"beta_{beta:g}" / f"seed{seed}"


def train_trunk(out: Path, seed: int) -> Path:
    directory = out / "dissl" / f"seed{seed}"
    if pretrained(directory) is None:
        pretrain([TRUNK_RECIPE], directory, seed, slurm=False)
    return pretrained(directory)


def train_compressor(directory: Path, trunk: Optional[Path], beta: float, seed: int) -> Path:
    if pretrained(directory) is None:
        weights = f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={trunk or ''}"
        beta_override = f"++config.LOSS.feature_compression_loss.beta={beta}"
        pretrain([COMPRESSOR_RECIPE, weights, beta_override], directory, seed, slurm=False)
    return pretrained(directory)


def report_compressor(checkpoint: Path, directory: Path, codecs: bool) -> None:
    argv = ["report", "--checkpoint", str(checkpoint), "--data", "digits", "--out", str(directory / "report")]
    argv += ["--qualities", *QUALITIES] if codecs else ["--codecs"]
    compress_tool.main(argv)


def run(out: Path, seeds: Sequence[int], betas: Sequence[float]) -> None:
    """Every seed's trunk, compressors and reports not done yet (see the module doc)."""
    plan = [(seed, trunk, beta) for seed in seeds for trunk in TRUNKS for beta in betas]
    spent: List[float] = []  # seconds of each run done in this call: the estimate of the rest
    for index, (seed, trunk, beta) in enumerate(plan, start=1):
        directory = compressor_dir(out, trunk, beta, seed)
        if (directory / REPORT_FILE).is_file():
            continue
        left = f", about {duration(statistics.mean(spent) * (len(plan) - index + 1))} left" if spent else ""
        print(f"[{index}/{len(plan)}] rate_accuracy: {trunk} trunk, beta {beta:g}, seed {seed}{left}", flush=True)
        start = time.time()
        weights = train_trunk(out, seed) if trunk == "dissl" else None
        checkpoint = train_compressor(directory, weights, beta, seed)
        report_compressor(checkpoint, directory, codecs=beta == max(betas))
        spent.append(time.time() - start)


# ---------------------------------------------------------------- report


def mean_std(values: List[float]) -> Tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary(values: List[float], digits: int = 1) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def load_reports(out: Path) -> List[Dict]:
    """One record per finished compressor report under ``out``."""
    found = []
    for path in sorted(out.glob(f"*/beta_*/seed*/{REPORT_FILE}")):
        seed_dir = path.parent.parent
        results = json.loads(path.read_text())
        found.append({
            "trunk": seed_dir.parent.parent.name, "beta": float(seed_dir.parent.name[len("beta_"):]),
            "seed": int(seed_dir.name[len("seed"):]), "results": results,
        })  # fmt: skip
    return found


def codec_points(found: List[Dict]) -> Dict[Tuple[str, int], List[Dict]]:
    """The codec sweep of each (trunk, seed), from the report that ran it."""
    return {(r["trunk"], r["seed"]): r["results"]["classical"]["points"] for r in found if "classical" in r["results"]}


CSV_COLUMNS = ("trunk", "seed", "representation", "beta", "setting", "payload_bits", "file_bits",
               "estimated_bits", "test_top1")  # fmt: skip


def csv_rows(found: List[Dict]) -> List[Dict]:
    rows = []
    for record in found:
        test, probes = record["results"]["splits"]["test"], record["results"]["probe"]
        rows.append({
            "trunk": record["trunk"], "seed": record["seed"], "representation": "z_hat", "beta": record["beta"],
            "setting": "", "payload_bits": test["payload_bits_per_image"], "file_bits": test["file_bits_per_image"],
            "estimated_bits": test["estimated_bits_per_image"], "test_top1": probes["z_hat"]["test_top1"],
        })  # fmt: skip
        if record["results"].get("classical"):  # once per trunk and seed: the uncompressed features
            rows.append({"trunk": record["trunk"], "seed": record["seed"], "representation": FEATURES, "beta": "",
                         "setting": "", "payload_bits": "", "file_bits": "", "estimated_bits": "",
                         "test_top1": probes["trunk"]["test_top1"]})  # fmt: skip
    for (trunk, seed), points in codec_points(found).items():
        for point in points:
            bits = point["bits_per_image"]["test"]
            rows.append({"trunk": trunk, "seed": seed, "representation": point["codec"], "beta": "",
                         "setting": point["label"], "payload_bits": bits, "file_bits": bits, "estimated_bits": "",
                         "test_top1": point["probe"]["test_top1"]})  # fmt: skip
    return rows


def grouped(rows: List[Dict], keys: Tuple[str, ...]) -> Dict[Tuple, List[Dict]]:
    groups: Dict[Tuple, List[Dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return groups


def matched(rows: List[Dict], trunk: str, seed: int, codec: str, target: float) -> Tuple[Optional[RatePoint], bool]:
    curve = [RatePoint(r["payload_bits"], r["test_top1"], r["setting"]) for r in rows
             if r["trunk"] == trunk and r["seed"] == seed and r["representation"] == codec]  # fmt: skip
    match = cheapest_reaching(curve, target)
    return match, at_edge(match, curve)


def table(rows: List[Dict]) -> str:
    ours = [row for row in rows if row["representation"] == "z_hat"]
    lines = [
        "# Feature compressor vs classical codecs on digits (test split, 360 images)",
        "",
        "Bits per image: each image's byte string alone (ours: the range coder's record; codecs: the whole",
        "file, headers included). Probe: linear, test top-1 (%). Mean ± std over seeds.",
        "",
        "| trunk | beta | seeds | bits/image (payload) | file bits/image | estimated bits | top-1 decoded codes "
        "| JPEG at matched top-1 | WebP at matched top-1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (trunk, beta), group in sorted(grouped(ours, ("trunk", "beta")).items()):
        cells = []
        for codec in ("jpeg", "webp"):
            found, edges = [], 0
            for row in group:
                match, edge = matched(rows, trunk, row["seed"], codec, row["test_top1"])
                if match is not None:
                    found.append(match.bits / row["payload_bits"])
                    edges += edge
            never = len(group) - len(found)
            cell = f"{summary(found)}x" if found else "never"
            notes = [f"{never} never" if never and found else "", f"{edges} at sweep edge" if edges else ""]
            cells.append(cell + "".join(f" ({note})" for note in notes if note))
        lines.append(
            f"| {trunk} | {beta:g} | {len(group)} | {summary([r['payload_bits'] for r in group])} "
            f"| {summary([r['file_bits'] for r in group])} | {summary([r['estimated_bits'] for r in group])} "
            f"| {summary([r['test_top1'] for r in group], 2)} | {cells[0]} | {cells[1]} |"
        )
    lines += ["", "Codecs (the same trunk's features of the decoded images):", "",
              "| trunk | codec setting | seeds | bits/image | top-1 |", "|---|---|---|---|---|"]  # fmt: skip
    codecs = [row for row in rows if row["representation"] not in ("z_hat", FEATURES)]
    for (trunk, setting), group in grouped(codecs, ("trunk", "setting")).items():
        lines.append(f"| {trunk} | {setting} | {len(group)} | {summary([r['payload_bits'] for r in group])} "
                     f"| {summary([r['test_top1'] for r in group], 2)} |")  # fmt: skip
    for (trunk,), group in grouped([row for row in rows if row["representation"] == FEATURES], ("trunk",)).items():
        lines.append(f"| {trunk} | uncompressed float32 features | {len(group)} | - "
                     f"| {summary([r['test_top1'] for r in group], 2)} |")  # fmt: skip
    lines += ["", "JPEG/WebP columns: the codec's bits at the cheapest setting whose top-1 reaches the decoded "
              "codes' top-1, as a multiple of ours, per seed; \"at sweep edge\": reached at the lowest quality "
              "tried, so the ratio is an upper bound."]  # fmt: skip
    return "\n".join(lines) + "\n"


def figure(rows: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7.5, 4.8))
    styles = {"dissl": "-", "random": ":"}
    colours = {"z_hat": "black", "jpeg": "tab:red", "webp": "tab:purple", "png": "tab:green"}
    for trunk in TRUNKS:
        for representation, colour in colours.items():
            group = [row for row in rows if row["trunk"] == trunk and row["representation"] == representation]
            key = "beta" if representation == "z_hat" else "setting"
            points = []
            for _, same in grouped(group, (key,)).items():
                bits, top1 = mean_std([r["payload_bits"] for r in same]), mean_std([r["test_top1"] for r in same])
                points.append((bits, top1))
            if not points:
                continue
            points.sort()
            name = "ours (feature compressor)" if representation == "z_hat" else representation.upper()
            axis.errorbar([b[0] for b, _ in points], [t[0] for _, t in points], xerr=[b[1] for b, _ in points],
                          yerr=[t[1] for _, t in points], fmt="s" + styles[trunk] if representation == "z_hat"
                          else "o" + styles[trunk], color=colour, markersize=4, capsize=2, alpha=0.85,
                          label=f"{name}, {trunk} trunk")  # fmt: skip
    for trunk in TRUNKS:
        features = [row["test_top1"] for row in rows if row["trunk"] == trunk and row["representation"] == FEATURES]
        if features:
            axis.axhline(statistics.mean(features), color="grey", linestyle=styles[trunk], linewidth=0.8,
                         label=f"uncompressed features, {trunk} trunk")  # fmt: skip
    axis.set(xscale="log", xlabel="bits per image (test; each image's byte string, no container)",
             ylabel="linear probe top-1 (%)", title="Rate vs accuracy on digits (mean ± std over seeds)")  # fmt: skip
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    for suffix in (".png", ".pdf"):
        fig.savefig(path.with_suffix(suffix), dpi=130)
    plt.close(fig)


def report(out: Path) -> Path:
    found = load_reports(out)
    if not found:
        raise SystemExit(f"{out}: no finished compressor reports (run first)")
    rows = csv_rows(found)
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(table(rows))
    figure(rows, out / "rate_accuracy.png")
    return out
