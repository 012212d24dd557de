"""The benchmarks' OpenCLIP reference venv is built from the running interpreter's packages, so the benchmarks run
from the README's set-up (a fresh virtualenv), not only where the base interpreter happens to have open_clip."""
import importlib.util
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_venv_sees_the_running_interpreters_packages(tmp_path):
    env = _bench_module("openclip_env")
    python = env.ensure(tmp_path / "venv", pin=None)  # the pinned webdataset needs PyPI: left out here
    probe = subprocess.run([str(python), "-c", "import sys, open_clip, open_clip_train.data; print(sys.prefix)"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == tmp_path / "venv"
    ours, theirs = env.versions(), env.versions(python)
    assert theirs == ours and "unavailable" not in theirs["open_clip"]
