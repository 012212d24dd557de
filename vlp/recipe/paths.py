"""The local paths a recipe names (shards, eval sets, prompt files, weights to start from), checked when it is loaded
for work, before any: a missing one is one ConfigError naming the key, the path and how it was resolved.

A relative path resolves against the current directory (where the readers open it: webdataset, open_clip and
`datasets` do the same), not against the recipe's folder; messages say so, since a recipe run from another
directory meets exactly this. Remote specs (s3://, gs://, http(s)://, hf://, `pipe:` commands) are not checked:
only reading them tells, and a check would run the pipe's command or need the network.
"""
from __future__ import annotations

from pathlib import Path

from vlp.recipe.errors import ConfigError

PIPE = "pipe:"


def is_remote(spec: str) -> bool:
    """Whether `spec` names something only its reader can reach (a URL or a `pipe:` command)."""
    return "://" in spec or spec.lstrip().startswith(PIPE)


def resolved(path: str) -> str:
    """`path` as a message shows it: quoted, and for a relative one what it was resolved against."""
    if Path(path).is_absolute():
        return repr(path)
    return f"{path!r} (resolved against the current directory {Path.cwd()})"


def require_path(key: str, path: str, what: str = "no such file or folder") -> None:
    """ConfigError for `key` when the local `path` does not exist (a remote one is left to its reader)."""
    if not is_remote(path) and not Path(path).exists():
        raise missing(key, path, what)


def missing(key: str, path: str, what: str) -> ConfigError:
    hint = "" if Path(path).is_absolute() else ", or run from the folder it is relative to"
    return ConfigError(key, f"{what} {resolved(path)}; fix the path{hint}")
