"""Architecture rules read off the source: which module may spell what."""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from vlp.models import DualEncoder, build_model, load_pretrained, register_tower
from vlp.recipe import ModelConfig

PACKAGE = Path(__file__).resolve().parents[2] / "vlp"


# ---- point 1: vlp/run_dir.py alone spells the names of a run's files and folders ----

RUN_DIR_MODULE = PACKAGE / "run_dir.py"
RUN_FILES = {"recipe.yaml", "metrics.jsonl", "eval_results.json", "bad_samples.json", "demo_report.json", "report.html",
             "state.json", "model.safetensors", "ema.safetensors", "checkpoints/latest", ".vlp-export"}
# flagged where used as a path: `x / "plots"`, == "latest"
RUN_FOLDERS = {"checkpoints", "latest", "plots", "export", "pictures", "tensorboard"}
# checkpoint, generator-file and temporary names, whole or as the literal piece of an f-string
GENERATED_NAME = re.compile(r"^(step_|rng_)(\d.*|\*.*)?$|^\.tmp-")
_PATH_CALLS = {"Path", "joinpath", "with_name", "glob", "rglob"}


def _docstrings(tree: ast.AST) -> set[int]:
    bodies = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                                          ast.AsyncFunctionDef))]
    return {id(n.body[0].value) for n in bodies
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _used_as_path(node: ast.Constant, parent: ast.AST) -> bool:
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div) or isinstance(parent, ast.Compare):
        return True
    if isinstance(parent, ast.Call):
        func = parent.func
        return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) in _PATH_CALLS
    return False


def run_path_literals(path: Path) -> list[str]:
    """`file:line: 'name'` for each string constant (not a docstring) that spells a run's file or folder name."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
            continue
        value = node.value
        if (value in RUN_FILES or GENERATED_NAME.match(value)
                or value in RUN_FOLDERS and _used_as_path(node, parents.get(id(node)))):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {value!r}")
    return found


def test_only_run_dir_spells_the_run_file_names():
    """Every module asks vlp.run_dir for a run's paths (the model card once read a key training never wrote)."""
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) if path != RUN_DIR_MODULE
                 for hit in run_path_literals(path)]
    assert not offenders, "spell these through vlp.run_dir.RunDir / Checkpoint:\n" + "\n".join(offenders)
    # the scan is not vacuous: it finds every name where they are defined
    spelled = {hit.split(": ", 1)[1].strip("'") for hit in run_path_literals(RUN_DIR_MODULE)}
    assert RUN_FILES - {"checkpoints/latest"} <= spelled and {"step_", ".tmp-"} <= spelled


# ---- point 2: towers behind the DualEncoder contract; nothing attached to open_clip's objects ----

TOY_CONTEXT = 12


def toy_tokenizer(captions: list[str]) -> torch.Tensor:
    """Caption bytes, zero-padded: a tokenizer is any callable from captions to token ids."""
    ids = [list(c.encode()[:TOY_CONTEXT]) for c in captions]
    return torch.tensor([row + [0] * (TOY_CONTEXT - len(row)) for row in ids])


class ToyTower(torch.nn.Module):
    """A dual encoder that is no open_clip model: a linear map of the pixels and a bag of caption bytes."""

    def __init__(self, dim: int, image_size: int, logit_scale: float, logit_bias: float | None):
        super().__init__()
        self.image = torch.nn.Linear(3 * image_size * image_size, dim)
        self.text = torch.nn.EmbeddingBag(256, dim, padding_idx=0)
        self.logit_scale = torch.nn.Parameter(torch.tensor(logit_scale))
        self.logit_bias = None if logit_bias is None else torch.nn.Parameter(torch.tensor(logit_bias))
        self.tokenizer = toy_tokenizer
        self.preprocess_cfg = {"size": image_size}

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.image(image.flatten(1))
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        x = self.text(text)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict:
        out = {"image_features": self.encode_image(image, normalize=True),
               "text_features": self.encode_text(text, normalize=True), "logit_scale": self.logit_scale.exp()}
        return out if self.logit_bias is None else {**out, "logit_bias": self.logit_bias}


@register_tower("toy")
def build_toy(model_cfg: ModelConfig, logit_scale: float | None, logit_bias: float | None) -> ToyTower:
    scale = math.log(1 / 0.07) if logit_scale is None else logit_scale
    return ToyTower(model_cfg.config["dim"], model_cfg.config["image_size"], scale, logit_bias)


class CheckpointedToyTower(ToyTower):
    """The toy with open_clip's grad-checkpointing switch, recording what it was told."""

    checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.checkpointing = enable


@register_tower("toy_checkpointed")
def build_checkpointed_toy(model_cfg: ModelConfig, logit_scale: float | None,
                           logit_bias: float | None) -> CheckpointedToyTower:
    return CheckpointedToyTower(model_cfg.config["dim"], model_cfg.config["image_size"], 0.0, logit_bias)


register_tower("not_a_dual_encoder")(lambda model_cfg, scale, bias: torch.nn.Linear(2, 2))


