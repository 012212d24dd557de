"""iSogCLR's per-sample temperatures: with the default ρ and τ₀, training from scratch at batch 128 on the digits
gives each sample its own τ (spread, not all at a clamp); a ρ no τ can reach at the recipe's global batch (ρ ≥
log(B−1), which pins every τ at tau_min) is refused when the recipe loads, in one line with the bound."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main
from vlp.objectives import build
from vlp.recipe import load_recipe
from vlp.train import train

torch.set_num_threads(1)


def isogclr_recipe(tmp_path, batch_size: int, params: dict) -> dict:
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=4), tmp_path / "runs",
                         batch_size=batch_size)
    recipe["objective"] = {"name": "isogclr", "params": params}
    return recipe


@pytest.mark.parametrize("batch_size, rho, bound", [(128, 6.0, "4.84"), (64, 4.2, "4.14"), (3, 0.7, "0.69")])
def test_a_rho_at_or_above_log_of_the_negatives_is_refused_in_one_line(tmp_path, capsys, batch_size, rho, bound):
    path = write_recipe(tmp_path / "run.yaml", isogclr_recipe(tmp_path, batch_size, {"rho": rho}))
    assert main(["train", str(path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: objective.params.rho: {rho:g} is at or above log(B−1) = {bound} ")
    assert f"global batch B = {batch_size}" in line and "train.batch_size" in line
    assert not (tmp_path / "runs").exists()
    below = isogclr_recipe(tmp_path, batch_size, {"rho": float(bound) - 0.01})  # just below the bound loads
    assert load_recipe(write_recipe(tmp_path / "below.yaml", below), for_training=True).objective.name == "isogclr"


def test_default_rho_is_reachable_at_every_batch_with_two_negatives():
    assert build("isogclr").rho < math.log(3 - 1)


def test_default_temperatures_individualise_on_the_digits(tmp_path):
    from data_tools.bundled import build_digits

    paths = build_digits(tmp_path / "data", source="digits", image_size=16, per_shard=400)
    recipe = recipe_dict(paths["train"], tmp_path / "runs", batch_size=128, duration="100 steps", log_every=10)
    recipe["objective"] = {"name": "isogclr"}  # the defaults, from scratch, at the shipped recipes' batch
    result = train(write_recipe(tmp_path / "run.yaml", recipe))
    state = load_file(str(result.checkpoint / "objective.safetensors"))
    taus = torch.cat([state["image_tau"], state["text_tau"]])
    low, high = build("isogclr").tau_range
    at_clamp = ((taus - low).abs() <= 1e-6 * low) | ((taus - high).abs() <= 1e-6 * high)
    assert at_clamp.double().mean() < 0.1  # the old default (ρ = 6, τ₀ = 0.01) put every τ at tau_min by step 110
    q10, q90 = taus.quantile(torch.tensor([0.1, 0.9], dtype=taus.dtype)).tolist()
    assert q90 > 1.2 * q10  # one temperature per sample, not one shared value
