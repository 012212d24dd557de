"""Result records (CLIP_benchmark's output fields), JSON files, the printed table, and reading records back from
result files, run directories and exported folders."""
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


def read_results(source: Union[str, Path]) -> list[dict]:
    """The result records of a `vlp eval --out` JSON file, a run directory (its eval_results.json: every in-training
    evaluation) or an exported folder (its model card's model-index, written from the run's results)."""
    from vlp.run_dir import RunDir

    source = Path(source)
    run = RunDir.of(source) if source.is_dir() else None
    path = run.eval_results if run else source
    if path.is_file() and path.suffix == ".json":
        records = json.loads(path.read_text())
        if not isinstance(records, list) or not all(isinstance(r, dict) and "metrics" in r for r in records):
            raise ValueError(f"{path}: expected a JSON list of result records (vlp eval --out)")
        return records
    if source.is_dir() and (source / CARD).is_file():
        return _card_records(source / CARD)
    raise FileNotFoundError(f"{source}: no results (expected a run directory with evaluations, an exported folder "
                            f"with a model card, or a vlp eval --out JSON file)")


CARD = "README.md"  # an exported folder's model card


def _card_records(path: Path) -> list[dict]:
    from huggingface_hub import ModelCard

    from vlp.evaluate.tasks import get_task, task_names

    result_name: dict[str, str] = {}
    for name in task_names():  # the card keeps only the Hub type: it reads back as the first task of that type
        result_name.setdefault(get_task(name).hub_type, get_task(name).result_name)
    records: dict[tuple, dict] = {}
    for entry in ModelCard.load(path).data.eval_results or []:
        task = result_name.get(entry.task_type, entry.task_type)
        record = records.setdefault((entry.dataset_name, task), {"model": "", "pretrained": "", "task": task,
                                                                 "dataset": entry.dataset_name, "metrics": {}})
        record["metrics"][entry.metric_type] = entry.metric_value  # a later (newer) evaluation's entry wins
    return list(records.values())