def test_registered_toy_tower_trains_reloads_and_refuses_export(tmp_path):
    from helpers.train_support import make_shards, recipe_dict, write_recipe

    from vlp.export.api import export
    from vlp.export.layers import NotExportable
    from vlp.train import train

    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path,
                         duration="3 steps", checkpoint_every="3 steps", batch_size=4)
    recipe["model"] = {"type": "toy", "config": {"dim": 8, "image_size": 16}}
    recipe["objective"]["name"] = "sigmoid"
    result = train(write_recipe(tmp_path / "run.yaml", recipe))
    assert result.step == 3
    model, _, tokenizer, _ = load_pretrained(result.run_dir)
    assert isinstance(model, ToyTower) and isinstance(model, DualEncoder) and tokenizer is toy_tokenizer
    torch.manual_seed(0)  # the run's seed: these are its initial weights, which training moved
    initial, _ = build_model(ModelConfig(type="toy", config={"dim": 8, "image_size": 16}), 0.0, -10.0)
    assert not torch.equal(model.image.weight, initial.image.weight)
    assert model.logit_bias is not None and model.logit_bias.item() != -10.0
    with pytest.raises(NotExportable, match="not an open_clip tower"):
        export(result.run_dir, tmp_path / "export", formats=["open_clip"])


def test_tower_builder_must_return_a_dual_encoder():
    with pytest.raises(TypeError, match="DualEncoder"):
        build_model(ModelConfig(type="not_a_dual_encoder", config={}))
    with pytest.raises(ValueError, match="unknown tower type .nope."):
        build_model(ModelConfig(type="nope", config={}))


def test_a_registered_tower_that_ignores_locking_is_refused():
    from vlp.recipe.errors import ConfigError

    with pytest.raises(ConfigError, match="model.lock_image: tower type 'toy' froze no parameter"):
        build_model(ModelConfig(type="toy", config={"dim": 8, "image_size": 16}, lock_image=True))
    model, _ = build_model(ModelConfig(type="toy", config={"dim": 8, "image_size": 16}))  # not asked: built
    assert all(p.requires_grad for p in model.parameters())


def test_a_registered_towers_grad_checkpointing_is_turned_on_or_refused_and_patch_dropout_warns():
    from vlp.recipe.errors import ConfigError

    toy = {"dim": 8, "image_size": 16}
    model, _ = build_model(ModelConfig(type="toy_checkpointed", config=toy, grad_checkpointing=True))
    assert model.checkpointing
    assert not build_model(ModelConfig(type="toy_checkpointed", config=toy))[0].checkpointing
    with pytest.raises(ConfigError, match="model.grad_checkpointing: tower type 'toy' has no set_grad_checkpointing"):
        build_model(ModelConfig(type="toy", config=toy, grad_checkpointing=True))
    with pytest.warns(UserWarning, match="model.patch_dropout: tower type 'toy' is trusted to apply it"):
        build_model(ModelConfig(type="toy", config=toy, patch_dropout=0.5))


def test_vlp_attaches_nothing_to_open_clip_objects():
    """vlp's model is its own subclass (trimming is a real method override); every open_clip module inside it has
    exactly the attributes open_clip's own factory gives it, and the state_dict keys are open_clip's."""
    from helpers.train_support import TINY_MODEL

    model, _ = build_model(ModelConfig(config=TINY_MODEL, grad_checkpointing=True))
    assert type(model).__module__.startswith("vlp.") and isinstance(model, open_clip.CLIP) and model.trim_text
    assert "encode_text" not in vars(model) and "forward" not in vars(model)
    reference = open_clip.CLIP(**TINY_MODEL, output_dict=True)
    open_clip.model.set_model_preprocess_cfg(reference, model.preprocess_cfg)  # as open_clip.create_model does
    reference.set_grad_checkpointing(True)
    ours, theirs = dict(model.named_modules()), dict(reference.named_modules())
    assert ours.keys() == theirs.keys() and model.state_dict().keys() == reference.state_dict().keys()
    for name in set(theirs) - {""}:
        assert vars(ours[name]).keys() == vars(theirs[name]).keys(), name


# ---- point 7: data_tools builds on vlp, never the reverse; one sizes.json and one HF loader ----

REPO = PACKAGE.parent
DATA_TOOLS_EDGE = {"vlp/data/cli.py", "vlp/demo.py"}  # `vlp data ...` and `vlp demo` run data_tools' code


