"""Eval set readers: CLIP_benchmark webdataset directory, image folder, or HF dataset saved with `save_to_disk`.

Each reader gives an `EvalSet`: a re-iterable stream of (PIL image, target) where the target is a class index,
a multi-hot vector (multi-label sets) or a list of captions (retrieval), plus class names / templates.

CLIP_benchmark layout (`type: wds`): DIR/{split}/0.tar ... (`nshards.txt` there is honoured when present),
DIR/classnames.txt, DIR/zeroshot_classification_templates.txt, DIR/dataset_type.txt ("retrieval", "multilabel",
anything else or missing = classification). Samples: image as webp|png|jpg|jpeg; `cls` (class index), `npy`
(multi-hot, multi-label) or `txt` (captions, one per line).
Image folder (`type: imagefolder`): DIR/{split}/CLASS/*.jpg, or DIR/CLASS/*.jpg when DIR/{split} does not exist;
class names are the folder names with "_" read as a space unless DIR/classnames.txt exists.
HF (`type: hf`): `datasets.load_from_disk(DIR)` (the split is picked from a DatasetDict); class names come from the
label column's ClassLabel feature (a Sequence of ClassLabel = multi-label); retrieval reads `caption_column`
(a string or a list of strings per row).
Without a templates file, image folders and HF sets use the OpenAI ImageNet templates.
"""
from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
from PIL import Image

from vlp.evaluate.prompts import (Templates, load_classnames, load_templates, openai_imagenet_templates,
                                  read_lines)
from vlp.recipe.schema import EvalDatasetConfig

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class EvalSet:
    name: str
    task: str  # "zeroshot" | "retrieval"
    samples: Callable[[], Iterator[tuple[Image.Image, Any]]]  # a fresh iterator on each call
    classnames: Optional[list[str]] = None
    templates: Optional[Templates] = None
    multilabel: bool = False


def open_eval_set(cfg: EvalDatasetConfig) -> EvalSet:
    path = Path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"eval set {cfg.name!r}: {cfg.path} does not exist")
    reader = {"wds": _open_wds, "imagefolder": _open_imagefolder, "hf": _open_hf}.get(cfg.type)
    if reader is None:
        raise ValueError(f"eval set {cfg.name!r}: unknown type {cfg.type!r} (wds, imagefolder, hf)")
    eval_set = reader(cfg, path)
    if cfg.task == "zeroshot":
        _apply_prompt_overrides(eval_set, cfg)
    if cfg.max_samples is not None:
        stream = eval_set.samples
        eval_set.samples = lambda: itertools.islice(stream(), cfg.max_samples)
    return eval_set


def _apply_prompt_overrides(eval_set: EvalSet, cfg: EvalDatasetConfig) -> None:
    if cfg.classnames:
        eval_set.classnames = load_classnames(cfg.classnames)
    if cfg.templates:
        eval_set.templates = load_templates(cfg.templates)
    if not eval_set.classnames:
        raise ValueError(f"eval set {cfg.name!r}: no class names (add classnames.txt or set `classnames`)")
    if not eval_set.templates:
        raise ValueError(f"eval set {cfg.name!r}: no templates (add zeroshot_classification_templates.txt "
                         f"or set `templates`)")


# ---------------------------------------------------------------- CLIP_benchmark webdataset directory

def _open_wds(cfg: EvalDatasetConfig, root: Path) -> EvalSet:
    kind_file = root / "dataset_type.txt"
    kind = kind_file.read_text().strip().lower() if kind_file.is_file() else "classification"
    if (kind == "retrieval") != (cfg.task == "retrieval"):
        raise ValueError(f"eval set {cfg.name!r}: {root} holds a {kind} set (dataset_type.txt) "
                         f"but the task is {cfg.task}")
    shards = _wds_shards(root / cfg.split, cfg.name)
    target_of = {"retrieval": _captions_target, "multilabel": _multilabel_target}.get(kind, _class_target)

    def samples():
        import webdataset as wds

        # Every process reads the whole set (no node/worker splitting): eval metrics need all samples.
        pipeline = wds.WebDataset(shards, shardshuffle=False, nodesplitter=lambda urls: urls,
                                  workersplitter=lambda urls: urls, empty_check=False)
        for sample in pipeline:
            yield _decode_wds_image(sample), target_of(sample)

    def optional_lines(name: str) -> Optional[list[str]]:
        return read_lines(root / name) if (root / name).is_file() else None

    return EvalSet(cfg.name, cfg.task, samples, classnames=optional_lines("classnames.txt"),
                   templates=optional_lines("zeroshot_classification_templates.txt"), multilabel=kind == "multilabel")


