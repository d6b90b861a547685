"""The ISSL paper's experiments, from one command (README, "Reproducing the paper").

    python tools/experiments.py list
    python tools/experiments.py run NAME --data tinyimagenet:<root> | digits [--seeds 1 2 3] [--out DIR]
                                [--slurm] [--workers N] [config.X=Y ...]
    python tools/experiments.py report NAME [--out DIR]

``run`` pretrains every cell x seed of NAME that is not done, one after another (with ``--slurm``
it submits them through VISSL's SLURM path and probes those finished on a later ``run``), then probes
each; killed, it resumes where it stopped. ``config.X=Y`` overrides go to every cell. ``report``
writes ``results.csv``, ``table.md`` and the experiment's figures (PNG and PDF) to ``<out>/NAME``.
"""

import argparse
from pathlib import Path

from vissl_issl.experiments.definitions import EXPERIMENTS
from vissl_issl.experiments.report import report
from vissl_issl.experiments.runner import Data, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the experiments and their cells")
    run_parser = commands.add_parser("run", help="pretrain and probe every cell x seed not done yet")
    report_parser = commands.add_parser("report", help="results.csv, table.md and figures")
    for sub in (run_parser, report_parser):
        sub.add_argument("name", choices=sorted(EXPERIMENTS))
        sub.add_argument("--out", type=Path, default=Path("experiments"))
    run_parser.add_argument("--data", required=True, help="tinyimagenet:<root> (train/ and val/) or digits")
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    run_parser.add_argument("--slurm", action="store_true", help="submit through VISSL's SLURM path")
    run_parser.add_argument("--workers", type=int, default=0, help="data loader processes for feature extraction")
    args, overrides = parser.parse_known_args()  # config.X=Y overrides may sit anywhere after NAME
    unknown = [argument for argument in overrides if "=" not in argument or argument.startswith("-")]
    if unknown or (overrides and args.command != "run"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if args.command == "list":
        for experiment in EXPERIMENTS.values():
            print(f"{experiment.name}: {experiment.title}")
            for cell in experiment.cells:
                probes = ", ".join(probe.name for probe in cell.probes)
                print(f"  {cell.name:<14} config=pretrain/{cell.recipe} {' '.join(cell.overrides)}  [{probes}]")
    elif args.command == "run":
        try:
            data = Data.parse(args.data)
        except ValueError as error:
            raise SystemExit(str(error))
        run(EXPERIMENTS[args.name], data, args.seeds, args.out, overrides, args.slurm, args.workers)
    else:
        print(f"Written to {report(EXPERIMENTS[args.name], args.out)}")


if __name__ == "__main__":
    main()
