"""tools/benchmark.py: the step benchmark runs VISSL's training step for each method in its own
process and says why a row did not run; the data-loader benchmark times the recipes' pipelines;
the tables land in their own section of a markdown file."""

import argparse
import json
import math
import re
import sys

import benchmark  # tools/benchmark.py, on pytest's pythonpath
import pytest


def table_rows(text: str) -> dict:
    """``{first cell: [cells]}`` of the markdown table rows in ``text``."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| method") and not line.startswith("| crops"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_step_rows_time_vissls_step_and_skipped_rows_say_why(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nprose that must survive\n")
    methods = ["trunk_only", "simclr", "dissl", "cissl", "dino", "w_mse"]
    argv = ["step", "--batch", "2", "--crops", "2x32+2x16", "--warmup", "1", "--steps", "1", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *argv, "--methods", *methods, "--doc", str(doc)])
    benchmark.main(sys.argv[1:])

    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nprose that must survive\n")
    assert "Command: `bash tools/env.sh python tools/benchmark.py step --batch 2" in text
    rows = table_rows(text)
    labels = {m: benchmark.METHODS[m].label for m in methods}
    assert set(rows) == set(labels.values())
    # Rows that cannot run say why instead of disappearing.
    assert rows[labels["cissl"]][0] == "2 views only"
    assert rows[labels["dino"]][0].startswith("GPU only: VISSL's DINO hook converts its teacher to SyncBN")
    assert rows[labels["w_mse"]][0] == "needs >= 256 images per GPU"
    for method in ("trunk_only", "simclr", "dissl"):
        images_per_s, step_ms, *phases = (float(c) for c in rows[labels[method]][:9])
        assert step_ms > 0 and math.isclose(images_per_s, 2000 / step_ms, abs_tol=0.05)  # printed to 0.1
        data, forward, hooks, loss, backward, optimizer, other = phases
        assert forward > 0 and backward > 0 and optimizer > 0
        assert math.isclose(sum(phases), step_ms, rel_tol=0.01)
    assert rows[labels["simclr"]][10] == "1.00x"  # SimCLR against itself
    assert re.fullmatch(r"\d+\.\d\dx", rows[labels["dissl"]][10])
    assert re.fullmatch(r"[+-]\d+\.\d%", rows[labels["dissl"]][9])  # vs the trunk-only ceiling

    # Re-running replaces the section, it does not append a second one.
    benchmark.write_section(doc, "step-cpu-b2-2x32+2x16", "replaced")
    expected = "<!-- benchmark:step-cpu-b2-2x32+2x16 -->\nreplaced\n<!-- /benchmark:step-cpu-b2-2x32+2x16 -->\n"
    assert doc.read_text() == "# Benchmarks\n\nprose that must survive\n\n" + expected


@pytest.mark.slow
def test_a_failing_row_stops_the_run_with_its_error(monkeypatch):
    args = argparse.Namespace(device="cpu", batch=2, depth=50, warmup=1, steps=1, repeats=1, step_options=[])
    # The row runs in another process, which does not know this method: its traceback must come
    # back, not just an exit code.
    monkeypatch.setitem(benchmark.METHODS, "broken", benchmark.Benchmark("broken", "pretrain/dissl/no_such_recipe"))
    with pytest.raises(SystemExit, match="broken on 2x32 failed:(.|\n)*KeyError: 'broken'"):
        benchmark.measure(args, "broken", "2x32")


def test_rows_report_the_median_of_each_phase_over_repeats_and_the_largest_peak():
    repeats = [
        {"ms": {"step": step, "forward": step / 2}, "peak_mib": peak} for step, peak in [(100, 5), (300, 7), (120, 6)]
    ]
    result = benchmark.median_of_repeats(repeats, batch=8)
    assert result == {"ms": {"step": 120, "forward": 60}, "images_per_s": 8000 / 120, "peak_mib": 7}


def test_crop_specs_are_checked():
    assert benchmark.parse_crops("2x224+6x96") == [(2, 224), (6, 96)]
    with pytest.raises(SystemExit, match="--crops '2x'"):
        benchmark.parse_crops("2x")


@pytest.mark.slow
def test_data_benchmark_times_stock_and_plugin_paths_per_worker(tmp_path):
    doc, results = tmp_path / "benchmarks.md", tmp_path / "data.json"
    benchmark.main(["data", "--crops", "m2", "m8", "--workers", "1", "--batch", "2", "--batches", "1",
                    "--doc", str(doc), "--json", str(results)])  # fmt: skip
    rows = table_rows(doc.read_text())
    assert set(rows) == {"`parts/crops_m2` (2x224)", "`parts/crops_m8` (2x224+6x96)"}
    for workers, stock, plugin, ratio, device_ms in rows.values():
        assert workers == "1" and float(stock) > 0 and float(plugin) > 0 and float(device_ms) > 0
        assert abs(float(ratio[:-1]) - float(plugin) / float(stock)) < 0.02  # from the unrounded rates
    pipelines = json.loads(results.read_text())["pipelines"]
    assert set(pipelines) == {"m2", "m8"} and all(set(p) >= {"stock", "plugin"} for p in pipelines.values())


def test_trunk_benchmark_times_each_step_option_against_the_first(tmp_path):
    doc = tmp_path / "benchmarks.md"
    benchmark.main(["trunk", "--depth", "18", "--batch", "2", "--size", "16", "--variants", "fp32", "channels_last",
                    "bf16", "--steps", "1", "--repeats", "2", "--doc", str(doc)])  # fmt: skip
    text = doc.read_text()
    assert "<!-- benchmark:trunk-r18-b2-16px -->" in text
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in text.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"fp32", "channels_last", "bf16"} and rows["fp32"][1].strip() == "1.00x"
    assert all(float(ms) > 0 for ms, _ in (rows[name] for name in ("fp32", "channels_last", "bf16")))
