"""Objectives compared on the bundled digits (the `vlp demo` data), several seeds, mean ± std as a markdown table.

Suites (`--suite`):
- objectives: `recipes/tiny-digits.yaml` with softmax vs each false-negative, temperature and several-caption objective,
  the same number of steps (`--steps`, default the demo's 465), held-out zero-shot top-1 and the zero-shot set's
  geometry; with `--source scenes`, `recipes/tiny-scenes.yaml` (its 8 epochs) with left-digit zero-shot, retrieval R@1,
  the binding tests and the retrieval set's geometry.
- small-batch: iSogCLR at global batch 64 vs softmax at 64 and at 512, the same number of epochs (`--epochs`).
- isogclr-sweep: iSogCLR on `recipes/tiny-digits.yaml` (global batch 128, from scratch) over ρ × τ₀ (`--rhos`,
  `--taus`), the demo's steps; besides top-1, the spread of the learned per-sample τ at the end (min, median, max
  over both anchors of every sample, and the fraction at τ_min or τ_max), read from the final checkpoint.
- gap-paper: CLIP vs CUA vs CUAXU in the contrastive-gap paper's setting (`recipes/tiny-digits-gap-paper*.yaml`):
  as the paper fine-tunes a pretrained CLIP with new projection layers, a base model is first pretrained once
  (`tiny-digits.yaml`, softmax, learned temperature, seed 0) and each run fine-tunes it with freshly initialised
  projections (seeded by the run's seed) at the recipes' temperature 0.01 (the weights file lacks the logit scale, so
  the recipe's log 100 applies); `--from-scratch` trains the recipes from random weights instead. The gap is
  measured on held-out image-caption pairs (the retrieval set: each image with its first caption), as the paper
  measures it on MS COCO image-caption pairs.
- distill: a small student (`STUDENT`: width 64, one block fewer per tower than the demo's) trained on `tiny-digits.yaml` for the demo's
  steps with and without `objective.distill` (weight 1, as OpenCLIP's --distill adds its term); the teacher is the
  demo's model trained once (seed 0, the demo's steps) and is shown as its own row.

Incremental: each finished run's result is cached as JSON under `--work`, and a re-run only trains what is missing
(a run killed half-way starts over). `--plan` prints the runs left, an estimate of their time from the step times
already measured, and the table so far. On the digits retrieval is not tabulated: their captions name only the
class, so ~100 test images share each caption and Recall@k is capped near k% (the numbers are in each run's JSON).

Usage: python bench/objectives_table.py [--suite objectives|small-batch|gap-paper|isogclr-sweep|distill]
       [--objectives a,b]
       [--seeds 0,1,2]
       [--steps N] [--epochs N] [--base-steps N] [--from-scratch] [--work DIR] [--data-dir DIR]
       [--source mnist|digits|scenes] [--rhos 0.1,0.5] [--taus 0.03,0.07] [--plan]
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
# data keys and parameters each objective needs
OBJECTIVE_OVERRIDES: dict[str, tuple[str, ...]] = {
    "softmax": (),
    "masked_softmax": (),  # masks identical captions; with labels (digits) also same-class pairs
    "supcon": (),
    "debiased": ("objective.params={tau_plus: 0.1}",),  # class prior of 10 balanced classes
    "macl": (),
    "isogclr": (),
    "multi_caption": ("data.captions=all",),
}
USES_LABELS = {"masked_softmax", "supcon"}
LABELS = "data.label_key=cls"  # the digit shards carry the class as `cls`; a scene has two digits and no label
DEMO_STEPS = 465  # `vlp demo`: 15 epochs of 4,000 images at batch 128 (31 steps an epoch)
PROJECTIONS = ("visual.proj", "text_projection")  # the open_clip towers' projections to the shared space
SOURCE_RECIPE = {"mnist": "tiny-digits.yaml", "digits": "tiny-digits.yaml", "scenes": "tiny-scenes.yaml"}
# the distill suite's student: the demo model at width 64 with one block fewer per tower (its image size and tokenizer
# stay the teacher's, as distillation requires). A one-block width-32 student fits the digits too poorly for a
# teacher to help (48% top-1 either way, 3 seeds).
STUDENT = ("model.config.vision_cfg.width=64", "model.config.vision_cfg.layers=2",
           "model.config.text_cfg={context_length: 12, vocab_size: 49408, width: 64, heads: 2, layers: 1, "
           "mlp_ratio: 2.0}")


@dataclass(frozen=True)
class RunSpec:
    row: str  # the table row
    recipe: str  # a file under recipes/
    objective: str  # the registry name the run needs
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    header: str
    dataset: str  # "zeroshot" | "retrieval" | "train" (the last logged training metrics)
    key: str
    fmt: str = "{:.3f}"


DIGITS_COLUMNS = (
    Column("zero-shot top-1", "zeroshot", "acc1", "{:.1%}"),
    Column("gap", "zeroshot", "geometry_modality_gap"),
    Column("separability", "zeroshot", "geometry_separability", "{:.1%}"),
    Column("uniformity (image)", "zeroshot", "geometry_uniformity_image", "{:.2f}"),
    Column("eff. rank (image)", "zeroshot", "geometry_effective_rank_image", "{:.1f}"),
)
SCENES_COLUMNS = (
    Column("left-digit zero-shot top-1", "left_digit", "acc1", "{:.1%}"),
    Column("image→text R@1", "retrieval", "image_to_text_R@1", "{:.1%}"),
    Column("text→image R@1", "retrieval", "text_to_image_R@1", "{:.1%}"),
    Column("binding (chance 50%)", "binding", "binding_mean_acc", "{:.1%}"),
    Column("gap", "retrieval", "geometry_modality_gap"),
    Column("uniformity (image)", "retrieval", "geometry_uniformity_image", "{:.2f}"),
    Column("eff. rank (image)", "retrieval", "geometry_effective_rank_image", "{:.1f}"),
)
PAPER_COLUMNS = (
    Column("centroid distance", "retrieval", "geometry_modality_gap"),
    Column("linear separability", "retrieval", "geometry_separability", "{:.1%}"),
    Column("matched cosine", "retrieval", "geometry_matched_cosine"),
    Column("uniformity image", "retrieval", "geometry_uniformity_image", "{:.2f}"),
    Column("uniformity text", "retrieval", "geometry_uniformity_text", "{:.2f}"),
    Column("cross-uniformity", "retrieval", "geometry_uniformity_cross", "{:.2f}"),
    Column("eff. rank image", "retrieval", "geometry_effective_rank_image", "{:.1f}"),
    Column("zero-shot top-1", "zeroshot", "acc1", "{:.1%}"),
    Column("final t", "train", "logit_scale", "{:.1f}"),
)
TAU_COLUMNS = (
    Column("zero-shot top-1", "zeroshot", "acc1", "{:.1%}"),
    Column("τ min", "tau", "min"),
    Column("τ median", "tau", "median"),
    Column("τ max", "tau", "max"),
    Column("at a clamp", "tau", "at_clamp", "{:.1%}"),
)


def suite_runs(suite: str, objectives: list[str], steps: int | None, epochs: int, source: str = "mnist",
               rhos: tuple[float, ...] = (), taus: tuple[float, ...] = (), teacher: Path | None = None
               ) -> list[RunSpec]:
    recipe = SOURCE_RECIPE[source]

    def objective(name: str) -> tuple[str, ...]:
        labels = (LABELS,) if name in USES_LABELS and source != "scenes" else ()
        return (f"objective.name={name}", *OBJECTIVE_OVERRIDES[name], *labels)

    if suite == "objectives":
        duration = (f"train.duration={steps} steps",) if steps else ()
        return [RunSpec(name, recipe, name, (*objective(name), *duration)) for name in objectives]
    if suite == "isogclr-sweep":
        duration = (f"train.duration={steps or DEMO_STEPS} steps",)
        return [RunSpec(f"isogclr ρ={rho} τ₀={tau}", recipe, "isogclr",
                        ("objective.name=isogclr", f"objective.params={{rho: {rho}, tau_init: {tau}}}", *duration))
                for rho in rhos for tau in taus]
    if suite == "distill":
        student = (*STUDENT, f"train.duration={steps or DEMO_STEPS} steps")
        return [RunSpec("student", recipe, "softmax", student),
                RunSpec("student + distill (weight 1)", recipe, "softmax",
                        (*student, f"objective.distill={{teacher: {teacher}, weight: 1.0}}"))]
    if suite == "small-batch":
        duration = f"train.duration={epochs} epochs"
        return [RunSpec(f"{name} @ batch {batch}", recipe, name, (*objective(name), f"train.batch_size={batch}",
                                                                   duration))
                for name, batch in (("isogclr", 64), ("softmax", 64), ("softmax", 512))]
    duration = (f"train.duration={steps} steps",) if steps else ()
    return [RunSpec(label, f"tiny-digits-gap-paper{suffix}.yaml", name, duration)
            for label, suffix, name in (("CLIP", "", "softmax"), ("CUA", "-cua", "clip_cua"),
                                        ("CUAXU", "-cuaxu", "clip_cuaxu"))]


def run_key(spec: RunSpec, seed: int) -> str:
    """Stable file name of one run: the row, the seed and the overrides that decide its result."""
    tag = "_".join(o.split("=", 1)[1] for o in spec.overrides if o.startswith(("train.", "objective.params")))
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in spec.row + (f"_{tag}" if tag else ""))
    return f"{safe}_s{seed}"


def check_runs(runs: list[RunSpec], data_overrides: list[str]) -> None:
    """Every planned recipe must load before the first run starts: one line per problem, then exit status 2."""
    from vlp.objectives.registry import names
    from vlp.recipe import load_recipe

    problems = [f"{r.row}: objective {r.objective!r} is not registered (have: {', '.join(names())})"
                for r in runs if r.objective not in names()]
    for r in runs:
        if r.objective in names():
            try:
                load_recipe(RECIPES / r.recipe, [*data_overrides, *r.overrides], for_training=True)
            except ValueError as err:  # ConfigError names the key
                problems.append(f"{r.row}: {err}")
    if problems:
        sys.exit("error: " + "\n       ".join(problems) + "\n(choose others with --objectives)")


def train_one(spec: RunSpec, seed: int, data_overrides: list[str], work: Path) -> tuple[dict, Path]:
    """(the result record, the final checkpoint) of one fresh run."""
    from vlp.train import train

    run_dir = work / "runs" / run_key(spec, seed)
    shutil.rmtree(run_dir, ignore_errors=True)  # a run killed half-way starts over
    step_times: list[float] = []
    start = time.perf_counter()
    result = train(RECIPES / spec.recipe, overrides=[
        *data_overrides, *spec.overrides, f"train.seed={seed}", f"train.output_dir={run_dir.parent}",
        f"train.run_name={run_dir.name}", "logging.trackers=[]", "logging.progress=false"],
        callbacks=[lambda step, metrics: step_times.append(time.perf_counter())])
    seconds = time.perf_counter() - start
    tau = tau_spread(result.checkpoint, spec, data_overrides) if spec.objective == "isogclr" else {}
    # by the set's name without the source: zeroshot, retrieval (digits); left_digit, retrieval, binding (scenes)
    finals = {r["dataset"].split("_", 1)[1]: r["metrics"] for r in result.eval_results if r.get("final", True)}
    loop = step_times[-1] - step_times[0] if len(step_times) > 1 else math.nan
    return {"row": spec.row, "seed": seed, "recipe": spec.recipe, "overrides": list(spec.overrides),
            "steps": result.step, "samples": result.samples_seen, "seconds": round(seconds, 1),
            "seconds_per_step": loop / (len(step_times) - 1) if len(step_times) > 1 else math.nan,
            "overhead_seconds": round(seconds - loop, 1), "train": result.metrics, **finals, "tau": tau,
            "date": time.strftime("%Y-%m-%d %H:%M")}, result.checkpoint


def tau_spread(checkpoint: Path, spec: RunSpec, data_overrides: list[str]) -> dict:
    """Min, median, max of the learned per-sample τ (image and text anchors of every sample) in the checkpoint's
    isogclr state, and the fraction of them at τ_min or τ_max (a float32 clamp stored in float64: relative 1e-6)."""
    import torch
    from safetensors.torch import load_file

    from vlp.objectives import build_from_config
    from vlp.recipe import load_recipe
    from vlp.run_dir import Checkpoint

    state = load_file(str(Checkpoint(checkpoint).component("objective")))
    taus = torch.cat([state["image_tau"], state["text_tau"]])
    low, high = build_from_config(load_recipe(RECIPES / spec.recipe, [*data_overrides, *spec.overrides]).objective
                                  ).tau_range
    at_clamp = ((taus - low).abs() <= 1e-6 * low) | ((taus - high).abs() <= 1e-6 * high)
    return {"min": taus.min().item(), "median": taus.median().item(), "max": taus.max().item(),
            "at_clamp": at_clamp.double().mean().item()}


def estimate_seconds(todo: list[tuple[RunSpec, int]], done: list[dict], samples_of) -> float:
    """Left-over runs: their samples × the measured time per sample of the same row (else the median over the rows
    measured) + the median start-up and evaluation time. Only as good as the load the measured runs saw."""
    if not done:
        return math.nan
    per_sample = {d["row"]: d["seconds_per_step"] * d["steps"] / d["samples"] for d in done}
    fallback = statistics.median(per_sample.values())
    overhead = statistics.median(d["overhead_seconds"] for d in done)
    return sum(samples_of(spec) * per_sample.get(spec.row, fallback) + overhead for spec, _ in todo)


def mean_std(values: list[float], fmt: str) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return fmt.format(values[0])
    std = statistics.stdev(values)
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(std).rstrip('%')}"


def table(runs: list[RunSpec], results: dict[str, list[dict]], columns: tuple[Column, ...]) -> str:
    headers = ["run", "seeds", *(c.header for c in columns), "s/step"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for spec in runs:
        done = results.get(spec.row, [])
        cells = [spec.row, str(len(done))]
        cells += [mean_std([d.get(c.dataset, {}).get(c.key, math.nan) for d in done], c.fmt) for c in columns]
        cells.append(mean_std([d["seconds_per_step"] for d in done], "{:.3f}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bundled_data(data_dir: str, source: str) -> tuple[list[str], int]:
    """The demo's shards and held-out sets (built once, as `vlp demo` does) as recipe overrides, and the train size;
    evaluation at the end of each run only."""
    from vlp.demo import _bundled_data

    paths = _bundled_data(Path(data_dir) / source, source, 32, 0)
    return [f"data.train={paths['train']}", f"eval.datasets={json.dumps(paths['eval'])}", "eval.every=null"], \
        paths["num_train"]


def pretrained_once(work: Path, data_overrides: list[str], steps: int, row: str) -> tuple[dict, Path]:
    """(record, final checkpoint) of `tiny-digits.yaml` (softmax, seed 0) trained once under `work / "base"`: the
    gap-paper suite's base model, the distill suite's teacher."""
    record_path = work / "results" / "base_s0.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if not (record.get("checkpoint") and Path(record["checkpoint"]).is_dir()):
        spec = RunSpec(row, "tiny-digits.yaml", "softmax", (f"train.duration={steps} steps",))
        print(f"training {row} (tiny-digits.yaml, seed 0) ...", flush=True)
        record, checkpoint = train_one(spec, 0, data_overrides, work / "base")
        record["checkpoint"] = str(checkpoint)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1, default=str))
    return record, Path(record["checkpoint"])


def base_weights(work: Path, data_overrides: list[str], steps: int) -> Path:
    """The pretrained model the gap-paper runs fine-tune (trained once); its weights file lacks the logit scale so
    that the fine-tuning recipe's own temperature applies (vlp.models.load_weights)."""
    from safetensors.torch import load_file, save_file

    from vlp.run_dir import Checkpoint

    weights = work / "base" / "weights-without-logit-scale.safetensors"
    if not weights.is_file():
        record, checkpoint = pretrained_once(work, data_overrides, steps, "base (pretrained, before fine-tuning)")
        state = load_file(str(Checkpoint(checkpoint).model))
        record["base_logit_scale"] = math.exp(state.pop("logit_scale").item())
        (work / "results" / "base_s0.json").write_text(json.dumps(record, indent=1, default=str))
        save_file(state, str(weights))
    return weights


