"""End-to-end: a tiny model trains on generated shards; logging, checkpoints, fallback, NaN handling, plots."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.recipe import load_recipe
from vlp.train import NonFiniteLossError, plot_run, train
from vlp.run_dir import RunDir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), shards=2, per_shard=48)


def recipe_file(tmp_path, shards, name="run", **train_overrides):
    return write_recipe(tmp_path / f"{name}.yaml", recipe_dict(shards, tmp_path / "runs", **train_overrides))


def test_tiny_model_learns_and_writes_the_run_directory(tmp_path, shards):
    path = recipe_file(tmp_path, shards, duration="20 steps", checkpoint_every="8 steps", keep_checkpoints=2,
                       micro_batch_size=4)
    result = train(path)
    run = tmp_path / "runs" / "run"
    assert result.run_dir == run and result.step == 20 and result.samples_seen == 160
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    assert last["loss"] < 0.6 * first["loss"], (first["loss"], last["loss"])  # log(8) ≈ 2.08 at chance
    for key in ("lr", "logit_scale", "samples_per_s", "samples_per_s_per_device", "data_time", "grad_norm",
                "objective/contrastive_loss", "logits/pos_mean", "logits/neg_mean", "nonfinite_steps"):
        assert key in last, key
    assert [r["step"] for r in records] == list(range(2, 21, 2))
    # keep-last-2 of the checkpoints at 8, 16 and the final one at 20
    assert [p.name for p in RunDir(run).list_checkpoints()] == ["step_00000020", "step_00000016"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000020"
    weights = load_file(str(run / "checkpoints" / "step_00000020" / "model.safetensors"))
    assert "logit_scale" in weights and "visual.conv1.weight" in weights
    assert json.loads((run / "bad_samples.json").read_text()) == {"per_epoch": {}, "all_epochs": {}}
    assert load_recipe(run / "recipe.yaml").train.micro_batch_size == 4
    assert {p.name for p in plot_run(run)} >= {"loss.png", "lr.png", "logit_scale.png"}


def test_lr_follows_the_schedule(tmp_path, shards):
    path = recipe_file(tmp_path, shards, duration="8 steps", log_every=1)
    train(path, overrides=["schedule.warmup=2", "schedule.name=cosine", "optim.lr=0.001"])
    records = [json.loads(line) for line in (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()]
    expected = [1e-3 * (s + 1) / 2 if s < 2 else 1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 6)) for s in range(8)]
    assert [r["lr"] for r in records] == pytest.approx(expected)


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, shards):
    path = recipe_file(tmp_path, shards, duration="6 steps", checkpoint_every="2 steps")
    train(path)
    ckpts = tmp_path / "runs" / "run" / "checkpoints"
    newest = ckpts / "step_00000006" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="step_00000006.*corrupted"):
        result = train(path, resume="latest", overrides=["train.duration=8 steps"])
    assert result.step == 8
    lines = (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 4, 6, 8]  # steps after step 4 redone, not duplicated


def test_existing_run_is_not_overwritten_without_resume(tmp_path, shards):
    from vlp.recipe import RecipeError

    path = recipe_file(tmp_path, shards, duration="2 steps")
    train(path)
    with pytest.raises(RecipeError, match="--resume latest"):
        train(path)


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path, shards, monkeypatch):
    """Losses of chosen steps are replaced by NaN: those steps must leave the weights unchanged and be counted."""
    import vlp.train.gradcache as gradcache

    poisoned = {2, 3, 6, 7, 8}
    calls = {"n": 0}
    real = gradcache.objective_terms

    def sometimes_nan(objective, features):
        terms = real(objective, features)
        calls["n"] += 1
        if calls["n"] in poisoned:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(gradcache, "objective_terms", sometimes_nan)
    snapshots = {}

    def remember(step, values):
        snapshots[step] = load_file_like_weights()

    model_ref = {}

    def load_file_like_weights():
        return {k: v.clone() for k, v in model_ref["model"].state_dict().items()}

    import vlp.train.loop as loop
    real_update = loop._update

    def spy_update(run, *args):
        model_ref["model"] = run.raw_model
        return real_update(run, *args)

    monkeypatch.setattr(loop, "_update", spy_update)
    path = recipe_file(tmp_path, shards, duration="12 steps", max_nonfinite_steps=3)
    with pytest.warns(UserWarning, match="non-finite"), pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        train(path, callbacks=[remember])
    assert sorted(snapshots) == [1, 2, 3, 4, 5, 6, 7]  # step 8 is the third bad one in a row: the run stops there
    for step in (2, 3, 7):  # skipped: weights equal to those after the previous step
        assert all(torch.equal(snapshots[step][k], snapshots[step - 1][k]) for k in snapshots[step])
    assert not torch.equal(snapshots[4]["visual.conv1.weight"], snapshots[3]["visual.conv1.weight"])


def cli_zeroshot(checkpoint, data, out) -> dict:
    """`vlp eval` on one saved checkpoint, in this process: an evaluation independent of the training loop's hook."""
    from vlp.cli import main

    assert main(["eval", "--model", str(checkpoint), "--task", "zeroshot", "--data", str(data), "--out", str(out),
                 "--batch-size", "8", "--no-progress", "--device", "cpu"]) == 0
    [record] = json.loads(out.read_text())
    return record["metrics"]


def test_periodic_and_final_evaluation(tmp_path, shards):
    import numpy as np
    from PIL import Image

    from helpers.eval_support import write_wds_set
    from helpers.train_support import COLORS

    names = list(COLORS)
    rng = np.random.default_rng(5)  # three noisy squares per colour: held out, unlike the training shards' draws
    samples = [{"png": Image.fromarray(np.clip(np.array(COLORS[c]) + rng.normal(0, 12, (16, 16, 3)), 0, 255)
                                       .astype(np.uint8)), "cls": i} for _ in range(3) for i, c in enumerate(names)]
    eval_dir = write_wds_set(tmp_path / "colors", samples, classnames=names, templates=["a {c} square"])
    recipe = recipe_dict(shards, tmp_path / "runs", duration="6 steps", checkpoint_every="3 steps")
    recipe["eval"] = {"datasets": [{"name": "colors", "task": "zeroshot", "path": str(eval_dir)}], "every": 3,
                      "batch_size": 8}
    result = train(write_recipe(tmp_path / "run.yaml", recipe))
    run = tmp_path / "runs" / "run"
    saved = json.loads((run / "eval_results.json").read_text())
    assert [(r["dataset"], r["step"], r["final"]) for r in saved] == [("colors", 3, False), ("colors", 6, True)]
    assert [r["step"] for r in result.eval_results] == [3, 6]
    for record in saved:  # each evaluation saw the weights of its own step, read the way `vlp eval` reads them
        independent = cli_zeroshot(run / "checkpoints" / f"step_{record['step']:08d}", eval_dir,
                                   tmp_path / f"eval_{record['step']}.json")
        assert record["metrics"].keys() == independent.keys()
        for name, value in independent.items():
            assert record["metrics"][name] == pytest.approx(value, abs=1e-6), (record["step"], name)
    assert saved[0]["metrics"] != saved[1]["metrics"]  # the weights moved between the two evaluations
    assert saved[-1]["metrics"]["acc1"] >= 3 / len(names)  # chance is 1/8; six steps reach 0.5
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval/colors/acc1"] for r in logged if "eval/colors/acc1" in r}
    assert evals == {r["step"]: r["metrics"]["acc1"] for r in saved}
