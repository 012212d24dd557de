"""The benchmarks' OpenCLIP reference venv is built from the running interpreter's packages, so the benchmarks run
from the README's set-up (a fresh virtualenv), not only where the base interpreter happens to have open_clip."""
import subprocess
from pathlib import Path

from helpers.modules import bench_module


def test_reference_venv_sees_the_running_interpreters_packages(tmp_path):
    env = bench_module("openclip_env")
    python = env.ensure(tmp_path / "venv", pin=None)  # the pinned webdataset needs PyPI: left out here
    probe = subprocess.run([str(python), "-c", "import sys, open_clip, open_clip_train.data; print(sys.prefix)"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()) == tmp_path / "venv"
    ours, theirs = env.versions(), env.versions(python)
    assert theirs == ours and "unavailable" not in theirs["open_clip"]