def fine_tune_init(base: Path, seed: int) -> list[str]:
    """The base weights with freshly initialised projections (vlp's own init under this seed), as the paper's code
    re-initialises CLIP's projection layers before fine-tuning; an init_checkpoint override."""
    import torch
    from safetensors.torch import load_file, save_file

    from vlp.models import build_model
    from vlp.recipe import load_recipe

    weights = base.with_name(f"init-fresh-projections-s{seed}.safetensors")
    if not weights.is_file():
        torch.manual_seed(seed)
        fresh = build_model(load_recipe(RECIPES / "tiny-digits-gap-paper.yaml").model)[0].state_dict()
        save_file({**load_file(str(base)), **{k: fresh[k] for k in PROJECTIONS}}, str(weights))
    return [f"model.init_checkpoint={weights}"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", choices=["objectives", "small-batch", "gap-paper", "isogclr-sweep", "distill"],
                   default="objectives")
    p.add_argument("--objectives", default=None, help="comma-separated (objectives suite; default: softmax and "
                   "every false-negative, temperature and several-caption objective, without supcon on the scenes)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=None, help=f"steps per run (default: digits {DEMO_STEPS} as the "
                   "demo, scenes the recipe's 8 epochs, gap-paper the recipe's 1 epoch of fine-tuning)")
    p.add_argument("--epochs", type=int, default=15, help="epochs per run (small-batch suite)")
    p.add_argument("--work", default=str(ROOT / "bench" / "work" / "objectives"), help="runs and cached results")
    p.add_argument("--data-dir", default="data", help="where the bundled shards are (built when missing)")
    p.add_argument("--source", choices=list(SOURCE_RECIPE), default="mnist",
                   help="bundled data, as `vlp demo`: MNIST-5k (default), scikit-learn's 8x8 digits, or the "
                   "compositional scenes (tiny-scenes.yaml; objectives and small-batch suites)")
    p.add_argument("--base-steps", type=int, default=DEMO_STEPS,
                   help="gap-paper: pretraining steps of the base model, distill: of the teacher (tiny-digits.yaml; "
                   "used when first built)")
    p.add_argument("--from-scratch", action="store_true",
                   help="gap-paper: train the recipes from random weights instead of fine-tuning a pretrained base")
    p.add_argument("--rhos", default="0.1,0.5,1.0,2.0", help="isogclr-sweep: the values of objective.params.rho")
    p.add_argument("--taus", default="0.03,0.07", help="isogclr-sweep: the values of objective.params.tau_init")
    p.add_argument("--plan", action="store_true",
                   help="print the runs left, their estimated time and the table so far; train nothing")
    args = p.parse_args(argv)
    args.objectives = args.objectives or ",".join(o for o in OBJECTIVE_OVERRIDES
                                                  if not (args.source == "scenes" and o == "supcon"))
    unknown = sorted(set(args.objectives.split(",")) - set(OBJECTIVE_OVERRIDES))
    if unknown:
        p.error(f"--objectives: unknown {', '.join(unknown)} (choose from {', '.join(OBJECTIVE_OVERRIDES)})")
    if args.source == "scenes" and args.suite in ("gap-paper", "distill"):
        p.error(f"--suite {args.suite} runs on the digits (mnist or digits), not the scenes")
    if args.source == "scenes" and "supcon" in args.objectives.split(","):
        p.error("--objectives: supcon needs a label per sample and a scene has none (choose others with --objectives)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    steps = args.steps or (DEMO_STEPS if args.suite == "objectives" and args.source != "scenes" else None)
    work = Path(args.work) / args.suite / args.source
    data_overrides, num_train = bundled_data(args.data_dir, args.source)
    fine_tune = args.suite == "gap-paper" and not args.from_scratch
    if args.from_scratch:
        work = work / "from-scratch"
    base = base_weights(work, data_overrides, args.base_steps) if fine_tune else None
    teacher = pretrained_once(work, data_overrides, args.base_steps, "teacher (the demo's model)")[1] \
        if args.suite == "distill" else None
    runs = suite_runs(args.suite, args.objectives.split(","), steps, args.epochs, args.source,
                      tuple(float(v) for v in args.rhos.split(",")), tuple(float(v) for v in args.taus.split(",")),
                      teacher)

    def run_overrides(seed: int) -> list[str]:
        return [*data_overrides, *(fine_tune_init(base, seed) if base else ())]

    cached = {(spec.row, s): work / "results" / f"{run_key(spec, s)}.json" for spec in runs for s in seeds}
    todo = [(spec, s) for s in seeds for spec in runs if not cached[spec.row, s].is_file()]  # seed by seed
    if todo:
        check_runs(list({spec.row: spec for spec, _ in todo}.values()), run_overrides(todo[0][1]))

    def samples_of(spec: RunSpec) -> int:
        from vlp.recipe import load_recipe
        from vlp.train.setup import resolve_steps

        recipe = load_recipe(RECIPES / spec.recipe, [*data_overrides, *spec.overrides])
        return resolve_steps(recipe, num_train, "").total * recipe.train.batch_size

    def finished() -> list[dict]:
        return [json.loads(p.read_text()) for p in cached.values() if p.is_file()]

    print(f"{len(todo)} of {len(cached)} runs to train; estimated "
          f"{estimate_seconds(todo, finished(), samples_of) / 60:.1f} min from the step times measured so far")
    for spec, seed in [] if args.plan else todo:
        print(f"training {spec.row}, seed {seed} ...", flush=True)
        record, _ = train_one(spec, seed, run_overrides(seed), work)
        cached[spec.row, seed].parent.mkdir(parents=True, exist_ok=True)
        cached[spec.row, seed].write_text(json.dumps(record, indent=1, default=str))
    results: dict[str, list[dict]] = {}
    for record in finished():
        results.setdefault(record["row"], []).append(record)
    command = "python bench/objectives_table.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"\n`{command.strip()}` (mean ± std over seeds {args.seeds})\n")
    pretrained = [json.loads((work / "results" / "base_s0.json").read_text())] if base or teacher else []
    for record in pretrained:
        results[record["row"]] = [record]
    rows = [RunSpec(record["row"], record["recipe"], "softmax") for record in pretrained] + runs
    columns = PAPER_COLUMNS if args.suite == "gap-paper" else TAU_COLUMNS if args.suite == "isogclr-sweep" \
        else SCENES_COLUMNS if args.source == "scenes" else DIGITS_COLUMNS
    print(table(rows, results, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
