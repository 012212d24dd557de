"""Compositional digit scenes from the bundled MNIST-5k: two digits side by side, each drawn in one colour, captioned
with the digits, their colours and their order.

Train and test scenes draw their digits from disjoint source images (the split of `build_digits`, so the same images
are held out), and test captions use templates that training never sees. Besides retrieval, the scenes give binding
tests in the style of ARO / SugarCrepe: per test image the true caption against the same sentence with (a) the digits
swapped, (b) the colours swapped, (c) one digit replaced — a bag-of-words text encoder cannot tell (a) or (b) from the
truth. Training shards carry the same kinds of negatives (`neg.txt`) for NegCLIP-style training.
"""
from __future__ import annotations

import io
import json
import random
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from data_tools.build import split_items, write_retrieval_set, write_train_shards, write_zeroshot_set
from data_tools.bundled import DIGIT_NAMES, load_digit_arrays
from data_tools.inputs import Item
from vlp.evaluate import layout

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
           "cyan": (0, 255, 255), "magenta": (255, 0, 255)}
# slots: {c1} {d1} = colour and digit on the left, {c2} {d2} on the right
TRAIN_TEMPLATES = (
    "a {c1} {d1} to the left of a {c2} {d2}", "a {c2} {d2} to the right of a {c1} {d1}",
    "on the left a {c1} {d1}, on the right a {c2} {d2}", "a {c1} {d1} and a {c2} {d2}, from left to right",
    "{c1} {d1} left, {c2} {d2} right", "left: {c1} {d1}; right: {c2} {d2}",
    "a {c2} {d2} on the right and a {c1} {d1} on the left", "two digits: a {c1} {d1} then a {c2} {d2}",
)
TEST_TEMPLATES = (
    "a {c2} {d2} on the right, a {c1} {d1} on the left", "the {c1} {d1} comes before the {c2} {d2}",
    "to the right of a {c1} {d1} there is a {c2} {d2}", "first a {c1} {d1}, next to it a {c2} {d2}",
)
BINDING_KINDS = ("digits_swapped", "colours_swapped", "digit_replaced")
TRAIN_CAPTIONS, TEST_CAPTIONS = 3, 2  # captions per scene (distinct templates)
PROMPTS_PER_CLASS = 60  # left-digit zero-shot prompts per class


@dataclass(frozen=True)
class SceneText:
    """What a caption says: digits and colours left → right, in a template; `numerals` picks "3" over "three"."""
    template: str
    digits: tuple[int, int]
    colours: tuple[str, str]
    numerals: tuple[bool, bool]

    def text(self) -> str:
        words = [str(d) if numeral else DIGIT_NAMES[d] for d, numeral in zip(self.digits, self.numerals)]
        return self.template.format(d1=words[0], d2=words[1], c1=self.colours[0], c2=self.colours[1])

    def negative(self, kind: str, rng: random.Random) -> "SceneText":
        """The same sentence with one binding broken (scene digits and colours differ, so it is always false)."""
        if kind == "digits_swapped":  # each digit keeps its wording ("3" / "three"): the same words, reordered
            return replace(self, digits=self.digits[::-1], numerals=self.numerals[::-1])
        if kind == "colours_swapped":
            return replace(self, colours=self.colours[::-1])
        if kind == "digit_replaced":
            side = rng.randrange(2)
            new = rng.choice([d for d in range(10) if d not in self.digits])
            return replace(self, digits=tuple(new if i == side else d for i, d in enumerate(self.digits)))
        raise ValueError(f"unknown binding kind {kind!r}; kinds: {', '.join(BINDING_KINDS)}")


@dataclass(frozen=True)
class Scene:
    key: str
    sources: tuple[int, int]  # MNIST-5k indices of the left and right digit
    digits: tuple[int, int]  # always two different digits
    colours: tuple[str, str]  # always two different colours

    def texts(self, templates, rng: random.Random) -> list[SceneText]:
        return [SceneText(t, self.digits, self.colours, (rng.random() < 0.5, rng.random() < 0.5)) for t in templates]


def render(left: np.ndarray, right: np.ndarray, colours: tuple[str, str], size: int) -> np.ndarray:
    """Two grey digits tinted and placed side by side, squeezed into a square `size` image (RGB uint8): the left
    digit fills the left half."""
    tinted = [gray[..., None].astype(np.float32) * (np.array(COLOURS[c], np.float32) / 255.0)
              for gray, c in zip((left, right), colours)]
    strip = Image.fromarray(np.concatenate(tinted, axis=1).round().astype(np.uint8), mode="RGB")
    return np.asarray(strip.resize((size, size), Image.BILINEAR))


def _scenes(sources: list[int], labels: np.ndarray, count: int, rng: random.Random, unique: bool,
            prefix: str) -> list[Scene]:
    """`count` scenes from these source images; `unique`: no two scenes with the same digits and colours (so no two
    test images share a caption)."""
    by_digit = {d: [i for i in sources if labels[i] == d] for d in range(10)}
    contents = [(d1, d2, c1, c2) for d1 in range(10) for d2 in range(10) if d1 != d2
                for c1 in COLOURS for c2 in COLOURS if c1 != c2]
    if unique and count > len(contents):
        raise ValueError(f"only {len(contents)} distinct scenes exist, {count} asked for")
    chosen = rng.sample(contents, count) if unique else [rng.choice(contents) for _ in range(count)]
    return [Scene(f"{prefix}{n:06d}", (rng.choice(by_digit[d1]), rng.choice(by_digit[d2])), (d1, d2), (c1, c2))
            for n, (d1, d2, c1, c2) in enumerate(chosen)]


