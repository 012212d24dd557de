"""bench/data_throughput.py: the shard sets it builds look as described, and its vlp and limit measurements and
report run (the OpenCLIP side needs bench/.venv-openclip with webdataset 0.2.86 from PyPI: not run here)."""
import importlib.util
import io
import sys
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench():
    sys.path.insert(0, str(BENCH))  # data_throughput imports openclip_env from its folder
    try:
        spec = importlib.util.spec_from_file_location("data_throughput", BENCH / "data_throughput.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_shard_sets_measurements_and_report(tmp_path):
    bench = _bench()
    args = SimpleNamespace(samples=16, batch=8, workers=1, runs=1)
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
        vlp, limit = bench.measure("vlp", spec, args, 64), bench.measure("limit", spec, args, 64)
        assert vlp > 0 and limit > 0
        results[kind] = (vlp / 2, vlp, limit)
        cpu[kind] = (vlp / 2, bench.measure("vlp", spec, SimpleNamespace(**{**vars(args), "workers": 0, "clock": "cpu"}),
                                            64))
        timings[kind] = bench.decode_timings(spec, 64, count=4)
    table = bench.report(args, {"vlp side": {"torch": "x"}}, results, cpu, timings)
    assert "| (a) img2dataset-style 256×256 JPEG q95 |" in table and table.count("2.00× |") == 2
    assert "vlp TrainCrop (reduced decode, crop; uint8)" in table
