"""Every recipe shipped in recipes/ is complete and valid: known keys, resolvable model and objective names."""
import re
from pathlib import Path

import pytest

from vlp.objectives import build_from_config
from vlp.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
EVAL_ONLY = {"eval-suite.yaml"}


def test_recipes_are_shipped():
    names = {p.name for p in RECIPES}
    assert {"tiny-digits.yaml", "clip-vit-b32-datacomp.yaml", "siglip-vit-b16.yaml", "lit-vit-b16.yaml",
            "negclip-finetune.yaml", "eval-suite.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_and_validates(path):
    # the data they name lives on the machines they were written for, not here
    recipe = load_recipe(path, for_training=path.name not in EVAL_ONLY, files=False)
    build_from_config(recipe.objective)  # parameters and options combine into a real objective
    if path.name in EVAL_ONLY:
        assert recipe.eval.datasets, "an eval recipe lists datasets"


def test_recipes_claiming_a_ring_exchange_configure_it():
    """A description (or the README's recipe table) promises a ring exchange only where the recipe sets it."""
    readme = (RECIPES[0].parent.parent / "README.md").read_text()
    gather = {}
    for path in RECIPES:
        recipe = load_recipe(path)
        in_readme = re.search(rf"`{re.escape(path.name)}`[^\n]*\bring\b", readme)
        if re.search(r"\bring\b", recipe.description) or in_readme:
            gather[path.name] = recipe.objective.gather
    assert "siglip-vit-b16.yaml" in gather
    assert set(gather.values()) == {"ring"}, gather
