"""bench/data_throughput.py: the shard sets it builds look as described, and its vlp and limit measurements and
report run (the OpenCLIP side needs bench/.venv-openclip with webdataset 0.2.86 from PyPI: not run here)."""
import io
from types import SimpleNamespace

from PIL import Image

from helpers.modules import bench_module


def _bench():
    return bench_module("data_throughput")  # it imports openclip_env from its folder


def test_shard_sets_measurements_and_report(tmp_path, monkeypatch):
    import torch

    bench = _bench()
    # restored afterwards: the "vlp-gpu-cpu-side" measurement replaces it
    monkeypatch.setattr(torch.cuda, "is_available", torch.cuda.is_available)
    args = SimpleNamespace(samples=16, batch=8, workers=1, runs=1)
    in_process = SimpleNamespace(**{**vars(args), "workers": 0, "clock": "cpu"})
    results, cpu, timings = {}, {}, {}
    for kind in bench.SETS:
        spec = bench.make_set(tmp_path, kind, args.samples)
        files = bench.jpegs(spec)
        sizes = [Image.open(io.BytesIO(data)).size for data in files]
        assert len(files) == 16
        if kind == "img2dataset":
            assert set(sizes) == {(256, 256)}
        else:
            assert all(400 <= max(s) <= 1200 for s in sizes) and len(set(sizes)) > 8
        vlp, normed = bench.measure("vlp", spec, args, 64), bench.measure("vlp-cpu-norm", spec, args, 64)
        limit = bench.measure("limit", spec, args, 64)
        assert vlp > 0 and normed > 0 and limit > 0
        results[kind] = (vlp / 2, vlp, normed, limit)
        cpu[kind] = (vlp / 2, *(bench.measure(side, spec, in_process, 64)
                                for side in ("vlp", "vlp-cpu-norm", "vlp-gpu-cpu-side", "ceiling")))
        timings[kind] = bench.decode_timings(spec, 64, count=4)
    table = bench.report(args, {"vlp side": {"torch": "x"}}, results, cpu, timings)
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| (")]
    assert [row[0] for row in rows[:2]] == ["| " + name for name in bench.SETS.values()]
    assert [row[5] for row in rows[:2]] == ["2.00×", "2.00×"]  # vlp / OpenCLIP, from the samples/s given
    assert "vlp TrainCrop (reduced decode, crop; uint8)" in table
    assert [row[7].endswith("%") for row in rows[2:4]] == [True, True]  # vlp / transform ceiling, CPU time
    assert "≥ 85% of the per-image transform ceiling" in table and "60" not in table.split("Target")[-1]