def _png(images: np.ndarray, scene: Scene, size: int):
    def load() -> tuple[bytes, str]:
        buffer = io.BytesIO()
        Image.fromarray(render(images[scene.sources[0]], images[scene.sources[1]], scene.colours, size)).save(
            buffer, format="PNG")
        return buffer.getvalue(), "png"
    return load


def left_digit_prompts(rng: random.Random) -> dict[str, list[str]]:
    """Zero-shot "which digit is on the left": per class, test-template captions over a sample of right digits and
    colour pairs (the class embedding averages the other attributes out)."""
    prompts = {}
    for d1, name in enumerate(DIGIT_NAMES):
        combos = [(d2, c1, c2) for d2 in range(10) if d2 != d1 for c1 in COLOURS for c2 in COLOURS if c1 != c2]
        prompts[name] = [SceneText(TEST_TEMPLATES[i % len(TEST_TEMPLATES)], (d1, d2), (c1, c2),
                                   (rng.random() < 0.5, rng.random() < 0.5)).text()
                         for i, (d2, c1, c2) in enumerate(rng.sample(combos, PROMPTS_PER_CLASS))]
    return prompts


def scene_sets(image_size: int = 32, seed: int = 0, test_fraction: float = 0.2, train_scenes: int = 8000,
               test_scenes: int = 1000) -> dict:
    """Items of every set, nothing written: {"train", "retrieval", "binding", "left_digit": [Item],
    "prompts": left-digit prompts, "scenes": {"train", "test": [Scene]}}."""
    images, labels = load_digit_arrays("mnist")
    train_sources, test_sources = split_items(list(range(len(labels))), test_fraction, seed)  # as build_digits
    rng = random.Random(seed)
    scenes = {"train": _scenes(train_sources, labels, train_scenes, rng, False, "s"),
              "test": _scenes(test_sources, labels, test_scenes, rng, True, "t")}
    sets = {"train": [], "retrieval": [], "binding": [], "left_digit": [], "scenes": scenes}
    for scene in scenes["train"]:
        texts = scene.texts(rng.sample(TRAIN_TEMPLATES, TRAIN_CAPTIONS), rng)
        negatives = [t.negative(kind, rng).text() for t in texts for kind in BINDING_KINDS]
        sets["train"].append(Item(scene.key, _png(images, scene, image_size), [t.text() for t in texts],
                                  negatives=negatives))
    for scene in scenes["test"]:
        load = _png(images, scene, image_size)
        texts = scene.texts(rng.sample(TEST_TEMPLATES, TEST_CAPTIONS), rng)
        sets["retrieval"].append(Item(scene.key, load, [t.text() for t in texts]))
        sets["binding"].append(Item(scene.key, load, [texts[0].text()] + [texts[0].negative(k, rng).text()
                                                                           for k in BINDING_KINDS]))
        sets["left_digit"].append(Item(scene.key, load, "", scene.digits[0]))
    sets["prompts"] = left_digit_prompts(rng)
    return sets


def duplicate_captions(items: list[Item]) -> int:
    """Captions that occur more than once in a retrieval set (each copy counted)."""
    counts = Counter(c for item in items for c in item.caption)
    return sum(n for n in counts.values() if n > 1)


def build_scenes(out_dir: Union[str, Path], image_size: int = 32, seed: int = 0, test_fraction: float = 0.2,
                 train_scenes: int = 8000, test_scenes: int = 1000, per_shard: int = 1000) -> dict:
    """Train shards (`txt`, `extra.txt`, `neg.txt`) and the held-out sets under `out_dir`, in CLIP_benchmark layout:
    scenes_retrieval, scenes_binding (a retrieval set: true caption then one negative per kind of
    `binding_kinds.txt`) and scenes_left_digit (zero-shot; its per-class prompts in prompts.json).

    Returns the paths, counts, and "eval": the `eval.datasets` entries for them."""
    out = Path(out_dir)
    sets = scene_sets(image_size, seed, test_fraction, train_scenes, test_scenes)
    spec = write_train_shards(sets["train"], out / "train", per_shard, total=train_scenes, desc="scenes train")
    retrieval = write_retrieval_set(sets["retrieval"], out / "scenes_retrieval", total=test_scenes)
    binding = write_retrieval_set(sets["binding"], out / "scenes_binding", total=test_scenes)
    layout.write_binding_kinds(binding, BINDING_KINDS)
    left = write_zeroshot_set(sets["left_digit"], out / "scenes_left_digit", DIGIT_NAMES, ("a {c} on the left",),
                              total=test_scenes)
    prompts = left / "prompts.json"
    prompts.write_text(json.dumps(sets["prompts"], indent=0))
    return {"train": spec, "num_train": train_scenes, "num_test": test_scenes,
            "duplicate_test_captions": duplicate_captions(sets["retrieval"]),
            "eval": [{"name": "scenes_left_digit", "task": "zeroshot", "path": str(left), "templates": str(prompts)},
                     {"name": "scenes_retrieval", "task": "retrieval", "path": str(retrieval)},
                     {"name": "scenes_binding", "task": "binding", "path": str(binding)}]}
