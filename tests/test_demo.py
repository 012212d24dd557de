"""`vlp demo` wiring end to end on the small scikit-learn digits (a few steps: the full run is the README's command)."""
import json

from vlp.cli import main


def test_demo_builds_trains_evaluates_exports_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["demo", "--source", "digits", "--data-dir", str(tmp_path / "data"), "--set", "train.duration=3",
            "--set", "train.batch_size=32", "--set", "data.workers=0", "--set", "logging.progress=false",
            "--set", f"train.output_dir={tmp_path / 'runs'}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "digits_zeroshot: zero-shot top-1" in out and "digits_retrieval: image→text R@1" in out
    run_dir = next((tmp_path / "runs").iterdir())
    report = json.loads((run_dir / "demo_report.json").read_text())
    assert report["steps"] == 3 and report["samples_seen"] == 96
    assert {r["dataset"] for r in report["eval"]} == {"digits_zeroshot", "digits_retrieval"}
    assert (run_dir / "export" / "open_clip_config.json").is_file()
    assert report["plots"] and all(p.endswith(".png") for p in report["plots"])
    # the bundled data is built once and reused by the next demo run
    assert json.loads((tmp_path / "data" / "digits" / "paths.json").read_text())["num_train"] > 1000
