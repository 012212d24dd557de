"""Eval set readers: CLIP_benchmark webdataset directory, image folder, or HF dataset saved with `save_to_disk`.

Each reader gives an `EvalSet`: its samples are (PIL image, target) where the target is a class index, a multi-hot
vector (multi-label sets) or a list of captions, plus class names / templates. A set comes in parts (shards, chunks
of files, row ranges) that can be read independently, so DataLoader workers share a set (`vlp.evaluate.stream`).
Which targets are read (class labels or captions) is the task's `targets`.

CLIP_benchmark layout (`type: wds`): see `vlp.evaluate.layout`; its tar shards are read by the training reader.
Image folder (`type: imagefolder`): DIR/{split}/CLASS/*.jpg, or DIR/CLASS/*.jpg when DIR/{split} does not exist;
class names are the folder names with "_" read as a space unless DIR/classnames.txt exists.
HF (`type: hf`): `vlp.data.hf.open_hf_dataset(DIR, split)`; class names come from the
label column's ClassLabel feature (a Sequence of ClassLabel = multi-label); captions are read from `caption_column`
(a string or a list of strings per row).
Without a templates file, image folders and HF sets use the OpenAI ImageNet templates.
"""
from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Sequence

import numpy as np
from PIL import Image

from vlp.data.hf import open_hf_dataset
from vlp.evaluate import layout
from vlp.evaluate.prompts import Templates, load_classnames, load_templates, openai_imagenet_templates
from vlp.recipe.schema import EvalDatasetConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
FILES_PER_PART = 256  # image-folder files (and HF rows) per part: the unit of work of one DataLoader worker


@dataclass
class EvalSet:
    name: str
    parts: Sequence[Any]  # independently readable pieces, in set order
    read: Callable[[Any], Iterator[tuple[Image.Image, Any]]]  # the samples of one part, in order
    classnames: Optional[list[str]] = None
    templates: Optional[Templates] = None
    multilabel: bool = False
    limit: Optional[int] = None  # only the first `limit` samples belong to the set

    def samples(self) -> Iterator[tuple[Image.Image, Any]]:
        """Every (image, target) in set order, read in this process."""
        return itertools.islice(itertools.chain.from_iterable(map(self.read, self.parts)), self.limit)


def open_eval_set(cfg: EvalDatasetConfig, targets: Literal["labels", "captions"]) -> EvalSet:
    """The set `cfg` names, with class labels or captions as its targets (a task's `targets`: `Task.open_set`)."""
    path = Path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"eval set {cfg.name!r}: {cfg.path} does not exist")
    reader = {"wds": _open_wds, "imagefolder": _open_imagefolder, "hf": _open_hf}.get(cfg.type)
    if reader is None:
        raise ValueError(f"eval set {cfg.name!r}: unknown type {cfg.type!r} (wds, imagefolder, hf)")
    eval_set = reader(cfg, path, targets == "captions")
    eval_set.limit = cfg.max_samples
    if cfg.classnames:
        eval_set.classnames = load_classnames(cfg.classnames)
    if cfg.templates:
        eval_set.templates = load_templates(cfg.templates)
    return eval_set


def _load_image(source, where: str) -> Image.Image:
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except OSError as e:  # PIL's "cannot identify image file" included
        raise ValueError(f"{where}: unreadable image ({e})") from None


# ---------------------------------------------------------------- CLIP_benchmark webdataset directory

def _open_wds(cfg: EvalDatasetConfig, root: Path, captions: bool) -> EvalSet:
    kind = layout.read_kind(root)
    if (kind == layout.RETRIEVAL) != captions:
        raise ValueError(f"eval set {cfg.name!r}: {root} holds a {kind} set ({layout.DATASET_TYPE_FILE}) "
                         f"but the task is {cfg.task}")
    target_of = {layout.RETRIEVAL: _captions_target, layout.MULTILABEL: _multilabel_target}.get(kind, _class_target)
    return EvalSet(cfg.name, layout.split_shards(root, cfg.split, cfg.name),
                   partial(_read_shard, cfg.name, target_of),
                   classnames=layout.optional_lines(root, layout.CLASSNAMES_FILE),
                   templates=layout.optional_lines(root, layout.TEMPLATES_FILE), multilabel=kind == layout.MULTILABEL)


def _read_shard(name: str, target_of: Callable[[dict], Any], url: str) -> Iterator[tuple[Image.Image, Any]]:
    from vlp.data.reader import ShardRead, tar_samples

    read = ShardRead()
    for sample in tar_samples(url, read):
        yield _wds_image(sample), target_of(sample)
    if read.damage is not None:  # eval metrics need every sample: a damaged set is an error, not a skip
        raise ValueError(f"eval set {name!r}: shard {url} is damaged ({read.damage}) after {read.samples} samples")


def _where(sample: dict) -> str:
    return f"sample {sample['__key__']} in {sample['__url__']}"


