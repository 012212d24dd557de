"""Recipe files → typed `Recipe`: YAML (safe_load only), `base:` inheritance, `--set` overrides, strict checking.

Every problem is raised as one `RecipeError` naming the file, the dotted key and what is wrong, before any work starts.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

import yaml

from vlp.recipe.bounds import Interval
from vlp.recipe.duration import Duration
from vlp.recipe.schema import REQUIRED, DataConfig, Recipe, SourceConfig


class RecipeError(ValueError):
    def __init__(self, file: str | Path, key: str, message: str):
        self.file, self.key, self.message = str(file), key, message
        super().__init__(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")


def load_recipe(path: str | Path, overrides: Iterable[str] = (), for_training: bool = False) -> Recipe:
    """Read `path` (following `base:`), apply `key.path=value` overrides, check everything, return the Recipe."""
    path = Path(path)
    raw = _read_with_bases(path, chain=())
    for item in overrides:
        _apply_override(raw, item, path)
    recipe = _build(Recipe, raw, "", path)
    _check_semantics(recipe, path, for_training)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain-YAML form of a recipe (durations as strings); loading it back gives an equal Recipe."""
    def plain(value):
        if isinstance(value, Duration):
            return str(value)
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


# ---------------------------------------------------------------- reading

def _read_yaml(path: Path, key: str = "") -> dict:
    if not path.is_file():
        raise RecipeError(path, key, "file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RecipeError(path, "", f"invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(path, "", f"a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def _read_with_bases(path: Path, chain: tuple) -> dict:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise RecipeError(path, "base", f"inheritance cycle: {cycle}")
    data = _read_yaml(path, "base" if chain else "")
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(path, "base", "expected a recipe path or a list of paths")
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            raise RecipeError(path, "base", f"base recipe {base!r} not found (looked at {base_path})")
        merged = _deep_merge(merged, _read_with_bases(base_path, (*chain, resolved)))
    return _deep_merge(merged, data)


def _deep_merge(base: dict, top: dict, cls=Recipe) -> dict:
    """Typed sections merge key by key; anything else in `top` (lists, free-form mappings such as model.config or
    objective.params) replaces the base value whole, so a child never inherits half of a model config."""
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for key, value in top.items():
        section = _dataclass_of(hints.get(key))
        if section is not None and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, section)
        else:
            out[key] = value
    return out


def _dataclass_of(tp):
    """The dataclass a field holds (through Optional), else None."""
    if tp is not None and typing.get_origin(tp) in (Union, types.UnionType):
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), None)
    return tp if dataclasses.is_dataclass(tp) else None


def _apply_override(raw: dict, item: str, path: Path) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(path, key or item, f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node: Any = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, where, path)]
            continue
        if not isinstance(node.get(part, {}), (dict, list)):
            raise RecipeError(path, where, "--set goes through a value that is not a section")
        node = node.setdefault(part, {})
    if isinstance(node, list):
        node[_list_index(node, parts[-1], key, path)] = value
    else:
        node[parts[-1]] = value


def _list_index(node: list, part: str, key: str, path: Path) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(path, key, f"list index {part!r} out of range (the list has {len(node)} items)")
    return int(part)


# ---------------------------------------------------------------- typing

