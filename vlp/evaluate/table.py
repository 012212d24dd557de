"""The suite table: one row per eval set and task with the task's main metrics and their average, as CLIP_benchmark's
results tables summarise a benchmark; `compare_table` puts several models' row averages side by side.

A task's main metrics are its `Task.main_metrics` (zero-shot: acc1, acc5, mean_per_class_recall, or mAP for
multi-label sets; retrieval: R@1 and R@5 in both directions); a task without a list uses every metric not prefixed
`geometry_`. A row's `average` is the mean of its main metrics; the last row averages each column over the rows that
have it. Results come from `vlp eval --out` files, run directories (the newest evaluation of each set in
eval_results.json) or exported folders (the model card's model-index).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Optional

from vlp.evaluate.tasks import get_task, task_names

AVERAGE = "average"


def main_metrics(record: dict) -> dict[str, float]:
    """The record's main metrics that it has as finite numbers, in the task's order."""
    names = _task_main_metrics(record["task"])
    metrics = record["metrics"]
    chosen = names or [m for m in metrics if not m.startswith("geometry_")]
    return {m: float(metrics[m]) for m in chosen if _finite(metrics.get(m))}


def suite_table(records: list[dict]) -> tuple[list[str], list[list]]:
    """(columns, rows): dataset, task, the main metrics (union over the rows; None where a row lacks one), average."""
    rows = [(r["dataset"], r["task"], main_metrics(r)) for r in newest(records)]
    metric_columns = list(dict.fromkeys(m for _, _, metrics in rows for m in metrics))
    table = [[dataset, task] + [metrics.get(m) for m in metric_columns] + [_mean(metrics.values())]
             for dataset, task, metrics in rows]
    if table:
        table.append([AVERAGE, ""] + [_mean(row[i] for row in table) for i in range(2, len(metric_columns) + 3)])
    return ["dataset", "task"] + metric_columns + [AVERAGE], table


def compare_table(results: dict[str, list[dict]], metric: str = AVERAGE) -> tuple[list[str], list[list]]:
    """(columns, rows): dataset, task, then one column per model holding its row's `metric` (the average of the
    main metrics by default); the last row averages each model over the sets that every model has."""
    per_model = {label: _rows_by_set(records) for label, records in results.items()}
    keys = list(dict.fromkeys(key for rows in per_model.values() for key in rows))
    table = [[dataset, task] + [per_model[label].get((dataset, task), {}).get(metric) for label in results]
             for dataset, task in keys]
    common = [row for row in table if all(value is not None for value in row[2:])]
    if table:
        table.append([f"{AVERAGE} ({len(common)} sets all have)", ""] +
                     [_mean(row[i] for row in common) for i in range(2, len(results) + 2)])
    return ["dataset", "task"] + list(results), table


def _rows_by_set(records: list[dict]) -> dict[tuple[str, str], dict]:
    """(dataset, task) → the suite table's row as {column: value}, without the average row."""
    columns, rows = suite_table(records)
    return {(row[0], row[1]): dict(zip(columns, row)) for row in rows[:-1]}


def newest(records: list[dict]) -> list[dict]:
    """One record per (dataset, task): the last one of the highest step (records of a run's evaluations carry steps;
    `vlp eval` records none)."""
    chosen: dict[tuple, dict] = {}
    for record in records:
        key = (record["dataset"], record["task"])
        if key not in chosen or record.get("step", 0) >= chosen[key].get("step", 0):
            chosen[key] = record
    return list(chosen.values())


# ---------------------------------------------------------------- text forms

def to_markdown(columns: list[str], rows: list[list]) -> str:
    cells = [[_text(v) for v in row] for row in rows]
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(columns))) + "|"
    lines = ["| " + " | ".join(columns) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def to_csv(columns: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue()


def to_json(columns: list[str], rows: list[list]) -> str:
    return json.dumps([dict(zip(columns, row)) for row in rows], indent=1) + "\n"


def write_table(columns: list[str], rows: list[list], prefix: str | Path) -> list[Path]:
    """PREFIX.md, PREFIX.csv and PREFIX.json."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, render in ((".md", to_markdown), (".csv", to_csv), (".json", to_json)):
        path = prefix.with_name(prefix.name + suffix)
        path.write_text(render(columns, rows))
        written.append(path)
    return written


def _text(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean(values) -> Optional[float]:
    present = [v for v in values if _finite(v)]
    return sum(present) / len(present) if present else None


def _task_main_metrics(record_task: str) -> tuple[str, ...]:
    for name in task_names():
        task = get_task(name)
        if record_task in (task.name, task.result_name):
            return task.main_metrics
    return ()
