"""`vlp train` with each objective beyond softmax, sigmoid and hard negatives on the bundled digits: the recipe selects
it, the trainer hands it the per-sample inputs it declares (also through GradCache micro-batches), the loss stays
finite; `isogclr` stopped and resumed ends exactly where the uninterrupted run does, per-sample state included."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from helpers.train_support import recipe_dict, state_dicts_equal, write_recipe
from vlp.recipe import RecipeError
from vlp.train import train

torch.set_num_threads(1)

DATA = {"label_key": "cls"}
CASES = {
    "masked_softmax": ({"name": "masked_softmax"}, DATA, {}),
    "masked_softmax-gradcache": ({"name": "masked_softmax", "tiled": True, "tile_size": 8}, DATA,
                                 {"micro_batch_size": 8}),
    "supcon": ({"name": "supcon"}, DATA, {}),
    "debiased": ({"name": "debiased", "params": {"tau_plus": 0.1}}, {}, {}),
    "macl": ({"name": "macl"}, {}, {}),
    "isogclr": ({"name": "isogclr"}, {}, {"micro_batch_size": 8}),
    "multi_caption": ({"name": "multi_caption"}, {"captions": "all", "extra_caption_keys": ["extra.txt"]},
                      {"micro_batch_size": 8}),
}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from data_tools.bundled import build_digits

    root = tmp_path_factory.mktemp("digits")
    return root, build_digits(root / "data", source="digits", image_size=16, per_shard=400)


def recipe(digits, name, objective, data, train_keys, **extra):
    root, paths = digits
    r = recipe_dict(paths["train"], root / "runs" / name, batch_size=32, **{"duration": "6 steps", **train_keys,
                                                                              **extra})
    r["objective"] = objective
    r["data"].update(data)
    return write_recipe(root / f"{name}.yaml", r)


@pytest.mark.parametrize("name", list(CASES))
def test_trains_with_finite_loss(digits, name):
    result = train(recipe(digits, name, *CASES[name]))
    assert result.step == 6 and result.nonfinite_steps == 0
    assert torch.isfinite(torch.tensor(result.metrics["loss"]))


def test_missing_inputs_are_refused_at_load(digits):
    with pytest.raises(RecipeError, match="data.label_key"):
        train(recipe(digits, "nolabels", {"name": "supcon"}, {}, {}))
    with pytest.raises(RecipeError, match="data.captions"):
        train(recipe(digits, "nocaptions", {"name": "multi_caption"}, {}, {}))
    with pytest.raises(RecipeError, match="data.captions"):
        train(recipe(digits, "unused", {"name": "softmax"}, {"captions": "all"}, {}))


class Stop(Exception):
    pass


def stop_after(step):
    def callback(at, metrics):
        if at == step:
            raise Stop
    return callback


def final_files(run_dir):
    checkpoint = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return load_file(checkpoint / "model.safetensors"), load_file(checkpoint / "objective.safetensors")


def test_isogclr_stop_and_resume_is_exact(digits):
    keys = {"duration": "8 steps", "checkpoint_every": "4 steps"}
    whole = train(recipe(digits, "iso_whole", {"name": "isogclr"}, {}, keys))
    path = recipe(digits, "iso_stopped", {"name": "isogclr"}, {}, keys)
    with pytest.raises(Stop):
        train(path, callbacks=[stop_after(6)])  # the checkpoint of step 4 is the newest
    resumed = train(path, resume="latest")
    (weights, state), (want_weights, want_state) = final_files(resumed.run_dir), final_files(whole.run_dir)
    assert state_dicts_equal(weights, want_weights)
    for key in want_state:
        assert torch.equal(state[key], want_state[key]), key
    step4 = load_file(sorted((whole.run_dir / "checkpoints").glob("step_*"))[0] / "objective.safetensors")
    assert not torch.equal(step4["image_tau"], want_state["image_tau"])  # the state moved after step 4


def test_state_the_resumed_run_does_not_keep_is_named_in_a_warning(digits):
    """Started with isogclr, resumed with softmax: its per-sample state is not loaded, and the run says so."""
    keys = {"duration": "4 steps", "checkpoint_every": "2 steps"}
    path = recipe(digits, "iso_then_softmax", {"name": "isogclr"}, {}, keys)
    with pytest.raises(Stop):
        train(path, callbacks=[stop_after(3)])
    with pytest.warns(UserWarning, match=r"holds state no part of this run keeps \(objective:"):
        resumed = train(path, resume="latest", overrides=["objective.name=softmax"])
    assert resumed.step == 4


def test_isogclr_state_does_not_move_on_a_step_skipped_as_non_finite(digits, monkeypatch):
    """Step 3's loss is made NaN after the objective ran (so its state update happened): the trainer skips the step
    and the per-sample state stays as after step 2; step 4 moves it again."""
    import warnings

    import vlp.train.gradcache as gradcache
    import vlp.train.loop as loop

    real_terms, real_update, calls, seen = gradcache.objective_terms, loop._update, {"n": 0}, {}

    def poisoned(objective, features):
        terms = real_terms(objective, features)
        calls["n"] += 1
        return {**terms, "loss": terms["loss"] * float("nan")} if calls["n"] == 3 else terms

    def spy(run, *args):
        out = real_update(run, *args)
        seen[run.progress.step + 1] = run.checkpointer.components["objective"].state_dict()  # step moves after
        return out

    monkeypatch.setattr(gradcache, "objective_terms", poisoned)
    monkeypatch.setattr(loop, "_update", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(recipe(digits, "iso_nan", {"name": "isogclr"}, {}, {"duration": "4 steps"}))
    assert result.nonfinite_steps == 1 and sorted(seen) == [1, 2, 3, 4]
    assert all(torch.equal(seen[3][k], seen[2][k]) for k in seen[2])
    assert not all(torch.equal(seen[4][k], seen[3][k]) for k in seen[3])
    assert not all(torch.equal(seen[2][k], seen[1][k]) for k in seen[1])
