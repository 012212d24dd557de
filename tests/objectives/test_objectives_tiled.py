"""Tiled (memory-efficient) objectives, presets and regularizers: equal to the dense forms, no B×B tensor anywhere."""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import vlp.objectives as objectives
from helpers.objective_inputs import call_inputs, extra_inputs, state_components
from vlp.recipe import ConfigError
from vlp.recipe.schema import ObjectiveConfig, RegularizerConfig

B, D = 37, 6


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(B, D, generator=g), dim=1)
    y = F.normalize(torch.randn(B, D, generator=g), dim=1)
    return x, y, torch.tensor(20.0), torch.tensor(-8.0)


def run(objective, x, y, t, b, seed=0):
    leaves = [v.clone().requires_grad_() for v in (x, y, t, b)]
    extras = extra_inputs(objective, x.shape[0], x.shape[1], torch.Generator().manual_seed(seed))
    out = objective(*leaves, **call_inputs(extras))
    out["loss"].backward()
    return out, [leaf.grad for leaf in leaves]


def assert_same(name, tile_size, **params):
    assert_same_objectives(objectives.build(name, **params),
                           objectives.build(name, tiled=True, tile_size=tile_size, **params), seed=tile_size)


def assert_same_objectives(dense, tiled, seed=0):
    """Equal terms and gradients (features, t, b) of a dense objective and its tiled form."""
    x, y, t, b = inputs(seed)
    dense_out, dense_grads = run(dense, x, y, t, b, seed)
    tiled_out, tiled_grads = run(tiled, x, y, t, b, seed)
    assert dense_out.keys() == tiled_out.keys()
    for key in dense_out:
        torch.testing.assert_close(tiled_out[key], dense_out[key], atol=1e-5, rtol=1e-5)
    for tiled_grad, dense_grad in zip(tiled_grads, dense_grads):
        torch.testing.assert_close(tiled_grad, dense_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tile_size", [1, 5, 16, 37, 1000])
def test_tiled_softmax_equals_dense(tile_size):
    assert_same("softmax", tile_size, label_smoothing=0.1, image_to_text_weight=0.6, text_to_image_weight=0.4)


@pytest.mark.parametrize("tile_size", [1, 5, 16, 37, 1000])
def test_tiled_sigmoid_equals_dense(tile_size):
    assert_same("sigmoid", tile_size)


@pytest.mark.parametrize("name", ["clip_cua", "clip_cuaxu", "uniformity"])
@pytest.mark.parametrize("tile_size", [1, 5, 37, 1000])
def test_tiled_preset_equals_dense(name, tile_size):
    assert_same(name, tile_size)


def test_tiled_sigmoid_without_gradients_still_computes_the_loss():
    x, y, t, b = inputs()
    with torch.no_grad():
        tiled = objectives.build("sigmoid", tiled=True, tile_size=8)(x, y, t, b)["loss"]
    torch.testing.assert_close(tiled, objectives.build("sigmoid")(x, y, t, b)["loss"])


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def tiled_configs() -> list[ObjectiveConfig]:
    """Every configuration the recipe accepts with `tiled: true`: objective × gather × added regularizers × features."""
    added = ((), ("align", "uniform", "cross_uniform"))
    candidates = [ObjectiveConfig(name=name, tiled=True, tile_size=16, gather=gather, regularizer_features=features,
                                  regularizers=[RegularizerConfig(r) for r in regularizers])
                  for name, gather, regularizers, features in
                  itertools.product(objectives.names(), ("global", "local_loss", "ring"), added, ("global", "local"))]
    return [cfg for cfg in candidates if _accepted(cfg)]


def _accepted(cfg: ObjectiveConfig) -> bool:
    try:
        objectives.check(cfg)
    except ConfigError:
        return False
    return True


TILED = tiled_configs()


def test_every_tiled_objective_is_probed():
    assert sorted({cfg.name for cfg in TILED}) == ["clip_cua", "clip_cuaxu", "coca", "debiased", "isogclr", "macl",
                                                   "masked_softmax", "multi_caption", "sigmoid", "softmax", "supcon",
                                                   "uniformity"]


def config_id(cfg: ObjectiveConfig) -> str:
    return "-".join([cfg.name, cfg.gather, cfg.regularizer_features] + [r.name for r in cfg.regularizers])


@pytest.mark.parametrize("cfg", TILED, ids=config_id)
def test_every_tiled_configuration_equals_dense(cfg):
    assert_same_objectives(objectives.build_from_config(dataclasses.replace(cfg, tiled=False)),
                           objectives.build_from_config(cfg))


@pytest.mark.parametrize("cfg", TILED, ids=config_id)
def test_no_batch_by_batch_tensor_when_tiled(cfg):
    n, tile = 128, cfg.tile_size  # 8 tiles a side
    x = F.normalize(torch.randn(n, 4), dim=1)
    y = F.normalize(torch.randn(n, 4), dim=1)
    for tiled in (True, False):
        leaves = [v.clone().requires_grad_() for v in (x, y, torch.tensor(10.0), torch.tensor(-10.0))]
        objective = objectives.build_from_config(dataclasses.replace(cfg, tiled=tiled))
        extras = extra_inputs(objective, n, 4, torch.Generator().manual_seed(0))
        held = [v.numel() for c in (state_components(objective, n) if "sample_ids" in extras else {}).values()
                for v in vars(c).values() if isinstance(v, torch.Tensor)]
        with LargestTensor() as probe:
            objective(*leaves, **call_inputs(extras))["loss"].backward()
        if tiled:
            # nothing above a tile, the largest input (B×D features; B×K×D for every caption) or the state the
            # objective holds (isogclr: per dataset sample, updated in place)
            assert probe.largest <= max(tile * tile, *(v.numel() for v in [*leaves, *extras.values()]), *held)
        else:  # the probe sees the dense form's B×B matrices: it can tell the difference
            assert probe.largest >= n * n
