"""The suite table (`vlp eval`: a row per set and task, main metrics, average) and `vlp compare` side by side, checked
against the per-set JSON result records."""
from __future__ import annotations

import csv
import json

import pytest

from vlp.cli import main
from vlp.evaluate.table import compare_table, suite_table

ZS = {"acc1": 0.5, "acc5": 0.9, "mean_per_class_recall": 0.4, "geometry_modality_gap": 1.2}
RET = {"image_to_text_R@1": 0.1, "image_to_text_R@5": 0.3, "text_to_image_R@1": 0.2, "text_to_image_R@5": 0.6,
       "image_to_text_R@10": 0.7, "text_to_image_mean_rank": 9.0}


def _record(dataset, task, metrics, **extra):
    return {"model": "m", "pretrained": "", "dataset": dataset, "task": task, "metrics": metrics, **extra}


def test_suite_table_rows_hold_the_main_metrics_and_their_average():
    records = [_record("cifar", "zeroshot_classification", ZS), _record("coco", "zeroshot_retrieval", RET)]
    columns, rows = suite_table(records)
    assert columns == ["dataset", "task", "acc1", "acc5", "mean_per_class_recall", "image_to_text_R@1",
                       "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5", "average"]
    cifar, coco, average = [dict(zip(columns, row)) for row in rows]
    assert cifar["average"] == pytest.approx((0.5 + 0.9 + 0.4) / 3) and cifar["image_to_text_R@1"] is None
    assert coco["average"] == pytest.approx((0.1 + 0.3 + 0.2 + 0.6) / 4) and coco["acc1"] is None
    assert average["dataset"] == "average" and average["acc1"] == 0.5
    assert average["average"] == pytest.approx((cifar["average"] + coco["average"]) / 2)


def test_suite_table_takes_the_newest_evaluation_and_skips_nan():
    records = [_record("cifar", "zeroshot_classification", {**ZS, "acc1": 0.1}, step=30),
               _record("cifar", "zeroshot_classification", {**ZS, "acc5": None}, step=60)]  # acc5: NaN written null
    columns, rows = suite_table(records)
    assert columns[2:] == ["acc1", "mean_per_class_recall", "average"]  # no set has a finite acc5
    assert rows[0][2:] == [0.5, 0.4, pytest.approx(0.45)]


def test_vlp_eval_writes_the_table_matching_its_json_records(evaluated_digits, tmp_path):
    run_dir, _ = evaluated_digits
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(run_dir), "--no-progress", "--out", str(out)]) == 0
    records = {r["dataset"]: r["metrics"] for r in json.loads(out.read_text())}
    table = json.loads((tmp_path / "results.table.json").read_text())
    assert [row["dataset"] for row in table] == ["digits_zeroshot", "digits_retrieval", "average"]
    mains = {"digits_zeroshot": ["acc1", "acc5", "mean_per_class_recall"],
             "digits_retrieval": ["image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5"]}
    for row in table[:2]:
        metrics, names = records[row["dataset"]], mains[row["dataset"]]
        assert all(row[name] == metrics[name] for name in names)
        assert row["average"] == pytest.approx(sum(metrics[m] for m in names) / len(names))
    with open(tmp_path / "results.table.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["acc1"]) == records["digits_zeroshot"]["acc1"] and rows[0]["text_to_image_R@5"] == ""
    markdown = (tmp_path / "results.table.md").read_text()
    assert f"| digits_zeroshot | zeroshot_classification | {records['digits_zeroshot']['acc1']:.4f} |" in markdown


def test_compare_puts_runs_exports_and_result_files_side_by_side(evaluated_digits, tmp_path, capsys):
    run_dir, _ = evaluated_digits
    other = tmp_path / "other.json"
    other.write_text(json.dumps([_record("digits_zeroshot", "zeroshot_classification", ZS),
                                 _record("cifar", "zeroshot_classification", ZS)]))
    assert main(["compare", str(run_dir), str(run_dir / "export"), str(other), "--out", str(tmp_path / "cmp")]) == 0
    assert "| dataset | task | digits | export | other |" in capsys.readouterr().out
    table = json.loads((tmp_path / "cmp.json").read_text())
    final = {r["dataset"]: r["metrics"] for r in json.loads((run_dir / "eval_results.json").read_text())
             if r["step"] == 60}
    zs = next(row for row in table if row["dataset"] == "digits_zeroshot")
    expected = sum(final["digits_zeroshot"][m] for m in ("acc1", "acc5", "mean_per_class_recall")) / 3
    assert zs["digits"] == pytest.approx(expected) and zs["export"] == pytest.approx(expected)  # card = run
    assert zs["other"] == pytest.approx((0.5 + 0.9 + 0.4) / 3)
    cifar = next(row for row in table if row["dataset"] == "cifar")
    assert cifar["digits"] is None and cifar["other"] is not None
    average = table[-1]  # over the one set that all three have
    assert average["dataset"] == "average (1 sets all have)" and average["other"] == pytest.approx(zs["other"])


def test_compare_one_metric_and_a_bad_source(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([_record("coco", "zeroshot_retrieval", RET)]))
    b.write_text(json.dumps([_record("coco", "zeroshot_retrieval", {**RET, "text_to_image_R@5": 0.8})]))
    columns, rows = compare_table({"a": json.loads(a.read_text()), "b": json.loads(b.read_text())},
                                  "text_to_image_R@5")
    assert columns == ["dataset", "task", "a", "b"] and rows[0][2:] == [0.6, 0.8]
    (tmp_path / "bad.json").write_text('{"not": "records"}')
    assert main(["compare", str(a), str(tmp_path / "bad.json")]) == 2
    assert "expected a JSON list of result records" in capsys.readouterr().err
