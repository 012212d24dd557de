"""Class names and prompt templates for zero-shot classification.

A template is a string with a `{c}` placeholder (replaced by the class name); instead of templates a dataset may give
per-class prompt lists ({class name: [prompt, ...]}, e.g. CuPL). Sources, in a recipe's `classnames` / `templates`:
- "imagenet": the 1000 ImageNet class names / the 80 OpenAI ImageNet templates, taken from open_clip's
  `zero_shot_metadata` (the lists CLIP was evaluated with).
- a `.txt` file: one class name / template per line (blank lines ignored).
- a `.json` file: a list of strings; for templates also a {class name: [prompts]} mapping.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

Templates = Union[list[str], dict[str, list[str]]]
BUILTIN = "imagenet"


def imagenet_classnames() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def openai_imagenet_templates() -> list[str]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    # open_clip stores them as functions of the class name; calling one with "{c}" gives back the template text.
    return [template("{c}") for template in OPENAI_IMAGENET_TEMPLATES]


def imagenet_prompts() -> tuple[list[str], list[str]]:
    """(ImageNet class names, OpenAI ImageNet templates)."""
    return imagenet_classnames(), openai_imagenet_templates()


def load_classnames(spec: str) -> list[str]:
    if spec == BUILTIN:
        return imagenet_classnames()
    value = _read_list_or_json(spec)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise ValueError(f"{spec}: class names must be a non-empty list of strings")
    return value


def load_templates(spec: str) -> Templates:
    if spec == BUILTIN:
        return openai_imagenet_templates()
    value = _read_list_or_json(spec)
    ok_list = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    ok_dict = isinstance(value, dict) and value and all(
        isinstance(v, list) and v and all(isinstance(p, str) for p in v) for v in value.values())
    if not (ok_list or ok_dict):
        raise ValueError(f"{spec}: templates must be a non-empty list of strings or a {{class: [prompts]}} mapping")
    return value


def expand_prompts(classnames: list[str], templates: Templates) -> tuple[list[str], list[int]]:
    """All prompts, and the class index of each, for `class_embeddings`."""
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    if isinstance(templates, dict):
        missing = [c for c in classnames if c not in templates]
        if missing:
            raise ValueError(f"per-class prompts missing for {len(missing)} classes, e.g. {missing[:3]}")
        per_class = [templates[c] for c in classnames]
    else:
        without = [t for t in templates if "{c}" not in t]
        if not templates or without:
            raise ValueError(f"every template needs a {{c}} placeholder; offending: {without[:3]}")
        per_class = [[t.replace("{c}", c) for t in templates] for c in classnames]
    prompts = [p for prompts in per_class for p in prompts]
    owners = [i for i, prompts in enumerate(per_class) for _ in prompts]
    return prompts, owners


def read_lines(path: Union[str, Path]) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def _read_list_or_json(spec: str):
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: file not found (or use \"{BUILTIN}\" for the built-in ImageNet lists)")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{spec}: invalid JSON: {e}") from None
    return read_lines(path)
