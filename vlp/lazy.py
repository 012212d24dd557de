"""Package namespaces whose public names load on first use (PEP 562).

`vlp --help` imports every subcommand module, and importing `vlp.train.cli` runs `vlp/train/__init__.py` first; if
that imported torch, the help text would take seconds. Packages list where each public name lives instead.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable


def lazy_names(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(`__getattr__`, `__all__`) for `package`, whose name N lives in module `package.homes[N]`."""
    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{homes[name]}"), name)
    return __getattr__, sorted(homes)
