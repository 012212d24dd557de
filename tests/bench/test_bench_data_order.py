"""bench/data_order_throughput.py: both of its pipelines run on the current package and measure an epoch (the old
revision's side is the same code imported from a `git archive` checkout: not run here)."""
import pytest

from helpers.modules import bench_module
from helpers.shards import jpeg_shards


def _bench():
    return bench_module("data_order_throughput")


@pytest.mark.parametrize("kind", ["same", "own"])
def test_both_pipelines_measure_an_epoch(tmp_path, kind):
    result = _bench().measure(jpeg_shards(tmp_path), workers=0, batch=4, kind=kind)
    assert result["samples_per_s"] > 0 and result["cpu_ms_per_sample"] >= result["main_ms_per_sample"] > 0
    transform, prepare = _bench().pipeline(kind)
    assert prepare is not None and callable(transform)
