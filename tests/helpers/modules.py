"""Loading a Python file that is not an importable module: a bench/ script, or a test file in a forked process."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_file(path: Path | str, name: Optional[str] = None) -> ModuleType:
    """The module of the file PATH, run once under NAME (default: its stem); the file's folder is importable while
    it loads (a bench script imports its neighbours, as `python bench/x.py` lets it)."""
    path, folder = Path(path), str(Path(path).parent)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name or path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(folder)


def bench_module(name: str) -> ModuleType:
    """bench/NAME.py as a module."""
    return load_file(BENCH / f"{name}.py")
