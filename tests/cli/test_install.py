"""What a fresh install relies on: CI runs the README's test command, a non-editable install carries the recipes the
demo needs, and `vlp --help` and `vlp recipe show` start without importing the heavy libraries."""
import importlib
import inspect
import pkgutil
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "transformers", "open_clip", "webdataset", "accelerate", "datasets", "matplotlib")


def _readme_command(marker: str) -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    return lines[lines.index(next(line for line in lines if marker in line)) + 1].strip()


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    command = _readme_command("# 2. install and run the test suite")
    assert command.endswith("python -m pytest -n 2")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in re.sub(r" -q\b", "", ci)
    assert re.search(r"^python3? -m venv --clear (\S+)\n(?:#.*\n)?\. \1/bin/activate$", ci, re.M), ci
    assert "--system-site-packages" not in ci


def test_wheel_carries_the_recipes_and_the_demo_finds_them(tmp_path):
    # built from a copy: setuptools' build/ folder would otherwise land in (and go stale in) the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".*", "build", "runs", "data", "bench", "tests", "__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("vlp-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    shipped = sorted(p.name for p in (tmp_path / "site" / "vlp" / "recipes").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
    probe = ("import vlp.demo as d; from vlp.recipe import load_recipe; "
             "print(d.DEFAULT_RECIPE); load_recipe(d.DEFAULT_RECIPE); print(d.find_recipe('tiny-digits-sigmoid.yaml'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == [str(tmp_path / "site" / "vlp" / "recipes" / name)
                   for name in ("tiny-digits.yaml", "tiny-digits-sigmoid.yaml")]


def test_cli_help_imports_no_heavy_library():
    probe = ("import sys; from vlp.cli import build_parser; build_parser(); "
             f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_recipe_show_imports_no_heavy_library():
    # every shipped recipe: an open_clip arch, a config, eval-only; the objective's own rules wait for --check
    recipes = sorted(str(p) for p in (ROOT / "recipes").glob("*.yaml"))
    probe = ("import sys; from vlp.cli import main; "
             f"codes = [main(['recipe', 'show', r]) for r in {recipes!r}]; "
             f"print(codes, [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stderr.strip() == f"{[0] * len(recipes)} []"


def test_every_lazily_exported_name_resolves():
    for package in ("vlp.data", "vlp.models", "vlp.train", "vlp.evaluate", "vlp.export", "data_tools"):
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):  # importing a submodule binds its name in the package
            if info.name != "__main__":
                importlib.import_module(f"{package}.{info.name}")
        assert module.__all__, package
        for name in module.__all__:
            assert not inspect.ismodule(getattr(module, name)), f"{package}.{name} is shadowed by a submodule"
