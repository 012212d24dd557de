"""`isogclr` (per-sample state over several steps) and `multi_caption` against float64 naive references written
independently: loops over anchors and pairs, the state kept in a plain dict keyed by sample id."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from helpers.objective_inputs import call_inputs, state_components
import vlp.objectives as objectives

B, D, N_SAMPLES = 6, 4, 9
PARAMS = dict(gamma=0.7, rho=0.5, tau_init=0.3, tau_min=0.05, tau_max=1.0, eta=0.2, beta=0.6, grad_clip=5.0)


def features(seed, rows=B):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(rows, D, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    y = F.normalize(torch.randn(rows, D, generator=g, dtype=torch.float64) + x.detach(), dim=1).requires_grad_()
    return x, y


def batch_ids(step):
    return torch.randperm(N_SAMPLES, generator=torch.Generator().manual_seed(100 + step))[:B]


def reference_isogclr(x, y, ids, state, p):
    """(Σ over image and text anchors of (1/B) Σ_i τ_i/u_i · mean_z exp(h_i(z)/τ_i) — its gradient is the model
    gradient, the objective estimate, the new state).  state: (side, id) -> (u, τ, m), u in linear space."""
    gradient_form, estimate, new = 0, 0.0, dict(state)
    for side in ("image", "text"):
        for i in range(B):
            u, tau, m = state.get((side, int(ids[i])), (0.0, p["tau_init"], 0.0))
            if side == "image":
                h = [(x[i] * y[j]).sum() - (x[i] * y[i]).sum() for j in range(B) if j != i]
            else:
                h = [(x[j] * y[i]).sum() - (x[i] * y[i]).sum() for j in range(B) if j != i]
            terms = [torch.exp(hz / tau) for hz in h]
            values = [float(e.detach()) for e in terms]
            g = sum(values) / len(values)
            u = (1 - p["gamma"]) * u + p["gamma"] * g
            gradient_form = gradient_form + tau / u * sum(terms) / len(terms) / B
            weighted = sum(e / u * float(hz.detach()) / tau for e, hz in zip(values, h)) / len(h)
            grad_tau = math.log(u) + p["rho"] - weighted
            m = (1 - p["beta"]) * m + p["beta"] * min(max(grad_tau, -p["grad_clip"]), p["grad_clip"])
            new[(side, int(ids[i]))] = (u, min(max(tau - p["eta"] * m, p["tau_min"]), p["tau_max"]), m)
            estimate += tau * (math.log(u) + p["rho"]) / B
    return gradient_form, estimate, new


@pytest.mark.parametrize("tiled", [False, True], ids=["dense", "tiled"])
def test_isogclr_equals_naive_reference_over_steps(tiled):
    objective = objectives.build("isogclr", **PARAMS, **({"tiled": True, "tile_size": 4} if tiled else {}))
    samples = state_components(objective, N_SAMPLES)["objective"]
    state = {}
    for step in range(4):  # ids repeat across steps: the moving averages and τ carry over
        x, y = features(step)
        ids = batch_ids(step)
        out = objective(x, y, torch.tensor(1.0, dtype=torch.float64), **call_inputs({"sample_ids": ids}))
        form, estimate, state = reference_isogclr(x, y, ids, state, PARAMS)
        torch.testing.assert_close(out["loss"].item(), estimate, atol=1e-10, rtol=1e-10)
        for got, want in zip(torch.autograd.grad(out["loss"], (x, y)), torch.autograd.grad(form, (x, y))):
            torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
        saved = samples.state_dict()
        for (side, i), (u, tau, m) in state.items():
            assert math.isclose(math.exp(saved[f"{side}_log_u"][i]), u, rel_tol=1e-10)
            assert math.isclose(saved[f"{side}_tau"][i], tau, rel_tol=1e-10)
            assert math.isclose(saved[f"{side}_tau_grad"][i], m, rel_tol=1e-10, abs_tol=1e-12)
    assert len({round(v[1], 6) for v in state.values()}) > 2  # temperatures did individualise


def test_isogclr_state_round_trip_and_refusals():
    objective = objectives.build("isogclr", **PARAMS)
    samples = state_components(objective, N_SAMPLES)["objective"]
    x, y = features(0)
    objective(x, y, 1.0, **call_inputs({"sample_ids": batch_ids(0)}))
    saved = samples.state_dict()
    fresh = state_components(objectives.build("isogclr", **PARAMS), N_SAMPLES)["objective"]
    fresh.load_state_dict(saved)
    for key, value in saved.items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    other = state_components(objectives.build("isogclr"), N_SAMPLES + 1)["objective"]
    with pytest.raises(ValueError, match="samples"):
        other.load_state_dict(saved)
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({})  # a checkpoint of a run without it
    with pytest.raises(ValueError, match="sample ids"):
        state_components(objectives.build("isogclr"), None)
    with pytest.raises(ValueError, match="no per-sample state yet"):
        objectives.build("isogclr")(x, y, 1.0, **call_inputs({"sample_ids": batch_ids(0)}))
    assert state_components(objectives.build("softmax"), N_SAMPLES) == {}  # nothing of its own to checkpoint


def test_isogclr_keeps_a_steps_state_update_only_if_the_step_was_applied():
    """The trainer reports each optimizer step to every state component (`after_step`); a step skipped as non-finite
    leaves the per-sample state as it was before that step, an applied one keeps the update."""
    objective = objectives.build("isogclr", **PARAMS)
    samples = state_components(objective, N_SAMPLES)["objective"]
    for step in range(3):
        x, y = features(step)
        before = samples.state_dict()
        objective(x, y, 1.0, **call_inputs({"sample_ids": batch_ids(step)}))
        updated = samples.state_dict()
        assert any(not torch.equal(before[k], updated[k]) for k in before)
        applied = step != 1
        samples.after_step(torch.tensor(applied))
        after = samples.state_dict()
        for key in before:
            assert torch.equal(after[key], updated[key] if applied else before[key]), (step, key)


K = 3
CAPTION_MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)


def caption_inputs():
    g = torch.Generator().manual_seed(5)
    x = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    captions = F.normalize(torch.randn(B, K, D, generator=g, dtype=torch.float64) + x.detach()[:, None],
                           dim=-1).requires_grad_()
    return x, captions, torch.tensor(2.5, dtype=torch.float64, requires_grad=True)


def reference_multi_caption(x, captions, t):
    real = [(i, k) for i in range(B) for k in range(K) if CAPTION_MASK[i, k]]
    z = {(i, c): t * (x[i] * captions[c]).sum() for i in range(B) for c in real}
    i2t = 0
    for i in range(B):
        denominator = sum(torch.exp(z[i, c]) for c in real)
        own = [c for c in real if c[0] == i]
        i2t = i2t - sum(torch.log(torch.exp(z[i, c]) / denominator) for c in own) / len(own) / B
    t2i = 0
    for c in real:
        t2i = t2i - torch.log(torch.exp(z[c[0], c]) / sum(torch.exp(z[j, c]) for j in range(B))) / len(real)
    return (i2t + t2i) / 2


@pytest.mark.parametrize("tiled", [False, True], ids=["dense", "tiled"])
def test_multi_caption_equals_naive_reference(tiled):
    x, captions, t = caption_inputs()
    execution = {"tiled": True, "tile_size": 4} if tiled else {}
    out = objectives.build("multi_caption", **execution)(x, captions[:, 0], t, caption_features=captions,
                                                         **call_inputs({"caption_mask": CAPTION_MASK}))
    expected = reference_multi_caption(x, captions, t)
    torch.testing.assert_close(out["loss"], expected, atol=1e-10, rtol=1e-10)
    for got, want in zip(torch.autograd.grad(out["loss"], (x, captions, t)),
                         torch.autograd.grad(expected, (x, captions, t))):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_multi_caption_with_one_caption_each_is_softmax():
    x, captions, t = caption_inputs()
    only_first = torch.zeros(B, K, dtype=torch.bool)
    only_first[:, 0] = True
    got = objectives.build("multi_caption")(x, captions[:, 0], t, caption_features=captions,
                                            **call_inputs({"caption_mask": only_first}))["loss"]
    torch.testing.assert_close(got, objectives.build("softmax")(x, captions[:, 0], t)["loss"],
                               atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["masked_softmax", "supcon", "multi_caption", "isogclr"])
def test_gradcache_carries_the_declared_inputs(name):
    """Micro-batches of 3 give the whole batch's loss and gradients: labels, caption ids, sample ids and every
    caption's features travel through the cache (a micro-batch-local mask or state would differ)."""
    from accelerate import Accelerator

    from helpers.train_support import random_batch, tiny_clip
    from vlp.train.gradcache import compute_gradients

    batch = random_batch(8)
    batch.text[4] = batch.text[0]  # identical captions across micro-batches
    batch.labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])
    batch.sample_ids = torch.arange(8)
    batch.captions = torch.randint(1, 1000, (8, K, batch.text.shape[1]), generator=torch.Generator().manual_seed(3))
    batch.captions[:, 0] = batch.text
    batch.caption_mask = CAPTION_MASK.repeat(2, 1)[:8]
    torch.manual_seed(0)
    model, results = tiny_clip(), []
    for micro in (8, 3):
        objective = objectives.build(name)
        state_components(objective, 8)
        model.zero_grad(set_to_none=True)
        out = compute_gradients(model, objective, batch, micro, Accelerator(cpu=True))
        results.append((out.terms["loss"], {n: p.grad.clone() for n, p in model.named_parameters()
                                            if p.grad is not None}))
    (whole, whole_grads), (cached, cached_grads) = results
    torch.testing.assert_close(cached, whole)
    assert whole_grads.keys() == cached_grads.keys() and "token_embedding.weight" in whole_grads
    for key in whole_grads:
        scale = max(1.0, whole_grads[key].abs().max().item())
        torch.testing.assert_close(cached_grads[key], whole_grads[key], rtol=1e-4, atol=1e-6 * scale, msg=key)
