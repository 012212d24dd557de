"""`vlp demo` wiring end to end on the small scikit-learn digits (a few steps: the full run is the README's command),
and what it prints: only numbers that mean something."""
import json

from vlp.cli import main


def test_demo_builds_trains_evaluates_exports_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["demo", "--source", "digits", "--data-dir", str(tmp_path / "data"), "--set", "train.duration=2",
            "--set", "train.batch_size=32", "--set", "data.workers=0", "--set", "logging.progress=false",
            "--set", "eval.every=1 steps", "--set", f"train.output_dir={tmp_path / 'runs'}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    zeroshot = next(i for i, line in enumerate(lines) if line.startswith("  digits_zeroshot: zero-shot digit top-1 "))
    assert ", top-5 " in lines[zeroshot] and ", mean per-class recall " in lines[zeroshot]
    assert lines[zeroshot + 1].startswith("    modality gap ") and "separability" in lines[zeroshot + 1]
    # digit-only captions match a tenth of the images each: their R@k is left out of what is printed
    assert "R@" not in out and "digits_retrieval" not in out
    assert "  retrieval and binding (captions naming two coloured digits in order): vlp demo tiny-scenes.yaml" in lines
    # evaluated during training (step 1) and at the end (step 2): a curve
    assert "  zero-shot top-1 during training: step 1: " in out and ", step 2: " in out
    run_dir = next((tmp_path / "runs").iterdir())
    report = json.loads((run_dir / "demo_report.json").read_text())
    assert report["steps"] == 2 and report["samples_seen"] == 64
    assert [(r["dataset"], r["step"]) for r in report["eval"]] == [
        (name, step) for step in (1, 2) for name in ("digits_zeroshot", "digits_retrieval")]
    assert (run_dir / "export" / "open_clip_config.json").is_file()
    assert report["plots"] and all(p.endswith(".png") for p in report["plots"])
    # the bundled data is built once and reused by the next demo run
    assert json.loads((tmp_path / "data" / "digits" / "paths.json").read_text())["num_train"] > 1000


def test_default_recipe_evaluates_several_times_within_its_run():
    from vlp.demo import DEFAULT_RECIPE, default_source
    from vlp.recipe import load_recipe

    recipe = load_recipe(DEFAULT_RECIPE)
    assert recipe.eval.every is not None and recipe.eval.every.unit == recipe.train.duration.unit
    assert recipe.train.duration.value / recipe.eval.every.value >= 3
    assert default_source("tiny-scenes-negclip.yaml") == "scenes" and default_source(DEFAULT_RECIPE) == "mnist"
