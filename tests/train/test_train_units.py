"""Trainer parts against naive references: decay groups, lr schedule, checkpoint files, state round trips, EMA."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from helpers.train_support import SoloAccelerator, tiny_clip
from vlp.recipe import Duration
from vlp.recipe.schema import OptimConfig, ScheduleConfig
from vlp.run_dir import Checkpoint, CheckpointError, RunDir
from vlp.train import state as st
from vlp.train.optim import build_optimizer, lr_multiplier
from vlp.train.components import EMA, Generators, optimizer_from_flat, optimizer_to_flat

torch.set_num_threads(1)


def test_weight_decay_only_on_weight_matrices():
    model = tiny_clip()
    optimizer = build_optimizer(model, OptimConfig(weight_decay=0.3))
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.3 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    expected = {n for n, p in model.named_parameters()
                if p.dim() >= 2 and n not in ("token_embedding.weight", "positional_embedding",
                                              "visual.positional_embedding")}
    assert {names[i] for i in decayed} == expected
    assert "visual.conv1.weight" in expected and "ln_final.weight" not in expected  # patch conv kernel decays
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out():
    model = tiny_clip()
    for p in model.visual.parameters():
        p.requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig())
    assert all(p.requires_grad for g in optimizer.param_groups for p in g["params"])


@pytest.mark.parametrize("name", ["cosine", "linear", "constant"])
def test_schedule_matches_closed_form(name):
    warmup, total, floor = 3, 13, 0.1
    at = lr_multiplier(ScheduleConfig(name=name, warmup=Duration.parse(warmup), min_lr_ratio=floor), warmup, total)
    for step in range(total):
        if step < warmup:
            expected = (step + 1) / warmup
        else:
            p = (step - warmup) / (total - warmup)
            expected = {"constant": 1.0, "linear": 1 - (1 - floor) * p,
                        "cosine": floor + (1 - floor) * (1 + math.cos(math.pi * p)) / 2}[name]
        assert at(step) == pytest.approx(expected), step
    if name != "constant":
        assert at(total) == pytest.approx(floor)


def write_checkpoint(run, step, keep=3):
    tmp = run.temp_checkpoint(step)
    st.begin(tmp)
    st.write_tensors(tmp.model, {"w": torch.full((4,), float(step))})
    return st.commit(run, tmp, {"step": step}, keep)


def test_commit_verify_latest_and_keep_last(tmp_path):
    root, run = tmp_path / "checkpoints", RunDir(tmp_path)
    for step in (1, 2, 3, 4):
        write_checkpoint(run, step, keep=2)
    assert [p.name for p in run.list_checkpoints()] == ["step_00000004", "step_00000003"]
    assert (root / "latest").read_text().strip() == "step_00000004"
    assert not list(root.glob(".tmp-*"))
    state = Checkpoint(root / "step_00000004").verify()
    assert state["step"] == 4 and set(state["files"]) == {"model.safetensors"}


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "no_state"])
def test_damaged_checkpoint_is_detected_and_the_previous_one_used(tmp_path, damage):
    run = RunDir(tmp_path / "run")
    write_checkpoint(run, 1)
    newest = write_checkpoint(run, 2)
    weights = newest / "model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 1
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-3])
    elif damage == "delete":
        weights.unlink()
    else:
        (newest / "state.json").unlink()
    with pytest.raises(CheckpointError):
        Checkpoint(newest).verify()
    with pytest.warns(UserWarning, match="step_00000002"):
        path, state = run.resume_from("latest")
    assert path.name == "step_00000001" and state["step"] == 1
    with pytest.raises(CheckpointError):  # an explicitly named checkpoint never falls back
        run.resume_from(str(newest))


def test_an_interrupted_write_is_invisible(tmp_path):
    run = RunDir(tmp_path / "run")
    write_checkpoint(run, 1)
    tmp = run.temp_checkpoint(2)  # killed before commit
    st.begin(tmp)
    st.write_tensors(tmp.model, {"w": torch.zeros(2)})
    assert run.resume_from("latest")[0].name == "step_00000001"
    write_checkpoint(run, 2)
    assert run.resume_from("latest")[0].name == "step_00000002"


def test_no_checkpoint_is_a_clear_error_unless_resuming_latest(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        run.resume_from(str(tmp_path))
    with pytest.warns(UserWarning, match="no checkpoint yet; starting from step 0"):  # as OpenCLIP's --resume latest
        assert run.resume_from("latest") is None
    write_checkpoint(run, 1)
    (tmp_path / "checkpoints" / "step_00000001" / "state.json").unlink()
    with pytest.warns(UserWarning, match="step_00000001"), pytest.raises(CheckpointError, match="no usable"):
        run.resume_from("latest")  # checkpoints that all fail to verify never mean "start over"


def test_optimizer_state_round_trips_bitwise_through_safetensors_and_json(tmp_path):
    model = tiny_clip()
    optimizer = build_optimizer(model, OptimConfig())
    for _ in range(2):
        model(torch.randn(2, 3, 16, 16), torch.randint(0, 100, (2, 16)))["image_features"].sum().backward()
        optimizer.step()
    tensors, structure = optimizer_to_flat(optimizer.state_dict())
    st.write_tensors(tmp_path / "opt.safetensors", tensors)
    (tmp_path / "opt.json").write_text(json.dumps(structure))
    restored = optimizer_from_flat(st.read_tensors(tmp_path / "opt.safetensors"),
                                   json.loads((tmp_path / "opt.json").read_text()))
    fresh = build_optimizer(tiny_clip(), OptimConfig())
    fresh.load_state_dict(restored)
    a, b = optimizer.state_dict(), fresh.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        for key, value in a["state"][index].items():
            assert torch.equal(value, b["state"][index][key]), (index, key)
    assert [g["lr"] for g in a["param_groups"]] == [g["lr"] for g in b["param_groups"]]


def test_random_generators_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    checkpointer = st.Checkpointer(RunDir(tmp_path), SoloAccelerator(), {"rng": Generators()}, keep=1)
    path = checkpointer.save(1)
    assert Checkpoint(path).per_process("rng", 0).name in Checkpoint(path).verify()["files"]
    expected = (torch.rand(3), random.random(), np.random.rand())
    checkpointer.restore(path, Checkpoint(path).verify())
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_ema_matches_naive_average():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.8)
    history = [model.weight.detach().clone()]
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight))
        history.append(model.weight.detach().clone())
        ema.update(model)
    naive = history[0]
    for w in history[1:]:
        naive = 0.8 * naive + 0.2 * w
    torch.testing.assert_close(ema.weights["weight"], naive)


@pytest.mark.parametrize("bias", [None, -10.0])
def test_logit_stats_equal_the_explicit_logit_matrix(bias):
    from vlp.train.gradcache import Features
    from vlp.train.metrics import logit_stats

    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(9, 5), dim=-1)
    y = torch.nn.functional.normalize(x + 0.5 * torch.randn(9, 5), dim=-1)
    t = torch.tensor(12.0)
    b = None if bias is None else torch.tensor(bias)
    logits = t * x @ y.T + (0.0 if b is None else b)
    eye = torch.eye(9, dtype=torch.bool)
    stats = logit_stats(Features(image=x, text=y, negative_text=None, logit_scale=t, logit_bias=b))
    expected = {"logits/pos_mean": logits[eye].mean(), "logits/pos_std": logits[eye].std(),
                "logits/neg_mean": logits[~eye].mean(), "logits/neg_std": logits[~eye].std()}
    for name, value in expected.items():
        assert stats[name].item() == pytest.approx(value.item(), abs=1e-5), name
