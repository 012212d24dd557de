"""The suite table (`vlp eval`: a row per set and task, headline and main metrics, per-metric averages) and `vlp
compare` (headline metrics side by side), checked against the per-set JSON result records."""
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


def test_suite_table_rows_lead_with_the_headline_and_average_only_one_metric_at_a_time():
    records = [_record("cifar", "zeroshot_classification", ZS), _record("coco", "zeroshot_retrieval", RET),
               _record("cifar100", "zeroshot_classification", {**ZS, "acc1": 0.3})]
    columns, rows = suite_table(records)
    assert columns == ["dataset", "task", "acc1", "acc5", "mean_per_class_recall", "mean_R@1", "image_to_text_R@1",
                       "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5"]
    cifar, coco, _, average = [dict(zip(columns, row)) for row in rows]
    assert cifar["image_to_text_R@1"] is None and coco["acc1"] is None
    assert coco["mean_R@1"] == pytest.approx((0.1 + 0.2) / 2)
    assert average["dataset"] == "average" and average["acc1"] == pytest.approx(0.4)  # over the zero-shot sets only
    assert average["mean_R@1"] == coco["mean_R@1"]


def test_suite_table_takes_the_newest_evaluation_and_skips_nan():
    records = [_record("cifar", "zeroshot_classification", {**ZS, "acc1": 0.1}, step=30),
               _record("cifar", "zeroshot_classification", {**ZS, "acc5": None}, step=60)]  # acc5: NaN written null
    columns, rows = suite_table(records)
    assert columns[2:] == ["acc1", "mean_per_class_recall"]  # no set has a finite acc5
    assert rows[0][2:] == [0.5, 0.4]


def test_compare_shows_each_tasks_headline_and_never_averages_two_metrics():
    binding = {"binding_color_acc": 0.7, "binding_mean_acc": 0.6}
    records = [_record("cifar", "zeroshot_classification", ZS), _record("imagenet", "zeroshot_classification",
               {**ZS, "acc1": 0.3}), _record("coco", "zeroshot_retrieval", RET), _record("flickr", "zeroshot_retrieval",
               RET), _record("scenes", "binding", binding)]
    columns, rows = compare_table({"a": records, "b": records[:4]})
    assert columns == ["dataset", "task", "metric", "a", "b"]
    table = {row[0]: row[2:] for row in rows}
    assert table["cifar"] == ["acc1", 0.5, 0.5] and table["scenes"] == ["binding_mean_acc", 0.6, None]
    assert table["coco"] == ["mean_R@1", pytest.approx(0.15), pytest.approx(0.15)]
    assert table["average (2 sets all have)"] == ["mean_R@1", pytest.approx(0.15), pytest.approx(0.15)]
    averages = [row for row in rows if row[0].startswith("average")]
    assert [row[2] for row in averages] == ["acc1", "mean_R@1"] and averages[0][3:] == [pytest.approx(0.4)] * 2
    _, rows = compare_table({"a": records}, "acc5")
    assert [row[2:] for row in rows[:2]] == [["acc5", 0.9], ["acc5", 0.9]] and rows[2][2:] == ["acc5", None]


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
        assert "average" not in row
    assert table[1]["mean_R@1"] == pytest.approx((records["digits_retrieval"]["image_to_text_R@1"] +
                                                  records["digits_retrieval"]["text_to_image_R@1"]) / 2)
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
    assert "| dataset | task | metric | digits | export | other |" in capsys.readouterr().out
    table = json.loads((tmp_path / "cmp.json").read_text())
    final = {r["dataset"]: r["metrics"] for r in json.loads((run_dir / "eval_results.json").read_text())
             if r["step"] == 60}
    zs = next(row for row in table if row["dataset"] == "digits_zeroshot")
    expected = final["digits_zeroshot"]["acc1"]
    assert zs["metric"] == "acc1" and zs["digits"] == pytest.approx(expected)
    assert zs["export"] == pytest.approx(expected) and zs["other"] == 0.5  # card = run
    cifar = next(row for row in table if row["dataset"] == "cifar")
    assert cifar["digits"] is None and cifar["other"] is not None
    assert not [row for row in table if row["dataset"].startswith("average")]  # one set all three have: no mean


def test_compare_one_metric_and_a_bad_source(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([_record("coco", "zeroshot_retrieval", RET)]))
    b.write_text(json.dumps([_record("coco", "zeroshot_retrieval", {**RET, "text_to_image_R@5": 0.8})]))
    columns, rows = compare_table({"a": json.loads(a.read_text()), "b": json.loads(b.read_text())},
                                  "text_to_image_R@5")
    assert columns == ["dataset", "task", "metric", "a", "b"] and rows[0][2:] == ["text_to_image_R@5", 0.6, 0.8]
    (tmp_path / "bad.json").write_text('{"not": "records"}')
    assert main(["compare", str(a), str(tmp_path / "bad.json")]) == 2
    assert "expected a JSON list of result records" in capsys.readouterr().err
