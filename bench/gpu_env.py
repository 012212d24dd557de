"""What bench/gpu.py needs from its machine: the carried wheels, the packages still missing, the device and its peak.

The GPU machine has torch, accelerate, transformers, timm, tensorboard, numpy, Pillow, PyYAML, safetensors,
huggingface_hub and psutil, but none of the packages in DEVICE_WHEELS, and it cannot reach a package registry. They
are downloaded here as wheels for its Python and platform (`python bench/gpu.py --fetch-wheels`) into bench/wheels/ (ignored by git),
carried, and installed there with `--no-index --no-deps`. OpenCLIP's trainer needs webdataset 0.2.86 (it crashes with
1.x), so that wheel goes to its own folder, which bench/openclip_env.py installs from into bench/.venv-openclip.
pytest and its dependencies (for bench/gpu.py's `cuda` test tier) go to a third folder, installed only where
`import pytest` fails: the image lists pytest, and `--no-deps` over its own copy could pair pytest with a pluggy it
does not accept.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import openclip_env

BENCH = Path(__file__).resolve().parent
WHEELS = BENCH / "wheels"
VLP_WHEELS, OPENCLIP_WHEELS, PYTEST_WHEELS = WHEELS / "vlp", WHEELS / "openclip", WHEELS / "pytest"
# vlp's dependencies that the GPU image lacks (its package list: /work/.library/device/KINDS.md), with theirs;
# all pure Python but wcwidth (abi3). torch and the other compiled packages are there already and never travel.
DEVICE_WHEELS = ("open_clip_torch", "webdataset", "braceexpand", "ftfy", "wcwidth")
PYTEST_DEPS = ("pytest", "iniconfig", "pluggy", "packaging", "pygments")  # pytest 9's requirements on Python 3.12
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# dense bf16 tensor-core peak (no sparsity) from the vendors' data sheets; first substring match of the device name
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def fetch_commands() -> list[list[str]]:
    """`pip download` commands for the wheels the GPU machine lacks, at the versions installed here."""
    pinned = [f"{name}=={importlib.metadata.version(name)}" for name in DEVICE_WHEELS]
    tests = [f"{name}=={importlib.metadata.version(name)}" for name in PYTEST_DEPS]
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", DEVICE_PYTHON, *[a for p in DEVICE_PLATFORMS for a in ("--platform", p)]]
    return [[*base, "-d", str(VLP_WHEELS), *pinned], [*base, "-d", str(OPENCLIP_WHEELS), openclip_env.PIN],
            [*base, "-d", str(PYTEST_WHEELS), *tests]]


def fetch_wheels() -> int:
    for command in fetch_commands():
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    return 0


def missing_packages() -> list[str]:
    """vlp's declared dependencies (pyproject.toml) that this interpreter cannot find."""
    declared = tomllib.loads((BENCH.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = []
    for requirement in declared:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def openclip_unavailable() -> str:
    """Why OpenCLIP's trainer interpreter (bench/.venv-openclip, made without a registry) cannot be had; "" once
    it is ready."""
    have_wheel = any(OPENCLIP_WHEELS.glob("webdataset-*.whl"))
    if not have_wheel and not openclip_env.python().is_file():
        return (f"{openclip_env.PIN} is neither in {OPENCLIP_WHEELS.relative_to(BENCH.parent)} nor in "
                f"{openclip_env.VENV.relative_to(BENCH.parent)} (run `python bench/gpu.py --fetch-wheels` "
                "where PyPI is reachable)")
    # the pinned webdataset comes from the carried folder, and nothing is looked up online
    offline = ("--no-index", "--find-links", str(OPENCLIP_WHEELS), "--disable-pip-version-check")
    try:
        openclip_env.ensure(pip_options=offline)
    except subprocess.CalledProcessError as e:
        return f"could not install {openclip_env.PIN} offline into {openclip_env.VENV.name}: exit {e.returncode}"
    return ""


def device_info() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"name": "cpu", "peak_bf16_flops": None, "peak_note": "MFU not computed: no bf16 peak for a CPU",
                "torch": torch.__version__, "cores": os.cpu_count()}
    name = torch.cuda.get_device_name()
    peak = next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)
    note = "dense bf16, vendor data sheet" if peak else f"MFU not computed: no bf16 peak listed for {name}"
    return {"name": name, "peak_bf16_flops": peak, "peak_note": note, "torch": torch.__version__,
            "cores": os.cpu_count(), "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2 ** 30}
