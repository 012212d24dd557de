"""`plot_run(RUN_DIR)`: PNGs of the training curves from metrics.jsonl (one figure per group, one panel per metric,
a curve logged under two names drawn once) and of the evaluation metrics over steps: one figure per eval set, one
small panel per quantity (scores, ranks, cosines, uniformity, effective rank, and each other geometry metric alone),
so that no axis mixes numbers of different scales."""
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
# panels of the eval figure, each holding metrics of one quantity and scale; any other geometry_ metric: its own panel
EVAL_PANELS: dict[str, Callable[[str], bool]] = {
    "scores": lambda m: not m.startswith("geometry_") and not m.endswith("_rank"),
    "ranks (1 = best)": lambda m: m.endswith("_rank") and not m.startswith("geometry_"),
    "cosines": lambda m: m.startswith("geometry_") and m.endswith("_cosine"),
    "uniformity (lower = more spread)": lambda m: m.startswith("geometry_uniformity"),
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
    """One small panel per quantity (`eval_panels`), one line per metric (markers: an evaluation)."""
    panels = eval_panels(metrics)
    fig, axes = _grid(plt, len(panels), cols=3, size=(4.0, 2.8))
    for ax, (panel, names) in zip(axes, panels.items()):
        for name in names:
            steps, values = metrics[name]
            ax.plot(steps, values, marker="o", markersize=4, label=name.removeprefix("geometry_"))
        _label(ax, panel, 9)
        ax.legend(fontsize=6)
    fig.suptitle(f"evaluation on {dataset}")
    fig.tight_layout()
    return fig


def eval_panels(metrics) -> dict[str, list[str]]:
    """panel title → its metrics: the families of EVAL_PANELS, then one panel per other geometry metric."""
    panels = {name: sorted(m for m in metrics if member(m)) for name, member in EVAL_PANELS.items()}
    placed = {m for names in panels.values() for m in names}
    panels.update({m.removeprefix("geometry_"): [m] for m in sorted(metrics) if m not in placed})
    return {name: names for name, names in panels.items() if names}


def group_figure(plt, curves: dict, group: str, title: str):
    """The figure of training-metric `group`, None when it has no data: one panel per distinct curve."""
    panels = distinct_curves(curves, sorted(k for k in curves if GROUPS[group](k)))
    if not panels:
        return None
    fig, axes = _grid(plt, len(panels), cols=3, size=(4.5, 3.2))
    for ax, (names, key) in zip(axes, panels.items()):
        steps, values = curves[key]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        _label(ax, " = ".join(names), 9)
    fig.suptitle(f"{title}: {group}")
    fig.tight_layout()
    return fig


def distinct_curves(curves: dict, keys: list[str]) -> dict[tuple[str, ...], str]:
    """(every name of one curve) → the key to draw it from: `loss` and `objective/contrastive_loss` hold the same
    numbers when the objective has one term, and two panels of one curve only look like two findings."""
    names: dict[tuple, list[str]] = {}
    for key in keys:
        steps, values = curves[key]
        names.setdefault((tuple(steps), tuple(values)), []).append(key)
    return {tuple(same): same[0] for same in names.values()}


def _plot_groups(plt, curves: dict, title: str, out: Path) -> list[Path]:
    written = []
    for group in GROUPS:
        fig = group_figure(plt, curves, group, title)
        if fig is not None:
            path = out / f"{group}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written


def _grid(plt, panels: int, cols: int, size: tuple[float, float]):
    """(figure, the first `panels` axes of a grid `cols` wide); the grid's spare axes are hidden."""
    cols = min(cols, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    return fig, list(axes.flat)[:panels]


def _label(ax, title: str, fontsize: int) -> None:
    ax.set_title(title, fontsize=fontsize)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
