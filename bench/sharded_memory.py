"""Per-rank memory of parameters + gradients + optimizer state after one AdamW step: DDP vs FSDP2, W gloo processes.

Both sides train the same open_clip CLIP (default: ViT-B-16 towers, fp32, random init: no weights are downloaded)
for one step on a small batch with vlp's softmax objective. DDP is torch's DistributedDataParallel (what accelerate
wraps a model in on CPU); FSDP is `vlp.train.fsdp_wrap.shard_model` (FSDP2 per transformer block + root), the
`train.strategy: fsdp` path. Each side runs under its own `torchrun --standalone`, so the RSS peaks are its own.

Measured per rank: the bytes of the tensors the rank holds (a DTensor's local shard only) in parameters, gradients
and optimizer state (P + G + O), and the process's RSS: before the model is built, just before the step (model wrapped
or sharded) and at its peak (ru_maxrss). RSS also holds the interpreter, activations, DDP's gradient buckets and,
under FSDP, the transiently all-gathered block and the whole model each rank builds before `shard_model` shards it
(memory the allocator may keep after it is freed). The formula checked for FSDP:

    per rank ≈ (P + G + O)_sharded / W + (P + G + O)_unsharded leftovers      (after the step)
    peak     ≈ that + the block being computed (its all-gathered parameters, and its full gradient before the
               reduce-scatter: at most 2 × the largest block's parameters)

The leftovers are the 0-d logit scale/bias that FSDP cannot shard (replicated, as DDP keeps everything).

    python bench/sharded_memory.py             # ViT-B-16, 2 processes: ~2 min on 2 CPU cores
    python bench/sharded_memory.py --smoke     # tiny model, seconds (tests/bench/test_bench_sharded_memory.py)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loss_memory import _rss_bytes  # one RSS reading for both memory benchmarks

MIB = 2 ** 20
TARGET = 0.6  # fsdp / ddp per-rank P + G + O at 2 ranks
SMOKE_MODEL = {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def _build(model_name: str):
    import open_clip

    if model_name == "smoke":
        return open_clip.CLIP(**SMOKE_MODEL, output_dict=True)
    return open_clip.create_model(model_name, pretrained=None, precision="fp32", output_dict=True)


def _local(tensor):
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _bytes(tensors, local: bool = True) -> int:
    """Bytes of `tensors`: this rank's shard of each DTensor (`local`) or the whole tensor."""
    return sum(t.numel() * t.element_size() for t in ((_local(x) if local else x) for x in tensors))


def _state_tensors(optimizer, param):
    import torch

    return [v for v in optimizer.state.get(param, {}).values() if torch.is_tensor(v)]