def data_tools_imports(path: Path) -> list[tuple[str, bool]]:
    """(`file:line`, whether inside a function) for each import of data_tools in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    in_function = {id(inner) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for inner in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        if any(m == "data_tools" or m.startswith("data_tools.") for m in modules):
            found.append((f"{path.relative_to(REPO)}:{node.lineno}", id(node) in in_function))
    return found


def test_vlp_reaches_data_tools_only_lazily_at_the_cli_edge():
    found = {path.relative_to(REPO).as_posix(): data_tools_imports(path) for path in sorted(PACKAGE.rglob("*.py"))}
    offenders = [where for file, hits in found.items() for where, lazy in hits
                 if file not in DATA_TOOLS_EDGE or not lazy]
    assert not offenders, "vlp must not import data_tools (data_tools imports vlp):\n" + "\n".join(offenders)
    assert all(found[file] for file in DATA_TOOLS_EDGE)  # the scan sees the imports it allows


def _source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + sorted((REPO / "data_tools").rglob("*.py"))


def _spells(path: Path, text: str) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    return any(isinstance(n, ast.Constant) and n.value == text for n in ast.walk(tree))


def _calls(path: Path, names: set[str]) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in names
               for n in ast.walk(tree))


def test_one_definition_of_sizes_json_and_one_hf_loader():
    """Shard writers and readers share vlp.data.sizes; training, evaluation and data_tools open HF datasets through
    vlp.data.hf.open_hf_dataset."""
    assert [p for p in _source_files() if _spells(p, "sizes.json")] == [PACKAGE / "data" / "sizes.py"]
    loaders = [p for p in _source_files() if _calls(p, {"load_from_disk", "load_dataset"})]
    assert loaders == [PACKAGE / "data" / "hf.py"]


# ---- point 5: one validation path: each section's rules live in its owner's `check`, called once by the loader ----

ONE_MODEL = "model: {config: {embed_dim: 8}}\n"


@pytest.mark.parametrize("section", ["model", "data", "objective", "eval"])
def test_the_loader_checks_each_section_once_through_its_owner(tmp_path, monkeypatch, capsys, section):
    from importlib import import_module

    from vlp.cli import main
    from vlp.recipe import ConfigError
    from vlp.recipe.check import OWNERS

    seen = []

    def owner_rejects(cfg):
        seen.append(cfg)
        raise ConfigError(f"{section}.probe", "rejected by the section's owner")

    monkeypatch.setattr(import_module(OWNERS[section]), "check", owner_rejects)
    path = tmp_path / "recipe.yaml"
    path.write_text(ONE_MODEL)
    assert main(["recipe", "show", "--check", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {path}: {section}.probe: rejected by the section's owner"
    assert len(seen) == 1 and type(seen[0]).__name__.lower().startswith(section)


def _built_in_python():
    """(recipe overrides, the same section built in Python and handed to the code that uses it)."""
    from vlp import objectives
    from vlp.data.open_sources import load_sources
    from vlp.evaluate import evaluate
    from vlp.recipe import DataConfig, EvalConfig, ObjectiveConfig, RegularizerConfig, SourceConfig

    return [
        (["model.patch_dropout=1.5"], lambda: build_model(ModelConfig(config={"embed_dim": 8}, patch_dropout=1.5))),
        (["objective.tile_size=0"], lambda: objectives.build_from_config(ObjectiveConfig(tiled=True, tile_size=0))),
        (["objective.regularizers=[{name: align, weight: -1}]"],
         lambda: objectives.build_from_config(ObjectiveConfig(regularizers=[RegularizerConfig("align", -1.0)]))),
        (["objective.gather=local_loss", "objective.name=uniformity"],
         lambda: objectives.build_from_config(ObjectiveConfig(name="uniformity", gather="local_loss"))),
        (["data.train=a.tar", "data.train_weights=1::2"],
         lambda: load_sources(DataConfig(train="a.tar", train_weights="1::2"))),
        (["data.train=a.tar", "data.sources=[{shards: b.tar}]"],
         lambda: load_sources(DataConfig(train="a.tar", sources=[SourceConfig(shards="b.tar")]))),
        (["eval.batch_size=0"], lambda: evaluate(None, None, None, EvalConfig(batch_size=0))),
    ]


def test_sections_built_in_python_meet_the_same_rules_as_recipes(tmp_path):
    from vlp.recipe import ConfigError, RecipeError, load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(ONE_MODEL)
    for overrides, use in _built_in_python():
        with pytest.raises(RecipeError) as from_recipe:
            load_recipe(path, overrides)
        with pytest.raises(ConfigError) as from_python:
            use()
        assert (from_python.value.key, from_python.value.message) == (from_recipe.value.key,
                                                                     from_recipe.value.message), overrides


def _string_sets(path: Path):
    """(line, set of strings) for each tuple, list or set literal (Literal[...] included) of strings in `path`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            strings = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if len(strings) >= 2:
                yield node.lineno, strings


def test_the_choices_of_gather_and_regularizer_features_are_written_once():
    import typing

    from vlp.recipe import schema

    for choices in (schema.GatherMode, schema.RegularizerFeatures):
        values = set(typing.get_args(choices))
        where = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
                 for line, strings in _string_sets(path) if values <= strings]
        assert len(where) == 1 and where[0].startswith("vlp/recipe/schema.py:"), (values, where)


# the phrase of each rule that the loader, a builder or a base class once repeated
RULE_PHRASES = ["set either data.train or data.sources", "entries for", "no training data", "has no tiled form",
                "supports gather", "no contrastive term;", "set exactly one of", "expected one of", "listed twice"]


def test_each_rule_is_stated_in_one_module():
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    for phrase in RULE_PHRASES:
        holders = [str(path.relative_to(PACKAGE.parent)) for path, text in sources.items() if phrase in text]
        assert len(holders) == 1, (phrase, holders)
