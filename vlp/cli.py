"""`vlp` command line: thin wrappers over the Python API. Each subcommand lives in its subpackage's cli.py."""
from __future__ import annotations

import argparse
import importlib
import sys

import vlp

# Each module has `register(subparsers)`, which adds its subcommand(s) and sets `func(args) -> int` on the parser.
COMMAND_MODULES = ["vlp.recipe.cli", "vlp.data.cli", "vlp.evaluate.cli", "vlp.train.cli", "vlp.export.cli", "vlp.demo"]


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
    try:
        return int(args.func(args) or 0)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
