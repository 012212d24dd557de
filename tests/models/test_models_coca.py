"""model.type coca: open_clip's CoCa built from a recipe, its forward's features and caption logits."""
from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

from helpers.coca_support import TINY_COCA
from vlp.models import build_model
from vlp.recipe import ConfigError, load_recipe
from vlp.recipe.schema import ModelConfig


def test_coca_forward_gives_normalised_features_and_next_token_logits():
    model, tokenizer = build_model(ModelConfig(type="coca", config=TINY_COCA))
    assert isinstance(model, open_clip.CoCa)
    text = tokenizer(["a red square", "a blue square", "a green square"])
    out = model(torch.randn(2, 3, 16, 16), text)
    assert out["image_features"].shape == (2, 32) and out["text_features"].shape == (3, 32)
    torch.testing.assert_close(out["text_features"].norm(dim=-1), torch.ones(3))
    assert out["logits"].shape == (2, text.shape[1] - 1, 49408)  # the images' captions only, shifted by one


def test_coca_forward_equals_open_clips_on_the_same_weights():
    model, tokenizer = build_model(ModelConfig(type="coca", config=TINY_COCA))
    reference = open_clip.CoCa(**{k: v for k, v in TINY_COCA.items()}).eval()
    reference.load_state_dict(model.state_dict())
    image, text = torch.randn(2, 3, 16, 16), tokenizer(["a red square", "a blue square"])
    ours, theirs = model.eval()(image, text), reference(image, text)
    for key in ("image_features", "text_features", "logits", "logit_scale"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


@pytest.mark.parametrize("model_type, config, message", [
    ("coca", {k: v for k, v in TINY_COCA.items() if k != "multimodal_cfg"}, "model.type: coca needs a CoCa config"),
    (None, TINY_COCA, "a CoCa config (multimodal_cfg) needs model.type: coca")])
def test_coca_type_and_config_go_together(model_type, config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(ModelConfig(type=model_type, config=config))


def test_coca_decoder_projection_is_drawn_rather_than_left_as_torch_empty():
    """open_clip leaves it uninitialised (garbage, at times NaN, so runs would differ from build to build)."""
    model, _ = build_model(ModelConfig(type="coca", config=TINY_COCA))
    projection = model.text_decoder.text_projection
    assert torch.isfinite(projection).all()
    assert projection.std().item() == pytest.approx(32 ** -0.5, rel=0.02)


def test_the_shipped_coca_recipe_builds_a_coca_that_captions_its_digits():
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "tiny-digits-coca.yaml")
    model, tokenizer = build_model(recipe.model)
    text = tokenizer(["a photo of the digit 7"])
    out = model(torch.randn(1, 3, 32, 32), text)
    assert isinstance(model, open_clip.CoCa) and out["logits"].shape == (1, 11, 49408)
    assert recipe.objective.name == "coca" and recipe.objective.params["caption_weight"] == 2.0


def test_a_coca_decoder_size_of_zero_names_its_key():
    config = {**TINY_COCA, "multimodal_cfg": {**TINY_COCA["multimodal_cfg"], "layers": 0}}
    with pytest.raises(ConfigError) as e:
        build_model(ModelConfig(type="coca", config=config))
    assert e.value.key == "model.config.multimodal_cfg.layers"
