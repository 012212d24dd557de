"""The suite table: one row per eval set and task with the task's headline metric and main metrics, as
CLIP_benchmark's results tables summarise a benchmark; `compare_table` puts several models' headline metrics side by
side.

A task's headline is `Task.headline` (zero-shot: top-1, or mAP for multi-label sets; retrieval: mean R@1 of the two
directions; binding: accuracy over every kind of negative); its main metrics are `Task.main_metrics` (zero-shot:
acc1, acc5, mean_per_class_recall or mAP; retrieval: R@1 and R@5 in both directions); a task without a list uses
every metric not prefixed `geometry_`. Averages only ever mix numbers of one metric: the suite table's last row
averages each metric's column, and `compare_table` averages each metric over the sets that have it as headline.
Results come from `vlp eval --out` files, run directories (the newest evaluation of each set in eval_results.json)
or exported folders (the model card's model-index).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Optional

from vlp.evaluate.tasks import Task, get_task, task_names

AVERAGE = "average"


def main_metrics(record: dict) -> dict[str, float]:
    """The record's main metrics that it has as finite numbers, in the task's order."""
    task = _task(record["task"])
    metrics = record["metrics"]
    chosen = (task.main_metrics if task else ()) or [m for m in metrics if not m.startswith("geometry_")]
    return {m: float(metrics[m]) for m in chosen if _finite(metrics.get(m))}


def headline(record: dict) -> Optional[tuple[str, float]]:
    """(metric, value) standing for the record; a task without a headline: its first main metric."""
    task, finite = _task(record["task"]), {k: float(v) for k, v in record["metrics"].items() if _finite(v)}
    found = task.headline(finite) if task else None
    return found or next(iter(main_metrics(record).items()), None)


def suite_table(records: list[dict]) -> tuple[list[str], list[list]]:
    """(columns, rows): dataset, task, the headline and main metrics (union over the rows, each row's headline
    first; None where a row lacks one), then a row averaging each metric over the sets that have it."""
    rows = [(r["dataset"], r["task"], _row_metrics(r)) for r in newest(records)]
    metric_columns = list(dict.fromkeys(m for _, _, metrics in rows for m in metrics))
    table = [[dataset, task] + [metrics.get(m) for m in metric_columns] for dataset, task, metrics in rows]
    if table:
        table.append([AVERAGE, ""] + [_mean(row[i] for row in table) for i in range(2, len(metric_columns) + 2)])
    return ["dataset", "task"] + metric_columns, table


def compare_table(results: dict[str, list[dict]], metric: Optional[str] = None) -> tuple[list[str], list[list]]:
    """(columns, rows): dataset, task, metric, then one column per model holding that metric of the set (its
    headline by default, else `metric`); then, for each metric that two or more sets all models have show, a row
    averaging each model over those sets."""
    per_model = {label: {(r["dataset"], r["task"]): r for r in newest(records)} for label, records in results.items()}
    keys = list(dict.fromkeys(key for rows in per_model.values() for key in rows))
    table = [_compare_row(key, [rows.get(key) for rows in per_model.values()], metric) for key in keys]
    return ["dataset", "task", "metric"] + list(results), table + _averages(table)


def _compare_row(key: tuple[str, str], records: list[Optional[dict]], metric: Optional[str]) -> list:
    """The set's row: `metric`, or the headline of the first model that has one, from each model's record."""
    if metric is None:
        metric = next((found[0] for r in records if r and (found := headline(r))), None)
    return list(key) + [metric] + [_row_metrics(r).get(metric) if r else None for r in records]


def _averages(table: list[list]) -> list[list]:
    """Per metric, each model's mean over the sets of that metric that every model has; none for a single set."""
    rows = []
    for metric in dict.fromkeys(row[2] for row in table if row[2] is not None):
        common = [row for row in table if row[2] == metric and all(v is not None for v in row[3:])]
        if len(common) > 1:
            rows.append([f"{AVERAGE} ({len(common)} sets all have)", "", metric] +
                        [_mean(row[i] for row in common) for i in range(3, len(table[0]))])
    return rows


def _row_metrics(record: dict) -> dict[str, float]:
    """The headline first, then the main metrics."""
    found = headline(record)
    return {**dict([found] if found else []), **main_metrics(record)}


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
    numeric = [any(isinstance(row[i], float) for row in rows) for i in range(len(columns))]
    rule = "|" + "|".join("---:" if right else "---" for right in numeric) + "|"
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


def _task(record_task: str) -> Optional[type[Task]]:
    """The registered task writing records of `record_task`; None for one no registered task writes."""
    for name in task_names():
        task = get_task(name)
        if record_task in (task.name, task.result_name):
            return task
    return None
