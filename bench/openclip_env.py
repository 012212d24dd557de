"""The OpenCLIP reference environment: the running interpreter's packages, with webdataset 0.2.86 in front.

OpenCLIP's trainer and its data pipeline crash with webdataset 1.x (`KeyError: 'fname'` in `group_by_keys_nothrow`),
so the reference runs from a venv of its own, `bench/.venv-openclip`. `venv --system-site-packages` would give it the
*base* interpreter's packages, not those of the virtualenv the benchmark is started from (the README's set-up), and
OpenCLIP would be missing. Instead the new venv holds only the pinned webdataset and a `.pth` file that adds the
running interpreter's site directories after its own (with their `.pth` files processed, so editable installs and
namespace packages work): both sides see the same torch, open_clip, numpy and Pillow, and only webdataset differs.
"""
from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-openclip"
PIN = "webdataset==0.2.86"
VERSIONED = ("torch", "torchvision", "open_clip", "webdataset", "numpy", "PIL", "braceexpand")
_PTH = "vlp_bench_parent_env.pth"


def python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def ensure(venv: Path = VENV, pin: str | None = PIN, pip_options: tuple[str, ...] = ()) -> Path:
    """The reference venv's python, creating the venv when it is missing or stale. `pin=None` skips the pinned
    install (it needs PyPI, unless `pip_options` point pip elsewhere); the venv then sees the running interpreter's
    packages unchanged."""
    if _ready(venv, pin):
        return python(venv)
    print(f"creating {venv} (running interpreter's packages{' + ' + pin if pin else ''})", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    own_site = Path(_run(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    parents = [d for d in (*site.getsitepackages(), site.getusersitepackages()) if Path(d).is_dir()]
    (own_site / _PTH).write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in parents))
    if pin:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *pip_options, "--target",
                        str(own_site), pin], check=True)
    return python(venv)


def versions(interpreter: Path | str = sys.executable) -> dict[str, str]:
    """Package versions as `interpreter` imports them."""
    probe = ("import importlib, json; out = {}\n"
             f"for name in {VERSIONED!r}:\n"
             "    try: out[name] = importlib.import_module(name).__version__\n"
             "    except Exception as e: out[name] = f'unavailable ({type(e).__name__})'\n"
             "import sys; out['python'] = sys.version.split()[0]; print(json.dumps(out))")
    return json.loads(subprocess.run([str(interpreter), "-c", probe], capture_output=True, text=True,
                                     check=True).stdout)


def _ready(venv: Path, pin: str | None) -> bool:
    if not python(venv).is_file():
        return False
    found = versions(python(venv))
    return "unavailable" not in found["open_clip"] and (pin is None or found["webdataset"] == pin.split("==")[1])


def _run(venv: Path, code: str) -> str:
    return subprocess.run([str(python(venv)), "-c", code], capture_output=True, text=True, check=True).stdout.strip()
