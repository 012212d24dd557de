"""Tiled (memory-efficient) softmax and sigmoid: equal to the dense forms, and no B×B tensor anywhere."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import vlp.objectives as objectives

B, D = 37, 6


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(B, D, generator=g), dim=1)
    y = F.normalize(torch.randn(B, D, generator=g), dim=1)
    return x, y, torch.tensor(20.0), torch.tensor(-8.0)


def run(objective, x, y, t, b):
    leaves = [v.clone().requires_grad_() for v in (x, y, t, b)]
    out = objective(*leaves)
    out["loss"].backward()
    return out, [leaf.grad for leaf in leaves]


def assert_same(name, tile_size, **params):
    x, y, t, b = inputs(tile_size)
    dense_out, dense_grads = run(objectives.build(name, **params), x, y, t, b)
    tiled_out, tiled_grads = run(objectives.build(name, tiled=True, tile_size=tile_size, **params), x, y, t, b)
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


def test_tiled_preset_equals_dense():
    assert_same("clip_cuaxu", 8)


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


@pytest.mark.parametrize("name", ["softmax", "sigmoid"])
@pytest.mark.parametrize("tiled", [True, False])
def test_no_batch_by_batch_tensor_when_tiled(name, tiled):
    n, tile = 256, 16
    x = F.normalize(torch.randn(n, 4), dim=1).requires_grad_()
    y = F.normalize(torch.randn(n, 4), dim=1).requires_grad_()
    t, b = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    objective = objectives.build(name, tiled=tiled, tile_size=tile)
    with LargestTensor() as probe:
        objective(x, y, t, b)["loss"].backward()
    if tiled:
        assert probe.largest <= max(tile * tile, n * 4)
    else:  # the probe sees the dense form's B×B logits: it can tell the difference
        assert probe.largest >= n * n
