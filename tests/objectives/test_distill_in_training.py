"""`vlp train` with `objective.distill`: a teacher from a run directory trains the student, stops and resumes
exactly, stays frozen and out of the optimizer and checkpoints; a teacher preprocessing otherwise is refused."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from helpers.runs import TINY, make_run_dir
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.recipe import RecipeError
from vlp.train import train

torch.set_num_threads(1)

# another student than the teacher (narrower, shallower), with the teacher's image size and tokenizer
STUDENT = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "width": 16, "layers": 1},
           "text_cfg": {**TINY["text_cfg"], "width": 16, "layers": 1}}


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    teacher, _ = make_run_dir(root / "teacher")
    return root, make_shards(root / "shards", shards=1, per_shard=16), teacher


def recipe(setup, name, student=STUDENT, **train_keys):
    root, shards, teacher = setup
    r = recipe_dict(shards, root / "runs", batch_size=4, run_name=name,
                    **{"duration": "3 steps", "checkpoint_every": "2 steps", **train_keys})
    r["model"]["config"] = copy.deepcopy(student)
    r["objective"] = {"name": "softmax", "distill": {"teacher": str(teacher), "weight": 0.5}}
    return write_recipe(root / f"{name}.yaml", r)


def last_checkpoint(run_dir):
    return sorted((run_dir / "checkpoints").glob("step_*"))[-1]


def final_weights(run_dir):
    return load_file(str(last_checkpoint(run_dir) / "model.safetensors"))


def test_a_teacher_run_dir_distills_and_resumes_exactly_staying_out_of_the_training_state(setup, monkeypatch):
    import vlp.objectives.teacher as teacher_module

    loaded, real_load = [], teacher_module.load_teacher
    monkeypatch.setattr(teacher_module, "load_teacher", lambda *a: loaded.append(real_load(*a)) or loaded[-1])
    before = final_weights(setup[2])
    whole = train(recipe(setup, "whole"))
    assert whole.step == 3 and whole.nonfinite_steps == 0 and whole.metrics["objective/distill_loss"] > 0
    path = recipe(setup, "stopped")

    def stop_after_two(step, metrics):
        if step == 2:
            raise Stop
    with pytest.raises(Stop):
        train(path, callbacks=[stop_after_two])
    resumed = train(path, resume="latest")
    final = last_checkpoint(resumed.run_dir)
    weights = final_weights(resumed.run_dir)
    assert state_dicts_equal(weights, final_weights(whole.run_dir))
    # the teacher is frozen, in eval mode and untouched; the checkpoint and the optimizer hold the student alone
    assert len(loaded) == 3
    for teacher in loaded:
        assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
        assert state_dicts_equal({k: v.detach() for k, v in teacher.model.state_dict().items()}, before)
    assert state_dicts_equal(final_weights(setup[2]), before)
    # every entry of the student is a parameter (the attention mask is no buffer of its state dict), each with
    # optimizer state; the teacher, deeper, has more
    assert sorted(f.name for f in final.iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                      "rng_0.safetensors", "state.json"]
    optimizer = load_file(str(final / "optimizer.safetensors"))
    assert {int(k.split(".")[0]) for k in optimizer} == set(range(len(weights))) and len(weights) < len(before)


@pytest.mark.parametrize("student, problem", [
    ({**STUDENT, "vision_cfg": {**STUDENT["vision_cfg"], "image_size": 16}},
     r"image size is \(32, 32\), the student's \(16, 16\)"),
    ({**STUDENT, "text_cfg": {**STUDENT["text_cfg"], "context_length": 16}}, "tokenizer gives other token ids"),
], ids=["image_size", "tokenizer"])
def test_a_teacher_preprocessing_otherwise_is_refused_in_one_line(setup, student, problem):
    with pytest.raises(RecipeError, match=problem) as e:
        train(recipe(setup, f"mismatch_{student['vision_cfg']['image_size']}_{student['text_cfg']['context_length']}",
                     student))
    assert "\n" not in str(e.value) and "objective.distill.teacher" in str(e.value)


def test_a_missing_teacher_is_refused_when_the_recipe_loads(setup):
    path = recipe(setup, "missing")
    path.write_text(path.read_text().replace(str(setup[2]), str(setup[0] / "no_such_run")))
    with pytest.raises(RecipeError, match="objective.distill.teacher: no run dir, checkpoint dir or exported folder"):
        train(path)
    assert not (setup[0] / "runs" / "missing").exists()


def test_gradcache_micro_batches_distill_as_the_whole_batch_does(setup):
    """The teacher embeds the step's whole local batch; the student's micro-batches get the same loss terms and
    gradient norms (weights are not compared: AdamW's first steps magnify float noise in near-zero gradients)."""
    plain = train(recipe(setup, "plain", duration="2 steps"))
    cached = train(recipe(setup, "cached", duration="2 steps", micro_batch_size=2))
    for key in ("loss", "objective/distill_loss", "objective/contrastive_loss", "grad_norm"):
        assert cached.metrics[key] == pytest.approx(plain.metrics[key], rel=1e-4), key
