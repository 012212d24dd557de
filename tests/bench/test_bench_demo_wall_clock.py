"""bench/demo_wall_clock.py sums a run's training time from metrics.jsonl as issue 26 measured it: each logged
window's samples over its samples/s, evaluation records (no rate) left out."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench():
    spec = importlib.util.spec_from_file_location("demo_wall_clock", BENCH / "demo_wall_clock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_seconds_sums_the_windows_and_the_steady_rate_is_the_median_window(tmp_path):
    records = [{"step": 10, "samples_seen": 1280, "samples_per_s": 1280.0},   # 1 s
               {"step": 20, "samples_seen": 2560, "samples_per_s": 640.0},    # 2 s: an evaluation inside
               {"step": 20, "eval/zeroshot/acc1": 0.5},
               {"step": 25, "samples_seen": 3200, "samples_per_s": 1280.0}]   # 0.5 s
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    summed, steady, steps = _bench().training_seconds(metrics)
    assert summed == pytest.approx(3.5) and steps == 25
    assert steady == pytest.approx(3200 / 1280)  # the median window rate is 1280 samples/s
