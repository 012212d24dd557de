"""Recipe files → typed `Recipe`: YAML (safe_load only), `base:` inheritance, `--set` overrides, strict typing; then
`check_recipe` holds each section to its owner's rules.

Every problem is raised as one `RecipeError` naming the file, the dotted key and what is wrong, before any work starts.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Union

import yaml

from vlp.recipe.bounds import without_none
from vlp.recipe.check import check_recipe
from vlp.recipe.duration import Duration
from vlp.recipe.errors import RecipeError, describe, did_you_mean
from vlp.recipe.redact import redact_text
from vlp.recipe.schema import REQUIRED, Recipe


def load_recipe(path: str | Path, overrides: Iterable[str] = (), for_training: bool = False, *,
                files: bool = True, objective: bool = True) -> Recipe:
    """Read `path` (following `base:`), apply `key.path=value` overrides, check everything (`check_recipe`: with
    `for_training`, also that each local path exists unless `files` is false; `objective` false skips the objective's
    own rules, which import torch), return the Recipe."""
    path = Path(path)
    raw = _read_with_bases(path, chain=())
    overrides = list(overrides)
    try:
        for item in overrides:
            _apply_override(raw, item, path)
        recipe = _build(Recipe, raw, "", path)
        check_recipe(recipe, path, for_training, files=files, objective=objective)
    except RecipeError as e:
        raise _blamed(e, overrides) from None
    return recipe


def _blamed(error: RecipeError, overrides: list[str]) -> RecipeError:
    """`error` charged to the last `--set` that wrote its key (or a section above it), else to the recipe file."""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if key and (error.key == key or error.key.startswith((f"{key}.", f"{key}["))):
            return RecipeError(f"--set {redact_text(item)}", error.key, error.message)
    return error


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
    tp = without_none(tp)
    return tp if dataclasses.is_dataclass(tp) else None


def _apply_override(raw: dict, item: str, path: Path) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(path, key or item, f"expected KEY=VALUE, got {item!r}")
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
            raise RecipeError(path, where, "goes through a value that is not a section")
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
        raise RecipeError(path, key, f"expected a section (mapping), got {describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in raw:
        if name not in fields:
            hint = did_you_mean(str(name), list(fields), f"; valid keys: {', '.join(fields)}")
            raise RecipeError(path, _join(key, str(name)), f"unknown key{hint}")
    values = {}
    for name, f in fields.items():
        sub = _join(key, name)
        if name in raw:
            values[name] = _convert(raw[name], hints[name], sub, path)
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
        return _convert(value, without_none(tp), key, path)
    if tp is Duration:
        try:
            return Duration.parse(value)
        except ValueError as e:
            raise RecipeError(path, key, str(e)) from None
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, path)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(path, key, f"expected a list, got {describe(value)}")
        return [_convert(v, args[0], f"{key}[{i}]", path) for i, v in enumerate(value)]
    if origin is Literal:  # which of the choices: check_recipe, with every other allowed-value rule
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(path, key, f"expected a mapping, got {describe(value)}")
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
    raise RecipeError(path, key, f"expected {names.get(tp, tp)}, got {describe(value)}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
