"""objective `coca`: open_clip's `CoCaLoss` (value and gradients), its recipe keys, composition, and two gloo
processes giving the one-process value and gradients."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import CoCaLoss

import vlp.objectives as objectives
from helpers.objective_inputs import join_gloo
from helpers.processes import free_port, spawn
from vlp.data.batch import Batch
from vlp.recipe import ConfigError
from vlp.recipe.schema import ObjectiveConfig, RegularizerConfig

B, L, V, D = 6, 7, 11, 5


def inputs(seed: int = 0):
    """Features, scale, caption token ids with trailing padding (id 0) and the decoder's logits for them."""
    g = torch.Generator().manual_seed(seed)
    x, y = (F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
            for _ in range(2))
    text = torch.randint(1, V, (B, L), generator=g)
    for row, length in enumerate((7, 5, 3, 6, 2, 4)):
        text[row, length:] = 0
    logits = torch.randn(B, L - 1, V, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)
    return x, y, t, text, logits


@pytest.mark.parametrize("caption_weight, contrastive_weight", [(2.0, 1.0), (0.5, 0.0), (1.0, 3.0)])
def test_coca_equals_open_clip_coca_loss(caption_weight, contrastive_weight):
    x, y, t, text, logits = inputs()
    ours = objectives.build("coca", caption_weight=caption_weight, contrastive_weight=contrastive_weight)(
        x, y, logit_scale=t, samples=Batch(torch.zeros(B, 3, 2, 2), text), caption_logits=logits)
    clip, caption = CoCaLoss(caption_loss_weight=caption_weight, clip_loss_weight=contrastive_weight)(
        x, y, logits, text[:, 1:], t)
    want = clip + caption
    torch.testing.assert_close(ours["loss"], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours["caption_loss"].double() * caption_weight, caption.detach(), atol=1e-6, rtol=0)
    leaves = (x, y, t, logits)
    # open_clip skips a contrastive term of weight 0, so the features are unused there: their gradient is 0
    wanted = torch.autograd.grad(want, leaves, allow_unused=True)
    for got, ref, leaf in zip(torch.autograd.grad(ours["loss"], leaves), wanted, leaves):
        torch.testing.assert_close(got, torch.zeros_like(leaf) if ref is None else ref, atol=1e-6, rtol=0)


def test_coca_from_the_recipe_composes_with_regularizers_and_other_contrastive_objectives():
    cfg = ObjectiveConfig(name="coca", params={"contrastive": "sigmoid", "caption_weight": 2.0},
                          regularizers=[RegularizerConfig(name="align", weight=0.5)])
    objective = objectives.build_from_config(cfg)
    x, y, t, text, logits = inputs(1)
    out = objective(x, y, logit_scale=t, logit_bias=torch.tensor(-3.0, dtype=torch.float64),
                    samples=Batch(torch.zeros(B, 3, 2, 2), text), caption_logits=logits)
    sigmoid = objectives.build("sigmoid")(x, y, logit_scale=t, logit_bias=torch.tensor(-3.0, dtype=torch.float64))
    want = sigmoid["loss"] + 2.0 * out["caption_loss"] + 0.5 * out["align_loss"]
    torch.testing.assert_close(out["loss"], want, atol=1e-6, rtol=0)
    assert objective.init_logit_bias == objectives.SigmoidLoss.init_logit_bias


@pytest.mark.parametrize("params, key", [
    ({"caption_weight": -1.0}, "objective.params.caption_weight"),
    ({"contrastive_weight": float("inf")}, "objective.params.contrastive_weight"),
    ({"contrastive": "coca"}, "objective.params.contrastive"),
    ({"contrastive": "multi_caption"}, "objective.params.contrastive"),
    ({"temperature": 0.1}, "objective.params")])
def test_coca_recipe_keys_out_of_bounds_name_their_key(params, key):
    with pytest.raises(ConfigError) as e:
        objectives.check(ObjectiveConfig(name="coca", params=params))
    assert e.value.key == key


def test_coca_without_caption_logits_says_which_model_it_needs():
    x, y, t, text, _ = inputs()
    with pytest.raises(ValueError, match="model.type: coca"):
        objectives.build("coca")(x, y, logit_scale=t, samples=Batch(torch.zeros(B, 3, 2, 2), text))


def test_contrastive_objectives_refuse_caption_logits():
    x, y, t, _, logits = inputs()
    with pytest.raises(ValueError, match="does not use caption_logits"):
        objectives.build("softmax")(x, y, logit_scale=t, caption_logits=logits)


WORLD = 2


def coca_terms(rows: slice):
    """Objective coca on `rows` of the global inputs: its terms and the gradients of its loss."""
    x, y, t, text, logits = inputs()
    leaves = [x.detach()[rows].requires_grad_(), y.detach()[rows].requires_grad_(), t,
              logits.detach()[rows].requires_grad_()]
    out = objectives.build("coca")(leaves[0], leaves[1], logit_scale=t,
                                   samples=Batch(torch.zeros(len(text[rows]), 3, 2, 2), text[rows]),
                                   caption_logits=leaves[3])
    return {k: v.detach() for k, v in out.items()}, torch.autograd.grad(out["loss"], leaves)


def worker(rank, port, out_dir):
    join_gloo(rank, port, WORLD)
    try:
        terms, grads = coca_terms(slice(rank * B // WORLD, (rank + 1) * B // WORLD))
        torch.save((terms, grads), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_equal_one_process_with_unequal_token_counts(tmp_path):
    """The ranks' rows hold 12 and 9 caption tokens: each rank's own mean would not average to the global mean."""
    port = free_port()
    spawn(worker, (port, str(tmp_path)), WORLD)
    want_terms, want_grads = coca_terms(slice(0, B))
    scale_grads = []
    for rank in range(WORLD):
        terms, grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key in ("loss", "caption_loss", "contrastive_loss"):
            torch.testing.assert_close(terms[key], want_terms[key], atol=1e-6, rtol=0)
        rows = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        # a rank's own rows get the gradient of every rank's loss, W × the global mean's (DDP divides by W)
        for got, want in zip((grads[0], grads[1], grads[3]), (want_grads[0], want_grads[1], want_grads[3])):
            torch.testing.assert_close(got / WORLD, want[rows], atol=1e-6, rtol=0)
        scale_grads.append(grads[2])
    torch.testing.assert_close(sum(scale_grads) / WORLD, want_grads[2], atol=1e-6, rtol=0)  # DDP's average
