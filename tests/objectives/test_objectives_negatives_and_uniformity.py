"""The false-negative, uniformity, DCL, MACL and iSogCLR objectives against float64 naive references written
independently (loops over pairs, the papers' formulas as printed): value and gradients w.r.t. image/text features and
the logit scale, dense and tiled."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

import vlp.objectives as objectives
from helpers.objective_inputs import samples

B, D = 7, 5
LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 3])
TOKENS = torch.tensor([[5, 6, 0], [7, 8, 0], [5, 6, 0], [9, 9, 9], [7, 8, 1], [5, 6, 0], [4, 0, 0]])


def inputs(seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    y = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64) + 0.8 * x.detach(), dim=1).requires_grad_()
    return x, y, torch.tensor(scale, dtype=torch.float64, requires_grad=True)


def grads(value, *leaves):
    return torch.autograd.grad(value, leaves)


def s(a, b, i, j):
    return (a[i] * b[j]).sum()


def both_directions(x, y, row_loss):
    """½(mean_i row_loss(x, y, i) + mean_i row_loss(y, x, i)): the references' symmetric form."""
    i2t = sum(row_loss(x, y, i) for i in range(B)) / B
    t2i = sum(row_loss(y, x, i) for i in range(B)) / B
    return (i2t + t2i) / 2


def reference_masked(x, y, t):
    def masked(i, j):
        return j != i and (bool((TOKENS[i] == TOKENS[j]).all()) or int(LABELS[i]) == int(LABELS[j]))

    def row(a, b, i):
        denominator = sum(torch.exp(t * s(a, b, i, j)) for j in range(B) if not masked(i, j))
        return -torch.log(torch.exp(t * s(a, b, i, i)) / denominator)
    return both_directions(x, y, row)


def reference_supcon(x, y, t):
    def row(a, b, i):
        denominator = sum(torch.exp(t * s(a, b, i, j)) for j in range(B))
        positives = [p for p in range(B) if LABELS[p] == LABELS[i]]
        return -sum(torch.log(torch.exp(t * s(a, b, i, p)) / denominator) for p in positives) / len(positives)
    return both_directions(x, y, row)


def reference_debiased(x, y, t, tau_plus):
    n = B - 1

    def row(a, b, i):
        positive = torch.exp(t * s(a, b, i, i))
        negatives = sum(torch.exp(t * s(a, b, i, j)) for j in range(B) if j != i) / n
        ng = torch.maximum((negatives - tau_plus * positive) / (1 - tau_plus), torch.exp(-t))
        return -torch.log(positive / (positive + n * ng))
    return both_directions(x, y, row)


def reference_macl(x, y, tau0, alpha, a0):
    alignment = sum(s(x, y, i, i) for i in range(B)).detach() / B
    tau = tau0 * (1 + alpha * (alignment - a0))

    def row(a, b, i):
        p = torch.exp(s(a, b, i, i) / tau) / sum(torch.exp(s(a, b, i, j) / tau) for j in range(B))
        return -(1 / (1 - p)).detach() * torch.log(p)
    return both_directions(x, y, row)


def build(name, tiled, **params):
    execution = {"tiled": True, "tile_size": 3} if tiled else {}
    return objectives.build(name, **params, **execution)


CASES = {
    "masked_softmax": (dict(), lambda x, y, t: reference_masked(x, y, t),
                       lambda: {"samples": samples(text=TOKENS, labels=LABELS)}),
    "supcon": (dict(), reference_supcon, lambda: {"samples": samples(labels=LABELS)}),
    "debiased": (dict(tau_plus=0.15), lambda x, y, t: reference_debiased(x, y, t, 0.15), dict),
    "macl": (dict(temperature=0.2, alpha=0.6, a0=0.1), lambda x, y, t: reference_macl(x, y, 0.2, 0.6, 0.1), dict),
}


@pytest.mark.parametrize("tiled", [False, True], ids=["dense", "tiled"])
@pytest.mark.parametrize("name", list(CASES))
def test_equals_naive_reference(name, tiled):
    params, reference, extras = CASES[name]
    x, y, t = inputs()
    out = build(name, tiled, **params)(x, y, t, **extras())
    expected = reference(x, y, t)
    torch.testing.assert_close(out["loss"], expected, atol=1e-10, rtol=1e-10)
    wrt = (x, y) if name == "macl" else (x, y, t)  # MACL does not use the learned scale
    for got, want in zip(grads(out["loss"], *wrt), grads(expected, *wrt)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_masking_changes_the_loss_only_through_masked_pairs():
    x, y, t = inputs()
    softmax = objectives.build("softmax")(x, y, t)["loss"]
    masked = objectives.build("masked_softmax")(x, y, t, samples=samples(text=TOKENS, labels=LABELS))["loss"]
    assert masked < softmax  # pairs left the denominators
    distinct = objectives.build("masked_softmax")(x, y, t, samples=samples(text=torch.arange(B)[:, None],
                                                                           labels=torch.arange(B)))["loss"]
    torch.testing.assert_close(distinct, softmax, atol=1e-12, rtol=1e-12)


def test_debiased_with_zero_prior_is_softmax():
    x, y, t = inputs()
    torch.testing.assert_close(objectives.build("debiased", tau_plus=0.0)(x, y, t)["loss"],
                               objectives.build("softmax")(x, y, t)["loss"], atol=1e-12, rtol=1e-12)


def test_debiased_floor_at_high_logit_scale_is_finite():
    x, y, _ = inputs()
    t = torch.tensor(100.0, dtype=torch.float64, requires_grad=True)
    for tiled in (False, True):
        out = build("debiased", tiled, tau_plus=0.5)(x.float(), y.float(), t.float())
        assert torch.isfinite(out["loss"])
        assert all(torch.isfinite(g).all() for g in grads(out["loss"], x, y))


def test_supcon_with_distinct_labels_is_softmax():
    x, y, t = inputs()
    torch.testing.assert_close(objectives.build("supcon")(x, y, t, samples=samples(labels=torch.arange(B)))["loss"],
                               objectives.build("softmax")(x, y, t)["loss"], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name, extras, message", [
    ("supcon", {}, "data.label_key"),
    ("masked_softmax", {"samples": samples(text=TOKENS)}, "equal_labels: false"),
])
def test_missing_extras_name_the_key(name, extras, message):
    x, y, t = inputs()
    with pytest.raises(ValueError, match=message):
        objectives.build(name)(x, y, t, **extras)


@pytest.mark.parametrize("name, params, key", [
    ("debiased", {"tau_plus": 1.0}, "tau_plus"),
    ("macl", {"alpha": 1.0, "a0": 0.5}, "alpha"),
    ("masked_softmax", {"identical_captions": False, "equal_labels": False}, "masks nothing"),
    ("isogclr", {"tau_min": 0.1, "tau_init": 0.01}, "tau_min"),
    ("multi_caption", {"gather": "local_loss"}, "gather"),
    ("isogclr", {"gather": "local_loss"}, "gather"),
])
def test_config_validation(name, params, key):
    from vlp.recipe import ConfigError
    from vlp.recipe.schema import ObjectiveConfig

    execution = {k: params.pop(k) for k in list(params) if k in ("gather", "tiled")}
    with pytest.raises(ConfigError, match=key):
        objectives.check(ObjectiveConfig(name=name, params=params, **execution))