def _wds_shards(split_dir: Path, name: str) -> list[str]:
    if not split_dir.is_dir():
        raise FileNotFoundError(f"eval set {name!r}: split directory {split_dir} not found")
    count_file = split_dir / "nshards.txt"
    if count_file.is_file():
        shards = [split_dir / f"{i}.tar" for i in range(int(count_file.read_text().strip()))]
        missing = [str(s) for s in shards if not s.is_file()]
        if missing:
            raise FileNotFoundError(f"eval set {name!r}: shards listed by nshards.txt are missing: {missing[:3]}")
    else:
        shards = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    if not shards:
        raise FileNotFoundError(f"eval set {name!r}: no .tar shards in {split_dir}")
    return [str(s) for s in shards]


def _decode_wds_image(sample: dict) -> Image.Image:
    for key in IMAGE_KEYS:
        if key in sample:
            return _load_image(io.BytesIO(sample[key]))
    raise ValueError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no image ({'|'.join(IMAGE_KEYS)})")


def _class_target(sample: dict) -> int:
    if "cls" not in sample:
        raise ValueError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no `cls` label")
    return int(sample["cls"].decode().strip())


def _multilabel_target(sample: dict) -> np.ndarray:
    if "npy" not in sample:
        raise ValueError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no `npy` labels")
    return np.load(io.BytesIO(sample["npy"]), allow_pickle=False)


def _captions_target(sample: dict) -> list[str]:
    captions = [line for line in sample.get("txt", b"").decode().splitlines() if line.strip()]
    if not captions:
        raise ValueError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no caption (`txt`)")
    return captions


def _load_image(source) -> Image.Image:
    with Image.open(source) as image:
        return image.convert("RGB")


# ---------------------------------------------------------------- image folder

def _open_imagefolder(cfg: EvalDatasetConfig, root: Path) -> EvalSet:
    if cfg.task != "zeroshot":
        raise ValueError(f"eval set {cfg.name!r}: an image folder only supports the zeroshot task")
    folder = root / cfg.split if (root / cfg.split).is_dir() else root
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"eval set {cfg.name!r}: no class sub-folders in {folder}")
    files = [(f, label) for label, c in enumerate(classes) for f in sorted((folder / c).rglob("*"))
             if f.suffix.lower() in IMAGE_SUFFIXES]

    def samples():
        for file, label in files:
            yield _load_image(file), label

    classnames = read_lines(root / "classnames.txt") if (root / "classnames.txt").is_file() else \
        [c.replace("_", " ") for c in classes]
    templates_file = root / "zeroshot_classification_templates.txt"
    templates = read_lines(templates_file) if templates_file.is_file() else openai_imagenet_templates()
    return EvalSet(cfg.name, cfg.task, samples, classnames=classnames, templates=templates)


# ---------------------------------------------------------------- HF dataset (save_to_disk)

def _open_hf(cfg: EvalDatasetConfig, root: Path) -> EvalSet:
    import datasets

    data = datasets.load_from_disk(str(root))
    if isinstance(data, datasets.DatasetDict):
        if cfg.split not in data:
            raise ValueError(f"eval set {cfg.name!r}: split {cfg.split!r} not in {list(data)}")
        data = data[cfg.split]
    needed = [cfg.image_column, cfg.caption_column if cfg.task == "retrieval" else cfg.label_column]
    missing = [c for c in needed if c not in data.column_names]
    if missing:
        raise ValueError(f"eval set {cfg.name!r}: columns {missing} not in {data.column_names}")
    if cfg.task == "retrieval":
        return EvalSet(cfg.name, cfg.task, _hf_stream(data, cfg.image_column, cfg.caption_column, _hf_captions))
    feature = data.features[cfg.label_column]
    multilabel = isinstance(feature, list) or hasattr(feature, "feature")  # a list / Sequence of labels
    inner = (feature[0] if isinstance(feature, list) else feature.feature) if multilabel else feature
    classnames = list(inner.names) if isinstance(inner, datasets.ClassLabel) else None
    if multilabel and classnames is None:
        raise ValueError(f"eval set {cfg.name!r}: a multi-label column needs ClassLabel features")
    to_target = (lambda labels: _multi_hot(labels, len(classnames))) if multilabel else int
    return EvalSet(cfg.name, cfg.task, _hf_stream(data, cfg.image_column, cfg.label_column, to_target),
                   classnames=classnames, templates=openai_imagenet_templates(), multilabel=multilabel)


def _hf_stream(data, image_column: str, target_column: str, to_target: Callable):
    def samples():
        for row in data:
            image = row[image_column]
            if not isinstance(image, Image.Image):
                raise ValueError(f"column {image_column!r} must hold images (datasets.Image feature), "
                                 f"got {type(image).__name__}")
            yield image.convert("RGB"), to_target(row[target_column])
    return samples


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
