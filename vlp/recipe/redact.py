"""Secrets out of a recipe before it leaves the machine (model card, tracker hyperparameters).

Shard specs may carry credentials: URLs with `user:password@` or signed query strings (S3/GCS/Azure signatures,
tokens), and `pipe:` commands with `Authorization` headers, `curl -u user:password`, token options or environment
assignments. Every string of the recipe is scrubbed, so a secret in any key is caught. The local RUN_DIR/recipe.yaml
is written unredacted: resuming needs the exact spec.
"""
from __future__ import annotations

import dataclasses
import re
from typing import TypeVar

MASK = "***"
_STOP = r"(?:(?!::)[^\s#\"'])"  # a URL ends at whitespace, a quote, a fragment or OpenCLIP's '::' source separator
_SECRET = r"(?:token|secret|pass|key|auth|bearer|credential|signature)"  # in option and variable names

_RULES = [
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']+@"), rf"\1{MASK}@"),  # scheme://user:password@host
    (re.compile(rf"(://(?:(?!::)[^\s?#\"'])*)\?{_STOP}+"), rf"\1?{MASK}"),  # any query string: signatures, tokens
    (re.compile(r"(?<!\S)(-H|--header)(\s+|=)(\"[^\"]*\"|'[^']*'|\S+)"), rf"\1\2{MASK}"),  # curl/wget headers
    (re.compile(r"(?i)\b(authorization\s*:\s*)(?:(?:bearer|basic|token)\s+)?[^\s\"']+"), rf"\1{MASK}"),
    (re.compile(r"(?<!\S)(-u|--user)(\s+|=)(\S*:\S*)"), rf"\1\2{MASK}"),  # curl -u user:password
    (re.compile(rf"(?i)(?<!\S)(--?[\w-]*{_SECRET}[\w-]*)(\s+|=)(?!-)\S+"), rf"\1\2{MASK}"),  # --token X, --api-key=X
    # HF_TOKEN=X, AWS_SECRET_ACCESS_KEY=X; not a dotted recipe key (data.label_key=cls names a field)
    (re.compile(rf"(?i)(?<![\w.-])(\w*{_SECRET}\w*)=\S+"), rf"\1={MASK}"),
    (re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16})\b"), MASK),  # bare tokens
]

T = TypeVar("T")


def redact_text(text: str) -> str:
    """`text` with every credential-looking part replaced by ***."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def redact(value: T) -> T:
    """A copy of a recipe (or any section, list, mapping or string in it) with every string passed through
    redact_text; use it wherever a recipe is written anywhere but the local run directory."""
    if isinstance(value, str):
        return redact_text(value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: redact(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, list):
        return [redact(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}  # type: ignore[return-value]
    return value
