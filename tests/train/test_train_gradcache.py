"""GradCache accumulation equals the large-batch gradient (negatives kept across micro-batches)."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from helpers.train_support import NaiveSoftmax, random_batch, tiny_clip
from vlp.recipe.schema import ObjectiveConfig
from vlp.train.gradcache import compute_gradients

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def accelerator():
    return Accelerator(cpu=True)


def grads(model, objective, batch, micro, accelerator, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = compute_gradients(model, objective, batch, micro, accelerator)
    return out.terms["loss"], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_close(a: dict, b: dict, rtol=1e-4, atol=1e-6):
    """Elementwise closeness, with the absolute tolerance scaled to the tensor's largest entry (float32 sums)."""
    assert a.keys() == b.keys()
    for name in a:
        scale = max(1.0, b[name].abs().max().item())
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol * scale, msg=name)


@pytest.mark.parametrize("micro", [1, 3, 4])
def test_cached_gradient_equals_large_batch_gradient(accelerator, micro):
    torch.manual_seed(0)
    model, objective, batch = tiny_clip(), NaiveSoftmax(), random_batch(8)
    loss_full, full = grads(model, objective, batch, 8, accelerator)
    loss_cached, cached = grads(model, objective, batch, micro, accelerator)
    torch.testing.assert_close(loss_cached, loss_full)
    assert "logit_scale" in cached and "visual.conv1.weight" in cached and "token_embedding.weight" in cached
    assert_close(cached, full)


def test_plain_accumulation_would_differ(accelerator):
    """The reference above is sensitive: summing per-micro-batch losses (fewer negatives) gives another gradient."""
    torch.manual_seed(0)
    model, objective, batch = tiny_clip(), NaiveSoftmax(), random_batch(8)
    _, full = grads(model, objective, batch, 8, accelerator)
    model.zero_grad(set_to_none=True)
    for half in (slice(0, 4), slice(4, 8)):
        out = model(batch.image[half], batch.text[half])
        (objective(out["image_features"], out["text_features"], out["logit_scale"])["loss"] / 2).backward()
    plain = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert not torch.allclose(plain["visual.conv1.weight"], full["visual.conv1.weight"], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name,params,negatives", [("softmax", {}, 0), ("sigmoid", {}, 0),
                                                   ("hard_negative", {}, 2)])
def test_cached_gradient_with_real_objectives(accelerator, name, params, negatives):
    from vlp.objectives import build_from_config

    torch.manual_seed(1)
    objective = build_from_config(ObjectiveConfig(name=name, params=params))
    model = tiny_clip()
    batch = random_batch(6, seed=3, negatives=negatives)
    _, full = grads(model, objective, batch, 6, accelerator)
    _, cached = grads(model, objective, batch, 2, accelerator)
    assert_close(cached, full)


def test_hard_negatives_flow_through_the_cache(accelerator):
    torch.manual_seed(0)
    model, objective = tiny_clip(), NaiveSoftmax()
    batch = random_batch(6, seed=5, negatives=2)
    _, full = grads(model, objective, batch, 6, accelerator)
    _, cached = grads(model, objective, batch, 4, accelerator)
    assert_close(cached, full)


def test_patch_dropout_masks_are_replayed(accelerator):
    """Reference: each micro-batch forwarded once with a graph from the same random state, features joined, one
    backward. GradCache must match it although it forwards every micro-batch twice."""
    torch.manual_seed(0)
    model, objective, batch = tiny_clip(patch_dropout=0.5), NaiveSoftmax(), random_batch(8, seed=2)
    model.train()
    _, cached = grads(model, objective, batch, 3, accelerator, seed=11)

    model.zero_grad(set_to_none=True)
    torch.manual_seed(11)
    outs = [model(batch.image[i:i + 3], batch.text[i:i + 3]) for i in range(0, 8, 3)]
    image = torch.cat([o["image_features"] for o in outs])
    text = torch.cat([o["text_features"] for o in outs])
    objective(image, text, outs[0]["logit_scale"])["loss"].backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert_close(cached, reference)

    _, other_masks = grads(model, objective, batch, 3, accelerator, seed=12)
    assert not torch.allclose(other_masks["visual.conv1.weight"], cached["visual.conv1.weight"])


def test_nonfinite_loss_is_backpropagated_without_a_host_decision(accelerator):
    """Both paths backpropagate a NaN loss (no host read of the loss): the update skips the step on the device."""
    model, objective, batch = tiny_clip(), NaiveSoftmax(), random_batch(4)

    def nan_loss(image, text, logit_scale, **kwargs):
        terms = NaiveSoftmax()(image, text, logit_scale, **kwargs)
        return {**terms, "loss": terms["loss"] * float("nan")}

    for micro in (4, 2):
        model.zero_grad(set_to_none=True)
        out = compute_gradients(model, nan_loss, batch, micro, accelerator)
        assert out.terms["loss"].isnan()
        assert not torch.isfinite(model.visual.conv1.weight.grad).all()


def test_with_every_caption_read_the_main_caption_is_embedded_once(accelerator):
    """`data.captions: all` puts the main caption first among the captions: the text forward takes b·K rows, not
    b·(K+1), and the text features are the first caption's, equal to embedding the main caption alone."""
    from vlp.train.gradcache import forward_features

    torch.manual_seed(0)
    model, batch = tiny_clip().eval(), random_batch(4, negatives=2)
    extra = torch.randint(1, 1000, (4, 2, 16), generator=torch.Generator().manual_seed(1))
    batch.captions = torch.cat([batch.text[:, None], extra], dim=1)  # (4, 3, 16), main first
    batch.caption_mask = torch.ones(4, 3, dtype=torch.bool)
    rows, encode = [], model.encode_text
    model.encode_text = lambda text, normalize=False: (rows.append(text.shape[0]), encode(text, normalize))[1]
    with torch.no_grad():
        f = forward_features(model, batch, reads=("captions", "caption_mask"))
        alone = encode(batch.text, normalize=True)
    assert rows == [4 * 2 + 4 * 3]  # the negatives and the captions, no separate main caption
    torch.testing.assert_close(f.text, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f.captions[:, 0], f.text)
    assert f.negative_text.shape == (4, 2, f.text.shape[1])
