"""`vlp` command line: thin wrappers over the Python API. Each subcommand lives in its subpackage's cli.py."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from pathlib import Path

import vlp

# Each module has `register(subparsers)`, which adds its subcommand(s) and sets `func(args) -> int` on the parser.
COMMAND_MODULES = ["vlp.recipe.cli", "vlp.data.cli", "vlp.evaluate.cli", "vlp.train.cli", "vlp.export.cli",
                   "vlp.report.cli", "vlp.generate.cli", "vlp.demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlp", description="CLIP-style vision-language pretraining.")
    parser.add_argument("--version", action="version", version=f"vlp {vlp.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vlp.recipe import RecipeError

    args = build_parser().parse_args(argv)
    with _one_line_warnings():
        try:
            return int(args.func(args) or 0)
        except RecipeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2


@contextlib.contextmanager
def _one_line_warnings():
    """Show vlp's own warnings as `warning: MESSAGE`, like its errors, without Python's file:line and source line;
    other libraries' warnings keep Python's format. The API still issues them through `warnings` (filterable)."""
    package, python_format = Path(vlp.__file__).resolve().parent, warnings.formatwarning

    def show(message, category, filename, lineno, line=None) -> str:
        if Path(filename).resolve().is_relative_to(package):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = show
    try:
        yield
    finally:
        warnings.formatwarning = python_format


if __name__ == "__main__":
    sys.exit(main())
