"""`vlp data {build,check,stats} ...`: the data_tools commands under the vlp entry point."""
from __future__ import annotations


def register(subparsers) -> None:
    from data_tools.cli import add_commands

    data = subparsers.add_parser("data", help="build, check and inspect shards and eval sets")
    add_commands(data.add_subparsers(dest="action", metavar="ACTION", required=True))
