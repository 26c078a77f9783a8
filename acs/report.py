"""`python -m acs.report DIR [DIR ...]`: results.csv, results.md and pareto.png for run or sweep folders;
`python -m acs.report results.csv`: pareto.png drawn again from a report's table."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from acs.reporting.results_table import replot
from acs.reporting.sweep_report import ReportError, write_report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m acs.report",
        description="Tabulate the jobs of Hydra run/sweep folders and plot accuracy against FLOPs "
        "with the Pareto front. Writes results.csv, results.md and pareto.png (and keep_profiles.png, the "
        "final keep rate per gated layer of each gated job). Given a report's results.csv instead, draws its "
        "pareto.png again from the table (the run folders are not needed).",
    )
    parser.add_argument(
        "dirs", nargs="+", metavar="DIR", help="a sweep folder, a run folder, a parent of several, or a results.csv"
    )
    parser.add_argument("--out", metavar="OUTDIR", help="where to write the report (default: the first DIR)")
    parser.add_argument("--x", choices=("flops", "macs"), default="flops", help="compute axis (default: flops)")
    parser.add_argument("--metric", default="test/acc1", help="accuracy metric to plot (default: test/acc1)")
    args = parser.parse_args(argv)

    tables = [d for d in args.dirs if d.endswith(".csv")]
    try:
        if tables and len(tables) < len(args.dirs):
            raise ReportError("give either folders or results.csv files, not both")
        if tables:
            for table in tables:
                print(replot(table, out_dir=args.out, x=args.x, metric=args.metric))
            return 0
        report = write_report(args.dirs, out_dir=args.out, x=args.x, metric=args.metric)
    except (ReportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    c = report.counts
    print(
        f"{c['total']} jobs: {c['completed']} completed, {c['failed']} failed, {c['unfinished']} unfinished; "
        f"{sum(bool(r['on_front']) for r in report.rows)} on the Pareto front"
    )
    for path in report.paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
