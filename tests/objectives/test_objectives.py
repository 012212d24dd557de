"""Each objective against a naive float64 reference (value and gradients), limit identities, OpenCLIP parity.

The references are written straight from the papers' formulas with explicit loops.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

import vlp.objectives as objectives


# ---------------------------------------------------------------- naive references
def ref_softmax(x, y, t, label_smoothing=0.0, weights=(0.5, 0.5)):
    s = t * x @ y.T

    def cross_entropy(logits):
        n = logits.shape[0]
        total = 0.0
        for i in range(n):
            log_p = logits[i] - torch.log(torch.exp(logits[i]).sum())
            target = torch.full((n,), label_smoothing / n, dtype=logits.dtype)
            target[i] += 1 - label_smoothing
            total = total - (target * log_p).sum()
        return total / n

    return weights[0] * cross_entropy(s) + weights[1] * cross_entropy(s.T)


def ref_sigmoid(x, y, t, b):
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total = total - torch.log(torch.sigmoid(z * (t * x[i] @ y[j] + b)))
    return total / n


def ref_hn_nce(x, y, t, alpha, beta, negatives=None):
    """Radenovic et al. 2023 eq.: −log[e^{z_ii} / (α e^{z_ii} + Σ_{j≠i} w_ij e^{z_ij})], both directions."""
    columns = y if negatives is None else torch.cat([y, negatives.reshape(-1, y.shape[1])])

    def direction(rows, cols):
        n = cols.shape[0]
        total = 0.0
        for i in range(rows.shape[0]):
            z = t * cols @ rows[i]
            others = [j for j in range(n) if j != i]
            norm = sum(torch.exp(beta * z[k]) for k in others)
            denominator = alpha * torch.exp(z[i])
            for j in others:
                denominator = denominator + (n - 1) * torch.exp(beta * z[j]) / norm * torch.exp(z[j])
            total = total - torch.log(torch.exp(z[i]) / denominator)
        return total / rows.shape[0]

    return (direction(x, columns) + direction(y, x)) / 2


def ref_dcl(x, y, t):
    def direction(rows, cols):
        total = 0.0
        for i in range(rows.shape[0]):
            z = t * cols @ rows[i]
            total = total - z[i] + torch.log(sum(torch.exp(z[j]) for j in range(len(z)) if j != i))
        return total / rows.shape[0]

    return (direction(x, y) + direction(y, x)) / 2


def ref_align(x, y):
    return sum(((x[i] - y[i]) ** 2).sum() for i in range(x.shape[0])) / x.shape[0]


def _uniform_one(x):
    n = x.shape[0]
    terms = [torch.exp(-2 * ((x[i] - x[j]) ** 2).sum()) for i in range(n) for j in range(i + 1, n)]
    return torch.log(sum(terms) / len(terms))


def ref_uniform(x, y):
    return (_uniform_one(x) + _uniform_one(y)) / 2


def ref_cross_uniform(x, y):
    n = x.shape[0]
    terms = [torch.exp(-2 * ((x[i] - y[j]) ** 2).sum()) for i in range(n) for j in range(n) if i != j]
    return torch.log(sum(terms) / len(terms))


REFERENCE_REGULARIZERS = {"align": ref_align, "uniform": ref_uniform, "cross_uniform": ref_cross_uniform}


# ---------------------------------------------------------------- helpers
B, D = 7, 5


def features(n=B, d=D, seed=0, k=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, d) if k is None else (n, k, d)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def grads_of(fn, *inputs, dtype=torch.float32):
    """(value, gradients) of fn at copies of `inputs` cast to `dtype`."""
    leaves = [v.detach().to(dtype).requires_grad_() for v in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach().double(), [torch.zeros_like(leaf).double() if leaf.grad is None else leaf.grad.double()
                                     for leaf in leaves]


def assert_matches(ours, reference, atol=2e-5, rtol=1e-5):
    (value, grads), (ref_value, ref_grads) = ours, reference
    torch.testing.assert_close(value, ref_value, atol=atol, rtol=rtol)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=atol, rtol=rtol)


def check(objective, reference, *, extra=None, bias=False):
    """Objective (float32) vs reference (float64): loss and gradients for features, t (and b, negatives)."""
    x, y, t = features(seed=1), features(seed=2), torch.tensor(6.0, dtype=torch.float64)
    inputs = [x, y, t] + ([torch.tensor(-3.0, dtype=torch.float64)] if bias else []) + ([extra] if extra is not None else [])

    def ours(x, y, t, *rest):
        b = rest[0] if bias else None
        negatives = rest[-1] if extra is not None else None
        kwargs = {"negative_text_features": negatives} if negatives is not None else {}
        return objective(x, y, t, b, **kwargs)["loss"]

    assert_matches(grads_of(ours, *inputs), grads_of(reference, *inputs, dtype=torch.float64))


# ---------------------------------------------------------------- against the references
@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize("smoothing,weights", [(0.0, (0.5, 0.5)), (0.2, (0.8, 0.3))])
def test_softmax_matches_reference(tiled, smoothing, weights):
    objective = objectives.build("softmax", label_smoothing=smoothing, image_to_text_weight=weights[0],
                                 text_to_image_weight=weights[1], tiled=tiled, tile_size=3)
    check(objective, lambda x, y, t: ref_softmax(x, y, t, smoothing, weights))


@pytest.mark.parametrize("tiled", [False, True])
def test_sigmoid_matches_reference(tiled):
    check(objectives.build("sigmoid", tiled=tiled, tile_size=3), ref_sigmoid, bias=True)


def test_sigmoid_without_bias_uses_zero():
    check(objectives.build("sigmoid"), lambda x, y, t: ref_sigmoid(x, y, t, 0.0))


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.5), (0.3, 1.5), (0.0, 0.0), (1.0, 0.0)])
def test_hard_negative_matches_reference(alpha, beta):
    check(objectives.build("hard_negative", alpha=alpha, beta=beta),
          lambda x, y, t: ref_hn_nce(x, y, t, alpha, beta))


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 0.7)])
def test_hard_negative_captions_match_reference(alpha, beta):
    check(objectives.build("hard_negative", alpha=alpha, beta=beta),
          lambda x, y, t, n: ref_hn_nce(x, y, t, alpha, beta, n), extra=features(seed=3, k=2))


def test_dcl_matches_reference():
    check(objectives.build("dcl"), ref_dcl)


@pytest.mark.parametrize("name", ["align", "uniform", "cross_uniform"])
@pytest.mark.parametrize("n,tile_size", [(7, None), (2, None), (7, 1), (7, 3), (7, 7), (7, 50), (2, 1), (12, 5),
                                         (12, 4)])
def test_regularizers_match_reference(name, n, tile_size):
    """Dense (tile_size None) and tiled forms, including batches that are not a multiple of the tile."""
    x, y = features(n, seed=4), features(n, seed=5)
    assert_matches(grads_of(lambda *v: objectives.get_regularizer(name)(*v, tile_size=tile_size), x, y),
                   grads_of(REFERENCE_REGULARIZERS[name], x, y, dtype=torch.float64))


@pytest.mark.parametrize("tiled", [False, True])
def test_presets_are_softmax_plus_regularizers(tiled):
    def cuaxu(x, y, t):
        return ref_softmax(x, y, t) + ref_align(x, y) + ref_uniform(x, y) + ref_cross_uniform(x, y)

    execution = {"tiled": tiled, "tile_size": 3}
    check(objectives.build("clip_cua", **execution),
          lambda x, y, t: ref_softmax(x, y, t) + ref_align(x, y) + ref_uniform(x, y))
    check(objectives.build("clip_cuaxu", **execution), cuaxu)
    check(objectives.build("uniformity", **execution), lambda x, y, t: ref_align(x, y) + ref_uniform(x, y))


# ---------------------------------------------------------------- identities
def _same(a, b, **kwargs):
    x, y, t = features(seed=6), features(seed=7), torch.tensor(9.0, dtype=torch.float64)
    assert_matches(grads_of(lambda *v: a(*v, **kwargs)["loss"], x, y, t),
                   grads_of(lambda *v: b(*v, **kwargs)["loss"], x, y, t), atol=1e-6, rtol=1e-6)


def test_hn_nce_alpha1_beta0_is_softmax():
    _same(objectives.build("hard_negative", alpha=1.0, beta=0.0), objectives.build("softmax"))


def test_hn_nce_alpha0_beta0_is_dcl():
    _same(objectives.build("hard_negative", alpha=0.0, beta=0.0), objectives.build("dcl"))


def test_hn_nce_with_hardness_differs_from_softmax():
    with pytest.raises(AssertionError):
        _same(objectives.build("hard_negative", alpha=1.0, beta=1.0), objectives.build("softmax"))


def test_negclip_limit_is_softmax_with_extra_image_to_text_columns():
    x, y, n, t = features(seed=8), features(seed=9), features(seed=10, k=3), torch.tensor(5.0)
    out = objectives.build("hard_negative", alpha=1.0, beta=0.0)(x, y, t, negative_text_features=n)
    logits = t * x @ torch.cat([y, n.reshape(-1, D)]).T
    labels = torch.arange(B)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(t * y @ x.T, labels)) / 2
    torch.testing.assert_close(out["loss"], expected)
    assert "hard_negative_logit_mean" in out


def test_zero_smoothing_and_one_sided_weights():
    x, y, t = features(seed=11).float(), features(seed=12).float(), torch.tensor(4.0)
    out = objectives.build("softmax", image_to_text_weight=1.0, text_to_image_weight=0.0)(x, y, t)
    torch.testing.assert_close(out["loss"], F.cross_entropy(t * x @ y.T, torch.arange(B)))


# ---------------------------------------------------------------- OpenCLIP parity
@pytest.mark.parametrize("tiled", [False, True])
def test_softmax_equals_openclip_cliploss(tiled):
    from open_clip.loss import ClipLoss

    x, y, t = features(seed=13), features(seed=14), torch.tensor(14.0, dtype=torch.float64)
    ours = objectives.build("softmax", tiled=tiled, tile_size=4)
    assert_matches(grads_of(lambda *v: ours(*v)["loss"], x, y, t), grads_of(ClipLoss(), x, y, t), atol=1e-6)


@pytest.mark.parametrize("tiled", [False, True])
def test_sigmoid_equals_openclip_sigliploss(tiled):
    from open_clip.loss import SigLipLoss

    x, y = features(seed=15), features(seed=16)
    t, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    ours = objectives.build("sigmoid", tiled=tiled, tile_size=4)
    assert_matches(grads_of(lambda *v: ours(*v)["loss"], x, y, t, b), grads_of(SigLipLoss(), x, y, t, b),
                   atol=1e-6)


# ---------------------------------------------------------------- diagnostics
def test_diagnostics_are_the_logit_means():
    x, y, t = features(seed=17).float(), features(seed=18).float(), torch.tensor(3.0)
    out = objectives.build("softmax")(x, y, t)
    logits = t * x @ y.T
    off_diagonal = ~torch.eye(B, dtype=torch.bool)
    torch.testing.assert_close(out["positive_logit_mean"], logits.diagonal().mean())
    torch.testing.assert_close(out["negative_logit_mean"], logits[off_diagonal].mean())
    assert not any(v.requires_grad for k, v in out.items() if k != "loss")