def worker(strategy: str, model_name: str, batch: int, out_dir: Path) -> None:
    """One rank (started by torchrun): one training step, then this rank's numbers as JSON in `out_dir`."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    import vlp.objectives
    from vlp.train.fsdp_wrap import shard_model, transformer_blocks

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    baseline = _rss_bytes()
    model = _build(model_name)
    largest_block = max(_bytes(b.parameters()) for b in transformer_blocks(model))
    if strategy == "fsdp":
        module = shard_model(model, "no", torch.device("cpu"))
    else:
        module = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    objective = vlp.objectives.build("softmax")
    size, context = model.visual.image_size, model.context_length
    g = torch.Generator().manual_seed(rank)
    images = torch.randn(batch, 3, *size, generator=g)
    texts = torch.randint(1, model.vocab_size, (batch, context), generator=g)
    before_step = _rss_bytes()
    out = module(images, texts)
    objective(out["image_features"], out["text_features"], out["logit_scale"])["loss"].backward()
    optimizer.step()
    params = list(model.parameters())
    sharded = [p for p in params if isinstance(p, DTensor)]
    leftovers = [p for p in params if not isinstance(p, DTensor)]

    def full_pgo(group) -> int:  # whole-model bytes: each parameter, its gradient and its optimizer state
        return sum(_bytes([p], False) + _bytes([p.grad], False) + _bytes(_state_tensors(optimizer, p), False)
                   for p in group if p.grad is not None)

    record = {"strategy": strategy, "rank": rank, "world": world, "model": model_name, "batch": batch,
              "params": _bytes(params), "grads": _bytes(p.grad for p in params if p.grad is not None),
              "optimizer": _bytes(t for p in params for t in _state_tensors(optimizer, p)),
              "full_sharded_pgo": full_pgo(sharded), "leftover_pgo": full_pgo(leftovers),
              "largest_block_params": largest_block,
              "rss_baseline": baseline, "rss_before_step": before_step, "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    record["pgo"] = record["params"] + record["grads"] + record["optimizer"]
    (out_dir / f"{strategy}-{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def launch(strategy: str, args, out_dir: Path) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.procs}",
               __file__, "--worker", strategy, "--model", args.model, "--batch", str(args.batch),
               "--out-dir", str(out_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    return [json.loads((out_dir / f"{strategy}-{r}.json").read_text()) for r in range(args.procs)]


def summarise(ddp: list[dict], fsdp: list[dict]) -> dict:
    """Worst rank of each side, the ratios, and the formula's prediction for FSDP."""
    world = fsdp[0]["world"]
    worst = {side: max(records, key=lambda r: r["pgo"]) for side, records in (("ddp", ddp), ("fsdp", fsdp))}
    predicted = fsdp[0]["full_sharded_pgo"] / world + fsdp[0]["leftover_pgo"]
    return {"world": world, "model": fsdp[0]["model"], "batch": fsdp[0]["batch"], "ranks": ddp + fsdp,
            "ddp_pgo": worst["ddp"]["pgo"], "fsdp_pgo": worst["fsdp"]["pgo"],
            "pgo_ratio": worst["fsdp"]["pgo"] / worst["ddp"]["pgo"],
            "rss_ratio": max(r["rss_peak"] for r in fsdp) / max(r["rss_peak"] for r in ddp),
            "fsdp_predicted": predicted, "formula_error": worst["fsdp"]["pgo"] / predicted - 1,
            "gathered_block_bound": 2 * fsdp[0]["largest_block_params"],
            "target": TARGET, "target_met": worst["fsdp"]["pgo"] <= TARGET * worst["ddp"]["pgo"]}


def table(summary: dict) -> list[str]:
    mib = lambda n: f"{n / MIB:.1f}"  # noqa: E731
    lines = [f"model {summary['model']} (fp32, AdamW), {summary['world']} gloo processes, batch {summary['batch']} "
             "per rank, one step; MiB per rank",
             "| strategy | rank | params | grads | optimizer | P+G+O | peak RSS | RSS before model | RSS before step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in summary["ranks"]:
        lines.append(f"| {r['strategy']} | {r['rank']} | {mib(r['params'])} | {mib(r['grads'])} | "
                     f"{mib(r['optimizer'])} | {mib(r['pgo'])} | {mib(r['rss_peak'])} | {mib(r['rss_baseline'])} | "
                     f"{mib(r['rss_before_step'])} |")
    lines += ["",
              f"P+G+O per rank, fsdp / ddp: {summary['pgo_ratio']:.3f} (target <= {summary['target']}: "
              f"{'met' if summary['target_met'] else 'NOT met'}); peak RSS fsdp / ddp: {summary['rss_ratio']:.3f}",
              f"formula at W={summary['world']}: (P+G+O)_sharded/W + leftovers = {mib(summary['fsdp_predicted'])} "
              f"MiB predicted, {mib(summary['fsdp_pgo'])} MiB measured ({summary['formula_error']:+.2%}); "
              f"+ gathered block at most {mib(summary['gathered_block_bound'])} MiB at the peak"]
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16", help='open_clip model name, or "smoke" (tiny)')
    parser.add_argument("--smoke", action="store_true", help="tiny model (same as --model smoke)")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="images and captions per rank")
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--worker", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.model = "smoke"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker, args.model, args.batch, Path(args.out_dir))
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = summarise(launch("ddp", args, Path(tmp)), launch("fsdp", args, Path(tmp)))
    print("\n".join(table(summary)))
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
