"""bench/gpu.py, the one-call GPU benchmark, runs every section on CPU with tiny sizes (`--smoke`) so that it never
rots while no GPU machine is at hand (its `cuda` test tier then all skipped, and said so); its budget guard skips
with reasons; its FLOP count is exact; its wheel
preparation pins what is installed here; without a GPU it skips cleanly (bench/run_all.py runs it)."""
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.processes import forked_run

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _gpu(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    command = [str(BENCH / "gpu.py"), "--smoke", "--no-openclip-trainer", "--out", str(tmp_path / "out"),
               "--work-dir", str(tmp_path / "work"), *extra]
    done = forked_run(command, env=ENV, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((tmp_path / "out" / "gpu.json").read_text()), done.stdout


def test_smoke_measures_every_section(tmp_path):
    results, printed = _gpu(tmp_path)
    assert results["device"]["name"] == "cpu" and results["device"]["peak_note"]
    vlp = [r for r in results["train"] if r["trainer"] == "vlp"]
    assert vlp and all(r["samples_per_s"] > 0 and r["flops_per_sample"] > 0 and r["peak_rss_gib"] > 0 for r in vlp)
    openclip = [r for r in results["train"] if r["trainer"] == "openclip"]
    assert openclip and all(r["skipped"] == "--no-openclip-trainer" for r in openclip)  # said, not silent
    assert "OpenCLIP trainer: skipped: --no-openclip-trainer" in printed
    assert "MFU" in results["flop_formula"] and "FlopCounterMode" in results["flop_formula"]
    cases = results["loss"]["cases"]
    assert {(c["impl"], c["loss"]) for c in cases} == {(i, l) for i in ("openclip", "vlp") for l in ("softmax", "sigmoid")}
    assert all(c["seconds"] > 0 for c in cases)
    for loss in ("softmax", "sigmoid"):
        summary = results["loss"]["summary"][loss]
        assert summary["largest_vlp"] == summary["largest_openclip"] == results["loss"]["cap"] == 512
        assert summary["stopped_vlp"] == summary["stopped_openclip"] == "cap 512 reached"
        assert summary["time_ratio_vlp_over_openclip"] > 0
    assert results["decode"]["cpu_samples_per_s"] > 0 and results["decode"]["gpu_samples_per_s"] is None  # no CUDA
    table = (tmp_path / "out" / "gpu.md").read_text()
    assert "| train vlp-bench-tiny B=64 samples/s | skipped: --no-openclip-trainer |" in table
    assert "| GPU decode (`data.decode: gpu`) samples/s | | n/a |" in table
    tier = results["cuda_tests"]  # the tier ran (collected, every test skipped), not left out
    files = {path.relative_to(ROOT).as_posix() for path in (ROOT / "tests" / "cuda").glob("test_*.py")}
    assert {test.split("::")[0] for test in tier["tests"]} == files  # every file of the tier collected
    assert tier["status"] == "skipped: no CUDA" and tier["counts"]["skipped"] == len(tier["tests"]) >= len(files)
    assert tier["counts"]["passed"] == tier["counts"]["failed"] == 0 and not tier["failures"]
    assert (f"\n\nCUDA test tier (`pytest tests/cuda -m cuda`): skipped: no CUDA — 0 passed, 0 failed, "
            f"{len(tier['tests'])} skipped (") in table


def test_budget_guard_skips_what_would_overrun_and_says_why(tmp_path):
    results, printed = _gpu(tmp_path, "--budget", "0")
    skipped = [r["skipped"] for r in results["train"] if r["trainer"] == "vlp"]
    skipped += [c["skipped"] for c in results["loss"]["cases"]] + [results["decode"]["skipped"]]
    assert len(skipped) == 6 and all(s.startswith("time budget: ") for s in skipped)
    assert "skipped: time budget: vlp vlp-bench-tiny B=64 needs" in printed
    assert results["cuda_tests"]["status"].startswith("skipped: time budget: the cuda test tier needs")


def test_flop_count_is_exact_including_attention(monkeypatch):
    """The tiny benchmark model (bench/tiny-throughput.yaml): forward FLOPs from the transformer arithmetic; forward +
    backward is 3× that, less one patch-embedding convolution (no gradient w.r.t. the input images)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_train

    width, layers, embed = 256, 6, 256

    def tower(tokens: int) -> int:  # qkv + out projection + 4× MLP, and the Q·Kᵀ and attention·V products
        return layers * (24 * width ** 2 * tokens + 4 * tokens ** 2 * width) + 2 * width * embed

    patches = (64 // 16) ** 2
    conv = patches * 2 * 3 * 16 * 16 * width
    forward = tower(patches + 1) + conv + tower(32)
    assert gpu_train.model_flops_per_sample(gpu_train.tt.MODEL_NAME) == 3 * forward - conv


def test_wheels_pin_the_versions_installed_here_and_never_torch(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_env

    vlp_side, openclip_side, pytest_side = gpu_env.fetch_commands()
    for name in ("open_clip_torch", "webdataset", "braceexpand", "ftfy"):
        assert f"{name}=={importlib.metadata.version(name)}" in vlp_side
    assert not any(a.startswith(("torch", "numpy", "pillow")) for a in vlp_side + openclip_side)
    assert openclip_side[-1] == "webdataset==0.2.86" and str(gpu_env.OPENCLIP_WHEELS) in openclip_side
    for name in ("pytest", "iniconfig", "pluggy", "packaging", "pygments"):  # the cuda tier, where pytest is absent
        assert f"{name}=={importlib.metadata.version(name)}" in pytest_side
    assert str(gpu_env.PYTEST_WHEELS) in pytest_side
    assert all("--no-deps" in c and c[c.index("--python-version") + 1] == "3.12"
               for c in (vlp_side, openclip_side, pytest_side))
    assert "/bench/wheels/" in (ROOT / ".gitignore").read_text().splitlines()


def test_run_all_skips_the_gpu_benchmark_cleanly_without_a_gpu():
    done = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "gpu"], cwd=ROOT, timeout=300,
                          env={**os.environ, **ENV, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no GPU: skipped" in done.stdout



def test_loss_ladder_doubles_the_batch_until_out_of_memory_and_says_so(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import time

    import gpu
    import gpu_loss
    import torch

    def run_case(impl, loss, batch, *rest):
        if batch > 1024:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return {"impl": impl, "loss": loss, "batch": batch, "peak_bytes": batch, "seconds": 1e-3}

    monkeypatch.setattr(gpu_loss.loss_memory, "run_case", run_case)
    settings = {**gpu.SMOKE, "loss_start": 256, "loss_max": 2 ** 20}
    cases = gpu_loss._ladder("vlp", "softmax", settings, gpu.Budget(60), time.perf_counter() + 60)
    assert [c["batch"] for c in cases] == [256, 512, 1024, 2048] and cases[-1]["oom"]
    summary = gpu_loss.summary(cases, 2 ** 20)["softmax"]
    assert summary["largest_vlp"] == 1024 and summary["stopped_vlp"] == "out of memory at B=2048"


def test_the_cuda_tier_report_names_each_failure_and_a_run_cut_off_at_its_cap(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_tests

    output = ("tests/cuda/test_a.py::test_x PASSED [ 33%]\ntests/cuda/test_a.py::test_y[bf16] FAILED [ 66%]\n"
              "tests/cuda/test_b.py::test_z ERROR [100%]\n=== short test summary info ===\n"
              "FAILED tests/cuda/test_a.py::test_y[bf16] - AssertionError: (0.2, 0.3, 0.1)\n"
              "ERROR tests/cuda/test_b.py::test_z - RuntimeError: CUDA error: an illegal memory access\n")
    failed = {**gpu_tests.outcome(output, 1, 180), "command": "pytest tests/cuda -m cuda", "seconds": 42.0}
    assert failed["status"] == "failed" and failed["counts"]["passed"] == failed["counts"]["failed"] == 1
    assert gpu_tests.lines(failed) == [
        "CUDA test tier (`pytest tests/cuda -m cuda`): failed — 1 passed, 1 failed, 1 error, 0 skipped (42 s)",
        "- FAILED tests/cuda/test_a.py::test_y[bf16] - AssertionError: (0.2, 0.3, 0.1)",
        "- ERROR tests/cuda/test_b.py::test_z - RuntimeError: CUDA error: an illegal memory access"]
    cut = gpu_tests.outcome(output.split("===")[0], None, 180)  # killed at the cap: no summary, counts so far
    assert cut["status"] == "timed out after 180 s (3 tests finished)" and cut["counts"]["failed"] == 1
