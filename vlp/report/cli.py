"""`vlp report RUN_DIR [--out FILE]`."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="write one self-contained report.html about a run",
                              description="Write RUN_DIR/report.html (or --out): the recipe, training and eval "
                              "curves, the suite table and every metric of the newest evaluation, its pictures, "
                              "bad-sample counts and links to the checkpoints and export. Images are inlined, so "
                              "the file can be mailed or opened anywhere.")
    p.add_argument("run_dir", help="run directory")
    p.add_argument("--out", help="output file (default: RUN_DIR/report.html)")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from vlp.report.page import write_report

    try:
        path = write_report(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
