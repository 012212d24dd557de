"""Building objectives by name and from the recipe section; meaningless combinations are clear errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vlp.objectives as objectives
from vlp.recipe import ConfigError, load_recipe
from vlp.recipe.schema import ObjectiveConfig, RegularizerConfig


def test_registered_names():
    """The names vlp itself registers (plugins other tests load may add theirs)."""
    own = [n for n in objectives.names() if objectives.get(n).__module__.startswith("vlp.")]
    assert own == ["clip_cua", "clip_cuaxu", "coca", "dcl", "debiased", "hard_negative", "isogclr", "macl",
                                  "masked_softmax", "multi_caption", "sigmoid", "softmax", "supcon", "uniformity"]
    assert objectives.regularizer_names() == ["align", "cross_uniform", "uniform"]


def test_init_logit_scale_and_bias():
    assert objectives.build("softmax").init_logit_scale == pytest.approx(math.log(1 / 0.07))
    assert objectives.build("softmax").init_logit_bias is None
    sigmoid = objectives.build_from_config(ObjectiveConfig(name="sigmoid", regularizers=[RegularizerConfig("align")]))
    assert (sigmoid.init_logit_scale, sigmoid.init_logit_bias) == (pytest.approx(math.log(10)), -10.0)


def test_recipe_params_exclude_execution_options():
    assert objectives.recipe_parameters("softmax") == ["label_smoothing", "image_to_text_weight", "text_to_image_weight"]
    assert objectives.recipe_parameters("clip_cua") == objectives.recipe_parameters("softmax")
    with pytest.raises(ValueError, match="set objective.tiled"):
        objectives.check_params("softmax", {"tiled": True})
    with pytest.raises(ValueError, match="no parameter 'alpha'"):
        objectives.check_params("uniformity", {"alpha": 1.0})


def test_preset_weights_are_overridden_and_extended_by_the_recipe():
    cfg = ObjectiveConfig(name="clip_cua", regularizers=[RegularizerConfig("align", 0.25),
                                                         RegularizerConfig("cross_uniform", 2.0)])
    built = objectives.build_from_config(cfg)
    assert [(name, weight) for name, _, weight in built.regularizers] == [
        ("align", 0.25), ("uniform", 1.0), ("cross_uniform", 2.0)]
    x = F.normalize(torch.randn(6, 4), dim=1)
    y = F.normalize(torch.randn(6, 4), dim=1)
    out = built(x, y, torch.tensor(5.0))
    expected = out["contrastive_loss"] + 0.25 * out["align_loss"] + out["uniform_loss"] + 2 * out["cross_uniform_loss"]
    torch.testing.assert_close(out["loss"], expected)


def test_plain_objective_without_regularizers_is_not_wrapped():
    assert type(objectives.build_from_config(ObjectiveConfig(name="dcl"))) is objectives.DecoupledLoss


@pytest.mark.parametrize("cfg,key,message", [
    (ObjectiveConfig(name="hard_negative", tiled=True), "objective.tiled", "no tiled form"),
    (ObjectiveConfig(name="dcl", tiled=True), "objective.tiled", "no tiled form"),
    (ObjectiveConfig(name="uniformity", tiled=True, tile_size=0), "objective.tile_size", "at least 1, got 0"),
    (ObjectiveConfig(name="softmax", gather="ring"), "objective.gather", "ring is for sigmoid"),
    (ObjectiveConfig(name="uniformity", gather="local_loss"), "objective.gather", "regularizer_features"),
    (ObjectiveConfig(name="softmax", tiled=True, tile_size=0), "objective.tile_size", "at least 1, got 0"),
    (ObjectiveConfig(name="softmax", params={"label_smoothing": 1.5}), "objective.params", "label_smoothing"),
    (ObjectiveConfig(name="hard_negative", params={"beta": -1}), "objective.params", "beta"),
    (ObjectiveConfig(name="softmax", params={"gamma": 1}), "objective.params", "no parameter 'gamma'"),
    (ObjectiveConfig(name="sofmax"), "objective.name", "unknown objective"),
    (ObjectiveConfig(regularizers=[RegularizerConfig("alignment")]), "objective.regularizers[0].name", "unknown"),
    (ObjectiveConfig(regularizers=[RegularizerConfig("align"), RegularizerConfig("align")]),
     "objective.regularizers[1].name", "twice"),
    (ObjectiveConfig(regularizers=[RegularizerConfig("align", float("nan"))]), "objective.regularizers[0].weight",
     "finite"),
    (ObjectiveConfig(regularizer_features="everywhere"), "objective.regularizer_features",
     "expected one of 'local', 'global'"),
])
def test_meaningless_configs_are_rejected(cfg, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        objectives.check(cfg)
    assert info.value.key == key


def test_bad_inputs_give_clear_errors():
    softmax, x = objectives.build("softmax"), F.normalize(torch.randn(4, 3), dim=1)
    with pytest.raises(ValueError, match="hard_negative"):
        softmax(x, x, 1.0, negative_text_features=torch.zeros(4, 1, 3))
    with pytest.raises(ValueError, match="same shape"):
        softmax(x, x[:3], 1.0)
    with pytest.raises(ValueError, match="scalar"):
        softmax(x, x, torch.ones(2))
    with pytest.raises(ValueError, match=r"\(batch, K, dim\)"):
        objectives.build("hard_negative")(x, x, 1.0, negative_text_features=torch.zeros(4, 3))


def test_recipe_selects_an_objective(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {config: {embed_dim: 8}}\n"
                      "objective:\n  name: sigmoid\n  tiled: true\n  gather: ring\n"
                      "  regularizers: [{name: uniform, weight: 0.1}]\n")
    cfg = load_recipe(recipe).objective
    built = objectives.build_from_config(cfg)
    assert isinstance(built.base, objectives.SigmoidLoss) and built.base.tiled and built.base.gather == "ring"
    assert built.tiled and built.tile_size == 1024  # the regularizers are tiled with the base
    assert built.regularizers[0][0::2] == ("uniform", 0.1)
