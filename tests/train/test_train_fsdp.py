"""`train.strategy: fsdp` (FSDP2) trains exactly as ddp does, with each rank holding half the state at 2 processes.

One launch of two gloo processes runs every recipe pair below (this file is its worker script): the same
recipe, seed and batches under ddp and under fsdp. The worker also reports, per rank, whether the parameters are
DTensors and how many parameter + optimizer-state elements the rank holds, so a run that silently fell back to ddp
fails.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.processes import forked_run
from helpers.runs import make_run_dir
from helpers.train_support import TINY_MODEL, make_shards, recipe_dict, write_recipe

torch.set_num_threads(1)

VARIANTS = {  # name → (duration, changes to the recipe); each runs under ddp and under fsdp
    "plain": ("20 steps", {"optim": {"grad_clip": 0.5}, "train": {"ema_decay": 0.9}}),
    "tiled": ("3 steps", {"objective": {"name": "softmax", "tiled": True, "tile_size": 2},
                          "model": {"lock_image": True, "lock_image_unlocked_layers": 2}}),
    # local_loss: each rank's loss and so its logit-scale gradient differ; fsdp must average the replicated scalar
    "gradcache": ("3 steps", {"train": {"micro_batch_size": 2},
                              "objective": {"name": "softmax", "gather": "local_loss"}}),
    # the teacher (a trained run of the same tiny model) is sharded like the student and embeds the global batch
    "distill": ("3 steps", {"objective": {"name": "softmax", "distill": {"weight": 0.5}}}),
}
FINAL = "checkpoints/step_{:08d}/{}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Train every variant under ddp and fsdp in one 2-process launch; returns the runs directory."""
    root = tmp_path_factory.mktemp("fsdp")
    shards = make_shards(root / "shards", shards=4, per_shard=16)
    teacher, _ = make_run_dir(root / "teacher", config=TINY_MODEL)
    for name, (duration, changes) in VARIANTS.items():
        base = recipe_dict(shards, root / "runs", duration=duration, log_every=1)
        # Attention key biases have an exactly-zero true gradient whose float noise differs with the reduction
        # order (all-reduce vs reduce-scatter); a larger Adam eps keeps the comparison about real gradients.
        base["optim"]["eps"] = 1e-4
        # and a gentler lr keeps 20 steps from amplifying that noise past the tolerances (at 2e-3 the grad norm
        # spikes to 60 and the two reduction orders drift apart by 2e-4 relative by step 11)
        base["optim"]["lr"] = 1e-3
        for section, values in changes.items():
            base[section] = {**base[section], **values}
        if name == "distill":  # the teacher's run directory exists only now
            base["objective"]["distill"] = {**base["objective"]["distill"], "teacher": str(teacher)}
        for strategy in ("ddp", "fsdp"):
            write_recipe(root / f"{name}_{strategy}.yaml",
                         {**base, "train": {**base["train"], "strategy": strategy}})
    proc = forked_run([__file__, str(root)], processes=2, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


def _losses(run: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_training(root: Path, name: str, steps: int, files=("model.safetensors",)) -> None:
    ddp, fsdp = root / "runs" / f"{name}_ddp", root / "runs" / f"{name}_fsdp"
    assert len(_losses(fsdp)) == steps
    torch.testing.assert_close(_losses(fsdp), _losses(ddp), rtol=0, atol=1e-5)
    # the norm over all ranks' shards (the replicated logit scale counted once): what clipping and the skip use
    torch.testing.assert_close(_losses(fsdp, "grad_norm"), _losses(ddp, "grad_norm"), rtol=1e-4, atol=1e-5)
    for file in files:
        expected = load_file(str(ddp / FINAL.format(steps, file)))
        got = load_file(str(fsdp / FINAL.format(steps, file)))  # consolidated by rank 0: the full tensors
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=f"{file}: {key}")
    report = json.loads((root / f"{name}_fsdp.rank1.json").read_text())
    assert report["sharded"]  # every non-scalar parameter a DTensor: fsdp did not silently run ddp
    assert json.loads((root / f"{name}_ddp.rank1.json").read_text())["sharded"] is False


@pytest.mark.distributed
def test_fsdp_trains_like_ddp_for_20_steps_with_half_the_state_per_rank(runs):
    _assert_same_training(runs, "plain", 20, files=("model.safetensors", "ema.safetensors"))
    initial_loss, final_loss = _losses(runs / "runs/plain_fsdp")[0], _losses(runs / "runs/plain_fsdp")[-1]
    assert final_loss < initial_loss - 0.1  # it learnt, so equal losses are not two runs standing still
    for rank in (0, 1):
        fsdp = json.loads((runs / f"plain_fsdp.rank{rank}.json").read_text())
        ddp = json.loads((runs / f"plain_ddp.rank{rank}.json").read_text())
        assert ddp["local"] == ddp["full"]
        assert fsdp["full"] == ddp["full"]
        assert 0.49 < fsdp["local"] / fsdp["full"] < 0.51  # parameters + Adam moments: 1/W of each per rank


@pytest.mark.distributed
def test_fsdp_tiled_objective_with_locked_image_tower_matches_ddp(runs):
    _assert_same_training(runs, "tiled", 3)


@pytest.mark.distributed
def test_fsdp_gradcache_micro_batches_match_ddp(runs):
    _assert_same_training(runs, "gradcache", 3)


@pytest.mark.distributed
def test_fsdp_distills_like_ddp_with_the_teacher_sharded(runs):
    _assert_same_training(runs, "distill", 3)
    assert _losses(runs / "runs/distill_fsdp", "objective/distill_loss")[0] > 0
    assert json.loads((runs / "distill_fsdp.rank1.json").read_text())["teacher_sharded"]
    assert json.loads((runs / "distill_ddp.rank1.json").read_text())["teacher_sharded"] is False


@pytest.mark.parametrize("section, values, message", [
    ("train", {"precision": "fp16"}, "train.precision: fp16 is not supported with train.strategy fsdp"),
    ("train", {"compile": True}, "train.compile: train.compile with train.strategy fsdp is not supported"),
    ("eval", {"datasets": [{"name": "d", "task": "zeroshot", "path": "."}]}, "eval.datasets: in-training evaluation"),
])
def test_fsdp_refuses_what_it_cannot_run_with_a_one_line_error(tmp_path, section, values, message):
    from vlp.recipe import RecipeError
    from vlp.train import train

    shards = make_shards(tmp_path / "shards", shards=1, per_shard=8)  # paths are checked before the strategy
    recipe = recipe_dict(shards, tmp_path / "runs", strategy="fsdp")
    recipe[section] = {**recipe.get(section, {}), **values}
    with pytest.raises(RecipeError, match=message):
        train(write_recipe(tmp_path / "r.yaml", recipe))


def test_fsdp_on_one_process_is_a_world_of_one(tmp_path):
    from vlp.train import train

    shards = make_shards(tmp_path / "shards", shards=2, per_shard=16)
    weights = {}
    for strategy in ("ddp", "fsdp"):
        recipe = recipe_dict(shards, tmp_path / "runs", duration="3 steps", strategy=strategy)
        train(write_recipe(tmp_path / f"{strategy}.yaml", recipe))
        weights[strategy] = load_file(str(tmp_path / "runs" / strategy / FINAL.format(3, "model.safetensors")))
        assert not torch.distributed.is_initialized()  # the one-process group vlp made is gone
    assert weights["fsdp"].keys() == weights["ddp"].keys()
    for key, expected in weights["ddp"].items():
        torch.testing.assert_close(weights["fsdp"][key], expected, rtol=0, atol=1e-5, msg=key)


def test_fsdp_skips_a_nonfinite_step_on_the_device(tmp_path, monkeypatch):
    """Step 2's loss is NaN: under fsdp (fused AdamW's found_inf on DTensor parameters) its weights stay those of
    step 1, and step 3 trains again."""
    import vlp.train.gradcache as gradcache
    import vlp.train.loop as loop
    from vlp.train import train

    real_terms, real_update, calls, runs, snapshots = gradcache.objective_terms, loop._update, [], [], {}

    def nan_on_step_2(objective, features):
        terms = real_terms(objective, features)
        calls.append(1)
        if len(calls) == 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    def spy_update(run, *args):
        runs.append(run)
        return real_update(run, *args)

    def snapshot(step, values):
        snapshots[step] = {k: v.full_tensor().clone() for k, v in runs[-1].raw_model.state_dict().items()
                           if v.ndim > 0}

    monkeypatch.setattr(gradcache, "objective_terms", nan_on_step_2)
    monkeypatch.setattr(loop, "_update", spy_update)
    shards = make_shards(tmp_path / "shards", shards=2, per_shard=16)
    recipe = recipe_dict(shards, tmp_path / "runs", duration="3 steps", strategy="fsdp")
    with pytest.warns(UserWarning, match="non-finite"):
        result = train(write_recipe(tmp_path / "r.yaml", recipe), callbacks=[snapshot])
    assert result.nonfinite_steps == 1
    assert all(torch.equal(snapshots[2][k], snapshots[1][k]) for k in snapshots[1])
    assert not torch.equal(snapshots[3]["visual.proj"], snapshots[2]["visual.proj"])


def test_fsdp_bf16_computes_blocks_in_bfloat16_and_returns_float32_features():
    from helpers.train_support import bf16_sharded_forward

    # forward, then encode_image: a registered forward method all-gathers like forward
    seen, out, features = bf16_sharded_forward("cpu", encode_image=True)
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert out["image_features"].dtype == out["text_features"].dtype == torch.float32
    assert features.shape == (2, 32)


def test_transformer_blocks_of_each_tower_are_found():
    from helpers.train_support import tiny_clip
    from vlp.train.fsdp_wrap import transformer_blocks

    model = tiny_clip()
    blocks = transformer_blocks(model)
    assert blocks == [*model.visual.transformer.resblocks, *model.transformer.resblocks]


def _shard_report(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Whether the parameters are sharded, and the elements of parameters + optimizer state: on this rank, in all."""
    from torch.distributed.tensor import DTensor

    params = [p for p in model.parameters() if p.ndim > 0]
    tensors = params + [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0]
    return {"sharded": _all_sharded(model),
            "local": sum((t.to_local() if isinstance(t, DTensor) else t).numel() for t in tensors),
            "full": sum(t.numel() for t in tensors)}


def _all_sharded(model: torch.nn.Module) -> bool:
    """Whether every non-scalar parameter is a DTensor (the scalars stay replicated)."""
    from torch.distributed.tensor import DTensor

    return all(isinstance(p, DTensor) for p in model.parameters() if p.ndim > 0)


def _worker(root: Path) -> None:
    """In each of the two processes: train each recipe in `root`, then write this rank's shard report beside it."""
    from accelerate.state import PartialState

    import vlp.train.loop as loop
    from vlp.train import train

    captured = {}
    build_optimizer = loop.build_optimizer

    def capture(model, cfg):  # the model as sharded (or not) and its optimizer, for the report
        captured["model"], captured["optimizer"] = model, build_optimizer(model, cfg)
        return captured["optimizer"]

    loop.build_optimizer = capture
    real_teacher = loop._teacher
    loop._teacher = lambda *args: captured.setdefault("teacher", real_teacher(*args))
    # One process group for all the runs: end_training would destroy it, and re-creating it can hang.
    PartialState.destroy_process_group = lambda self, group=None: None
    for recipe in sorted(root.glob("*.yaml")):
        captured.pop("teacher", None)
        train(recipe)
        report = _shard_report(captured["model"], captured["optimizer"])
        if "teacher" in captured:
            report["teacher_sharded"] = _all_sharded(captured["teacher"].model)
        rank = int(os.environ["RANK"])
        (root / f"{recipe.stem}.rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
