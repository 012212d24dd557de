"""The CLIP_benchmark webdataset layout of an evaluation set: the one definition its writer (`data_tools.build`) and
its reader (`vlp.evaluate.datasets`) share.

DIR/{split}/0.tar, 1.tar, ... and DIR/{split}/nshards.txt with the shard count (CLIP_benchmark finds the shards
through it; without it a reader takes every *.tar there); DIR/classnames.txt and
DIR/zeroshot_classification_templates.txt (one per line); DIR/dataset_type.txt: "retrieval", "multilabel", anything
else or missing = classification.
A sample holds its image as webp|png|jpg|jpeg and `cls` (class index), `npy` (multi-hot, multi-label) or `txt`
(captions, one per line).
A binding set (vlp's, for the `binding` task) is a retrieval set whose captions are, per image, the true caption
followed by one false caption per kind named in DIR/binding_kinds.txt (one per line, in caption order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from vlp.evaluate.prompts import read_lines

CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILE = "zeroshot_classification_templates.txt"
DATASET_TYPE_FILE = "dataset_type.txt"
NSHARDS_FILE = "nshards.txt"
BINDING_KINDS_FILE = "binding_kinds.txt"
SHARD_PATTERN = "{}.tar"  # shard i of a split
CLASSIFICATION, MULTILABEL, RETRIEVAL = "classification", "multilabel", "retrieval"
IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")
LABEL_KEY, MULTILABEL_KEY, CAPTIONS_KEY = "cls", "npy", "txt"


def write_meta(root: Path, kind: str, classnames: Sequence[str] = (), templates: Sequence[str] = ()) -> None:
    """dataset_type.txt, and for a classification set its class names and templates."""
    root.mkdir(parents=True, exist_ok=True)
    (root / DATASET_TYPE_FILE).write_text(kind + "\n")
    if kind != RETRIEVAL:
        (root / CLASSNAMES_FILE).write_text("".join(f"{c}\n" for c in classnames))
        (root / TEMPLATES_FILE).write_text("".join(f"{t}\n" for t in templates))


def write_shard_count(split_dir: Path, count: int) -> None:
    (split_dir / NSHARDS_FILE).write_text(f"{count}\n")


def write_binding_kinds(root: Path, kinds: Sequence[str]) -> None:
    (root / BINDING_KINDS_FILE).write_text("".join(f"{k}\n" for k in kinds))


def join_captions(captions: Sequence[str]) -> str:
    """A sample's `txt` field: one caption per line (line breaks inside a caption become spaces)."""
    return "\n".join(c.replace("\n", " ") for c in captions)


def split_captions(field: bytes) -> list[str]:
    return [line for line in field.decode().splitlines() if line.strip()]


def read_kind(root: Path) -> str:
    kind_file = root / DATASET_TYPE_FILE
    kind = kind_file.read_text().strip().lower() if kind_file.is_file() else CLASSIFICATION
    return kind if kind in (MULTILABEL, RETRIEVAL) else CLASSIFICATION


def optional_lines(root: Path, name: str) -> Optional[list[str]]:
    """The non-blank lines of DIR/name (class names, templates), or None when the file is absent."""
    return read_lines(root / name) if (root / name).is_file() else None


def split_shards(root: Path, split: str, name: str) -> list[str]:
    """The shard paths of a split, in order; FileNotFoundError naming the eval set when there are none."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"eval set {name!r}: split directory {split_dir} not found")
    count_file = split_dir / NSHARDS_FILE
    if count_file.is_file():
        shards = [split_dir / SHARD_PATTERN.format(i) for i in range(int(count_file.read_text().strip()))]
        missing = [str(s) for s in shards if not s.is_file()]
        if missing:
            raise FileNotFoundError(f"eval set {name!r}: shards listed by {NSHARDS_FILE} are missing: {missing[:3]}")
    else:
        shards = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    if not shards:
        raise FileNotFoundError(f"eval set {name!r}: no .tar shards in {split_dir}")
    return [str(s) for s in shards]
