"""The feature compressor's rate-accuracy headline on digits, against JPEG, WebP and PNG
(vissl_issl/experiments/rate_accuracy.py; docs/compression.md shows the result):

    python tools/rate_accuracy.py run --seeds 1 2 3 --out rate_accuracy      # resumable
    python tools/rate_accuracy.py report --out rate_accuracy                 # results.csv, table.md, figure
"""

import argparse
from pathlib import Path

import vissl_issl.plugin  # noqa: F401  (registers the plugin before any VISSL model is built)

from vissl_issl.experiments import rate_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train and report every trunk x beta x seed not done yet")
    run_parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    run_parser.add_argument("--betas", type=float, nargs="+", default=list(rate_accuracy.DEFAULT_BETAS))
    report_parser = commands.add_parser("report", help="results.csv, table.md, rate_accuracy.png/.pdf")
    for sub in (run_parser, report_parser):
        sub.add_argument("--out", type=Path, default=Path("rate_accuracy"))
    args = parser.parse_args()
    if args.command == "run":
        rate_accuracy.run(args.out, args.seeds, args.betas)
    else:
        print(f"Written to {rate_accuracy.report(args.out)}")


if __name__ == "__main__":
    main()
