"""`plot_run(RUN_DIR)`: PNGs of the training curves from metrics.jsonl (one figure per group, one panel per metric)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from vlp.run_dir import RunDir
from vlp.train.metrics import read_metrics

GROUPS: dict[str, Callable[[str], bool]] = {
    "loss": lambda k: k == "loss" or k.startswith("objective/"),
    "lr": lambda k: k == "lr",
    "logit_scale": lambda k: k in ("logit_scale", "logit_bias"),
    "logits": lambda k: k.startswith("logits/"),
    "throughput": lambda k: k.startswith("samples_per_s") or k == "data_time",
    "eval": lambda k: k.startswith("eval/"),
}


def series(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """metric → (steps, values); for a step logged twice (a resumed run redoing it) the last record wins."""
    by_step: dict[str, dict[int, float]] = {}
    for record in records:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                by_step.setdefault(key, {})[record["step"]] = float(value)
    return {k: (sorted(v), [v[s] for s in sorted(v)]) for k, v in by_step.items()}


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write RUN_DIR/plots/<group>.png for every group with data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else RunDir(run_dir).plots
    out.mkdir(parents=True, exist_ok=True)
    curves = series(read_metrics(run_dir))
    written = []
    for group, member in GROUPS.items():
        keys = sorted(k for k in curves if member(k))
        if not keys:
            continue
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            steps, values = curves[key]
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.suptitle(f"{run_dir.name}: {group}")
        fig.tight_layout()
        path = out / f"{group}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
