"""bench/demo_wall_clock.py sums a run's training time from metrics.jsonl as issue 26 measured it: each logged
window's samples over its samples/s, and the time above the median window's rate split by what each window holds."""
import json

import pytest

from helpers.modules import bench_module


def _bench():
    return bench_module("demo_wall_clock")


def test_training_seconds_sums_the_windows_and_splits_the_time_above_the_median_rate(tmp_path):
    records = [{"step": 10, "samples_seen": 1280, "samples_per_s": 640.0, "epoch": 0},    # 2 s: the start
               {"step": 20, "samples_seen": 2560, "samples_per_s": 1280.0, "epoch": 0},   # 1 s
               {"step": 25, "eval/zeroshot/acc1": 0.5},
               {"step": 30, "samples_seen": 3840, "samples_per_s": 320.0, "epoch": 0},    # 4 s: the evaluation
               {"step": 40, "samples_seen": 5120, "samples_per_s": 1280.0, "epoch": 0},   # 1 s
               {"step": 50, "samples_seen": 6400, "samples_per_s": 1024.0, "epoch": 1},   # 1.25 s: a new epoch
               {"step": 60, "samples_seen": 7680, "samples_per_s": 1280.0, "epoch": 1},   # 1 s
               {"step": 70, "samples_seen": 8960, "samples_per_s": 1280.0, "epoch": 1}]   # 1 s
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    got = _bench().training_seconds(metrics)
    assert got["training_s"] == pytest.approx(11.25) and got["steps"] == 70
    assert got["steady_s"] == pytest.approx(8960 / 1280)  # the median window: 1280 samples/s
    assert got["start s"] == pytest.approx(1) and got["evaluation s"] == pytest.approx(3)
    assert got["epoch boundary s"] == pytest.approx(0.25) and got["other s"] == pytest.approx(0)
