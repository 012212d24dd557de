"""`plot_run(RUN_DIR)`: PNGs of the training curves from metrics.jsonl (one figure per group, one panel per metric)
and of the evaluation metrics over steps: one figure per eval set, its metrics grouped in a few panels (scores,
ranks, geometry, effective rank) so a run evaluated once still draws every panel with several points."""
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
}
EVAL_PREFIX = "eval/"  # metrics.jsonl keys eval/<set>/<metric>
EVAL_PANELS: dict[str, Callable[[str], bool]] = {
    "scores": lambda m: not m.startswith("geometry_") and not m.endswith("_rank"),
    "ranks (1 = best)": lambda m: m.endswith("_rank"),
    "geometry": lambda m: m.startswith("geometry_") and "effective_rank" not in m,
    "effective rank": lambda m: m.startswith("geometry_effective_rank"),
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
    """Write RUN_DIR/plots/<group>.png for every group with data and eval_<set>.png for every eval set; returns the
    files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else RunDir(run_dir).plots
    out.mkdir(parents=True, exist_ok=True)
    curves = series(read_metrics(run_dir))
    written = _plot_groups(plt, curves, run_dir.name, out)
    for dataset, metrics in eval_series(curves).items():
        fig = eval_figure(plt, dataset, metrics)
        path = out / f"eval_{dataset}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def eval_series(curves: dict) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """eval set → metric → (steps, values), from the eval/<set>/<metric> curves."""
    out: dict[str, dict] = {}
    for key, curve in curves.items():
        if key.startswith(EVAL_PREFIX) and key.count("/") >= 2:
            dataset, metric = key[len(EVAL_PREFIX):].rsplit("/", 1)
            out.setdefault(dataset, {})[metric] = curve
    return out


def eval_figure(plt, dataset: str, metrics: dict[str, tuple[list[int], list[float]]]):
    """One panel per metric family, one line per metric (markers: an evaluation)."""
    panels = {name: sorted(m for m in metrics if member(m)) for name, member in EVAL_PANELS.items()}
    panels = {name: names for name, names in panels.items() if names}
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.8 * rows), squeeze=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax, (panel, names) in zip(axes.flat, panels.items()):
        for name in names:
            steps, values = metrics[name]
            ax.plot(steps, values, marker="o", markersize=4, label=name.removeprefix("geometry_"))
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"evaluation on {dataset}")
    fig.tight_layout()
    return fig


def _plot_groups(plt, curves: dict, title: str, out: Path) -> list[Path]:
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
        fig.suptitle(f"{title}: {group}")
        fig.tight_layout()
        path = out / f"{group}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
