"""objective `coca`: open_clip's `CoCaLoss` (value and gradients), its recipe keys, and composition."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import CoCaLoss

import vlp.objectives as objectives
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
