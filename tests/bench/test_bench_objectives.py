"""bench/objectives_table.py (objectives compared on the bundled digits) and the contrastive-gap paper recipes:
the recipes carry the paper's settings, a 2-step run of the script trains, evaluates, caches its result and a re-run
trains nothing; a run it cannot do is refused before any training, naming the objective or the key."""
import json
import math
import sys
from pathlib import Path

import pytest

from vlp.objectives import build_from_config
from vlp.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import objectives_table  # noqa: E402


@pytest.mark.parametrize("recipe, objective", [("tiny-digits-gap-paper.yaml", "softmax"),
                                               ("tiny-digits-gap-paper-cua.yaml", "clip_cua"),
                                               ("tiny-digits-gap-paper-cuaxu.yaml", "clip_cuaxu")])
def test_gap_paper_recipes_carry_the_papers_settings(recipe, objective):
    r = load_recipe(ROOT / "recipes" / recipe, for_training=True, files=False)  # settings, not this machine's data
    assert r.objective.name == objective and not r.objective.regularizers and not r.objective.params  # weights 1
    built = build_from_config(r.objective)
    assert math.isclose(math.exp(r.model.logit_scale_init), 100.0) and r.model.max_logit_scale == 100.0  # τ = 0.01
    assert r.train.batch_size == 64 and r.schedule.name == "constant" and r.optim.weight_decay == 0.1
    # the pretrained model to fine-tune comes with --set model.init_checkpoint=...; fine-tuning lr below pretraining's
    assert r.model.init_checkpoint is None and r.optim.lr < load_recipe(ROOT / "recipes" / "tiny-digits.yaml").optim.lr
    assert built.init_logit_scale != r.model.logit_scale_init  # the recipe, not the objective's default, sets τ


def test_two_step_run_trains_evaluates_caches_and_a_rerun_trains_nothing(tmp_path, capsys, monkeypatch):
    args = ["--objectives", "softmax", "--seeds", "0", "--steps", "2", "--source", "digits",
            "--work", str(tmp_path / "work"), "--data-dir", str(tmp_path / "data")]
    assert objectives_table.main(args) == 0
    printed = capsys.readouterr().out
    assert "1 of 1 runs to train" in printed and "| softmax | 1 | " in printed
    [cached] = (tmp_path / "work" / "objectives" / "digits" / "results").glob("*.json")
    record = json.loads(cached.read_text())
    assert record["steps"] == 2 and record["seconds_per_step"] > 0
    assert 0 <= record["zeroshot"]["acc1"] <= 1 and record["retrieval"]["geometry_modality_gap"] > 0

    def must_not_train(*_):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr(objectives_table, "train_one", must_not_train)
    assert objectives_table.main([*args, "--plan"]) == 0
    assert "0 of 1 runs to train" in capsys.readouterr().out
    assert objectives_table.main(args) == 0
    assert f"| softmax | 1 | {record['zeroshot']['acc1']:.1%} |" in capsys.readouterr().out


def test_unregistered_objective_or_bad_key_is_refused_before_training(tmp_path):
    runs = [objectives_table.RunSpec("x", "tiny-digits.yaml", "no_such_objective"),
            objectives_table.RunSpec("y", "tiny-digits.yaml", "softmax", ("data.no_such_key=1",))]
    with pytest.raises(SystemExit) as refused:
        objectives_table.check_runs(runs, [])
    assert "'no_such_objective' is not registered" in str(refused.value) and "data.no_such_key" in str(refused.value)


def test_table_reports_mean_and_sample_std_over_seeds():
    assert objectives_table.mean_std([0.5, 0.7], "{:.1%}") == "60.0% ± 14.1"
    assert objectives_table.mean_std([1.0, 2.0, math.nan], "{:.2f}") == "1.50 ± 0.71"
    assert objectives_table.mean_std([], "{:.2f}") == "—"


def test_time_estimate_scales_the_measured_time_per_sample():
    done = [{"row": "a", "seconds_per_step": 0.5, "steps": 10, "samples": 1280, "overhead_seconds": 4.0}]
    todo = [(objectives_table.RunSpec("a", "r.yaml", "softmax"), 0), (objectives_table.RunSpec("b", "r.yaml", "x"), 1)]
    # 2560 samples at 0.5 s per 128 samples, plus 4 s each; row b falls back to row a's rate
    assert objectives_table.estimate_seconds(todo, done, lambda spec: 2560) == pytest.approx(2 * (10.0 + 4.0))
    assert math.isnan(objectives_table.estimate_seconds(todo, [], lambda spec: 2560))


def test_fine_tuning_starts_from_the_base_with_fresh_seeded_projections_and_no_logit_scale(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from vlp.models import build_model

    torch.manual_seed(123)
    state = build_model(load_recipe(ROOT / "recipes" / "tiny-digits.yaml").model)[0].state_dict()
    base = tmp_path / "base.safetensors"
    save_file({k: v for k, v in state.items() if k != "logit_scale"}, str(base))
    inits = {seed: load_file(objectives_table.fine_tune_init(base, seed)[0].split("=", 1)[1]) for seed in (0, 1)}
    for seed, init in inits.items():
        assert "logit_scale" not in init and set(init) == set(state) - {"logit_scale"}
        for key, value in init.items():
            assert torch.equal(value, state[key]) == (key not in objectives_table.PROJECTIONS), (seed, key)
    assert not torch.equal(inits[0]["visual.proj"], inits[1]["visual.proj"])


def test_distill_suite_trains_the_teacher_once_and_the_student_with_and_without_it(tmp_path, capsys):
    args = ["--suite", "distill", "--seeds", "0", "--steps", "2", "--base-steps", "2", "--source", "digits",
            "--work", str(tmp_path / "work"), "--data-dir", str(tmp_path / "data")]
    assert objectives_table.main(args) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 runs to train" in printed
    for row in ("teacher (the demo's model)", "student", "student + distill (weight 1)"):
        assert f"| {row} | 1 | " in printed
    results = tmp_path / "work" / "distill" / "digits" / "results"
    by_row = {r["row"]: r for r in (json.loads(p.read_text()) for p in results.glob("*.json"))}
    distilled, plain = by_row["student + distill (weight 1)"], by_row["student"]
    assert distilled["train"]["objective/distill_loss"] > 0 and "objective/distill_loss" not in plain["train"]
    assert "vision_cfg.width=64" in " ".join(distilled["overrides"])