def _wds_image(sample: dict) -> Image.Image:
    for key in layout.IMAGE_KEYS:
        if key in sample:
            return _load_image(io.BytesIO(sample[key]), _where(sample))
    raise ValueError(f"{_where(sample)} has no image ({'|'.join(layout.IMAGE_KEYS)})")


def _class_target(sample: dict) -> int:
    if layout.LABEL_KEY not in sample:
        raise ValueError(f"{_where(sample)} has no `{layout.LABEL_KEY}` label")
    return int(sample[layout.LABEL_KEY].decode().strip())


def _multilabel_target(sample: dict) -> np.ndarray:
    if layout.MULTILABEL_KEY not in sample:
        raise ValueError(f"{_where(sample)} has no `{layout.MULTILABEL_KEY}` labels")
    return np.load(io.BytesIO(sample[layout.MULTILABEL_KEY]), allow_pickle=False)


def _captions_target(sample: dict) -> list[str]:
    captions = layout.split_captions(sample.get(layout.CAPTIONS_KEY, b""))
    if not captions:
        raise ValueError(f"{_where(sample)} has no caption (`{layout.CAPTIONS_KEY}`)")
    return captions


# ---------------------------------------------------------------- image folder

def _open_imagefolder(cfg: EvalDatasetConfig, root: Path, captions: bool) -> EvalSet:
    if captions:
        raise ValueError(f"eval set {cfg.name!r}: an image folder holds class labels, not the captions "
                         f"task {cfg.task!r} needs")
    folder = root / cfg.split if (root / cfg.split).is_dir() else root
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"eval set {cfg.name!r}: no class sub-folders in {folder}")
    files = [(f, label) for label, c in enumerate(classes) for f in sorted((folder / c).rglob("*"))
             if f.suffix.lower() in IMAGE_SUFFIXES]
    parts = [files[i:i + FILES_PER_PART] for i in range(0, len(files), FILES_PER_PART)]
    classnames = layout.optional_lines(root, layout.CLASSNAMES_FILE) or [c.replace("_", " ") for c in classes]
    templates = layout.optional_lines(root, layout.TEMPLATES_FILE) or openai_imagenet_templates()
    return EvalSet(cfg.name, parts, _read_files, classnames=classnames, templates=templates)


def _read_files(part: list[tuple[Path, int]]) -> Iterator[tuple[Image.Image, int]]:
    for file, label in part:
        yield _load_image(file, str(file)), label


# ---------------------------------------------------------------- HF dataset (save_to_disk)

def _open_hf(cfg: EvalDatasetConfig, root: Path, captions: bool) -> EvalSet:
    import datasets

    try:
        data = open_hf_dataset(str(root), cfg.split)
    except ValueError as e:  # a split the folder does not have
        raise ValueError(f"eval set {cfg.name!r}: {e}") from None
    target_column = cfg.caption_column if captions else cfg.label_column
    missing = [c for c in (cfg.image_column, target_column) if c not in data.column_names]
    if missing:
        raise ValueError(f"eval set {cfg.name!r}: columns {missing} not in {data.column_names}")
    parts = [(i, min(i + FILES_PER_PART, len(data))) for i in range(0, len(data), FILES_PER_PART)]
    if captions:
        return EvalSet(cfg.name, parts, partial(_read_rows, data, cfg.image_column, target_column, _hf_captions))
    feature = data.features[target_column]
    multilabel = isinstance(feature, list) or hasattr(feature, "feature")  # a list / Sequence of labels
    inner = (feature[0] if isinstance(feature, list) else feature.feature) if multilabel else feature
    classnames = list(inner.names) if isinstance(inner, datasets.ClassLabel) else None
    if multilabel and classnames is None:
        raise ValueError(f"eval set {cfg.name!r}: a multi-label column needs ClassLabel features")
    to_target = partial(_multi_hot, num_classes=len(classnames)) if multilabel else int
    return EvalSet(cfg.name, parts, partial(_read_rows, data, cfg.image_column, target_column, to_target),
                   classnames=classnames, templates=openai_imagenet_templates(), multilabel=multilabel)


def _read_rows(data, image_column: str, target_column: str, to_target: Callable,
               rows: tuple[int, int]) -> Iterator[tuple[Image.Image, Any]]:
    for row in data.select(range(*rows)):
        image = row[image_column]
        if not isinstance(image, Image.Image):
            raise ValueError(f"column {image_column!r} must hold images (datasets.Image feature), "
                             f"got {type(image).__name__}")
        yield image.convert("RGB"), to_target(row[target_column])


def _hf_captions(value) -> list[str]:
    captions = [value] if isinstance(value, str) else list(value)
    captions = [c for c in captions if isinstance(c, str) and c.strip()]
    if not captions:
        raise ValueError(f"a row has no caption: {value!r}")
    return captions


def _multi_hot(labels, num_classes: int) -> np.ndarray:
    target = np.zeros(num_classes, dtype=np.int64)
    target[list(labels)] = 1
    return target