def _build(cls, raw, key: str, path: Path):
    if not isinstance(raw, dict):
        raise RecipeError(path, key, f"expected a section (mapping), got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            guess = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean '{guess[0]}'?)" if guess else f"; valid keys: {', '.join(fields)}"
            raise RecipeError(path, _join(key, str(name)), f"unknown key{hint}")
    values = {}
    for name, f in fields.items():
        sub = _join(key, name)
        if name in raw:
            values[name] = _convert(raw[name], hints[name], sub, path)
            _check_range(values[name], f.metadata.get("interval"), sub, path)
        elif f.default is REQUIRED:
            raise RecipeError(path, sub, "missing required value")
    return cls(**values)


def _convert(value, tp, key: str, path: Path):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, path)
    if tp is Duration:
        try:
            return Duration.parse(value)
        except ValueError as e:
            raise RecipeError(path, key, str(e)) from None
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, path)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(path, key, f"expected a list, got {_describe(value)}")
        return [_convert(v, args[0], f"{key}[{i}]", path) for i, v in enumerate(value)]
    if origin is Literal:
        if value not in args:
            raise RecipeError(path, key, f"expected one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(path, key, f"expected a mapping, got {_describe(value)}")
        return value
    return _scalar(value, tp, key, path)


def _scalar(value, tp, key: str, path: Path):
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    if tp is str and isinstance(value, str):
        return value
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise RecipeError(path, key, f"expected {names.get(tp, tp)}, got {_describe(value)}")


def _check_range(value, interval: Optional[Interval], key: str, path: Path) -> None:
    """The range schema.py declares for the key (a list's items each under their own key)."""
    if interval is None or value is None:
        return
    problem = interval.problem(value)
    if problem:
        raise RecipeError(path, key, problem)
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_range(item, interval, f"{key}[{i}]", path)


def _describe(value) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {value!r}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ---------------------------------------------------------------- meaning

def _check_semantics(recipe: Recipe, path: Path, for_training: bool) -> None:
    m = recipe.model
    if (m.arch is None) == (m.config is None):
        raise RecipeError(path, "model", "set exactly one of model.arch (an open_clip name) or model.config")
    if m.arch is not None:
        import open_clip  # deferred: slow to import, only needed here

        known = open_clip.list_models()
        if m.arch not in known:
            guess = difflib.get_close_matches(m.arch, known, n=1, cutoff=0.6)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise RecipeError(path, "model.arch", f"unknown open_clip architecture {m.arch!r}{hint}")
    _check_objective(recipe, path)
    _check_data(recipe.data, path)
    t = recipe.train
    if for_training:
        if t.duration is None:
            raise RecipeError(path, "train.duration", "missing required value (e.g. '1000 steps')")
        if not recipe.data.train and not recipe.data.sources:
            raise RecipeError(path, "data.train", "missing required value: no training data (data.train or data.sources)")


def _check_data(d: DataConfig, path: Path) -> None:
    if d.train and d.sources:
        raise RecipeError(path, "data.sources", "set either data.train or data.sources, not both")
    if d.train_weights is None:
        return
    if not d.train:
        raise RecipeError(path, "data.train_weights", "needs data.train (one weight per '::'-separated source)")
    weights, specs = d.train_weights.split("::"), d.train.split("::")
    if len(weights) != len(specs):
        raise RecipeError(path, "data.train_weights",
                          f"has {len(weights)} entries for {len(specs)} sources in data.train")
    weight_range = {f.name: f for f in dataclasses.fields(SourceConfig)}["weight"].metadata["interval"]
    for i, text in enumerate(weights):  # each becomes a source's weight: the same type and range
        key = f"data.train_weights[{i}]"
        _check_range(_scalar(text, float, key, path), weight_range, key, path)


def _check_objective(recipe: Recipe, path: Path) -> None:
    from vlp import objectives  # deferred: imports torch

    o = recipe.objective
    known = objectives.names()
    if o.name not in known:
        guess = difflib.get_close_matches(o.name, known, n=1, cutoff=0.5)
        hint = f" (did you mean '{guess[0]}'?)" if guess else f"; registered: {', '.join(known)}"
        raise RecipeError(path, "objective.name", f"unknown objective {o.name!r}{hint}")
    try:
        objectives.check_params(o.name, o.params)
    except ValueError as e:
        raise RecipeError(path, "objective.params", str(e)) from None
    for i, reg in enumerate(o.regularizers):
        if reg.name not in objectives.regularizer_names():
            raise RecipeError(path, f"objective.regularizers[{i}].name",
                              f"unknown regularizer {reg.name!r}; registered: {', '.join(objectives.regularizer_names())}")
    try:
        objectives.check_config(o)  # combinations that mean nothing, e.g. tiled hard_negative
    except objectives.ObjectiveConfigError as e:
        raise RecipeError(path, e.key, e.message) from None
