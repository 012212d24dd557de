"""Result records (CLIP_benchmark's output fields), JSON files and the printed table."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Union

from vlp.evaluate.tasks import get_task


def make_record(model: str, dataset: str, task: str, metrics: dict[str, float], pretrained: str = "") -> dict:
    """`task` is the recipe's task name; the record holds the task's result name (CLIP_benchmark's, for built-ins)."""
    return {"model": model, "pretrained": pretrained, "dataset": dataset, "task": get_task(task).result_name,
            "metrics": metrics}


def write_results(records: list[dict], path: Union[str, Path]) -> None:
    """JSON list of records; NaN metrics (e.g. acc5 with < 5 classes) are written as null so any parser reads it."""
    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(records), indent=2) + "\n")


def format_table(records: list[dict]) -> str:
    """One column per dataset, one row per metric (blank where a dataset lacks the metric)."""
    if not records:
        return "(no results)"
    headers = ["metric"] + [r["dataset"] for r in records]
    names = list(dict.fromkeys(name for r in records for name in r["metrics"]))
    rows = [[name] + [_format_value(r["metrics"].get(name)) for r in records] for name in names]
    widths = [max(len(row[i]) for row in [headers] + rows) for i in range(len(headers))]

    def line(cells):
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows])


def _format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
