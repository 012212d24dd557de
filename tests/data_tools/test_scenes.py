"""The compositional digit scenes (data_tools.scenes): held-out source images and caption templates, real swaps,
colours drawn as captioned, and CLIP_benchmark-readable sets."""
from __future__ import annotations

import io
import random
import re
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from data_tools.bundled import DIGIT_NAMES, digit_items
from data_tools.build import split_items
from data_tools.scenes import BINDING_KINDS, COLOURS, TEST_TEMPLATES, TRAIN_TEMPLATES, SceneText, render, scene_sets

SIZE = 32


@pytest.fixture(scope="module")
def sets():
    return scene_sets(image_size=SIZE, seed=0, train_scenes=300, test_scenes=200)


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _all_texts(template: str) -> set[str]:
    return {_normal(SceneText(template, (d1, d2), (c1, c2), (n1, n2)).text())
            for d1 in range(10) for d2 in range(10) if d1 != d2 for c1 in COLOURS for c2 in COLOURS if c1 != c2
            for n1 in (False, True) for n2 in (False, True)}


def test_caption_slots_say_left_then_right():
    text = SceneText("a {c1} {d1} to the left of a {c2} {d2}", (3, 7), ("red", "blue"), (True, False)).text()
    assert text == "a red 3 to the left of a blue seven"


def test_no_test_caption_can_be_a_training_caption_for_every_template():
    train = set().union(*map(_all_texts, TRAIN_TEMPLATES))
    assert not set(TEST_TEMPLATES) & set(TRAIN_TEMPLATES)
    for template in TEST_TEMPLATES:
        assert not _all_texts(template) & train, template


def test_splits_are_disjoint_by_source_image_and_match_the_digits_split(sets):
    train = {i for s in sets["scenes"]["train"] for i in s.sources}
    test = {i for s in sets["scenes"]["test"] for i in s.sources}
    assert train and test and not train & test
    _, digit_test = split_items(digit_items("mnist", 8, 0), 0.2, 0)  # the held-out images of `build_digits`
    assert test <= {int(item.key) for item in digit_test}


def test_test_scenes_are_unique_and_captions_come_from_test_templates(sets):
    contents = [(s.digits, s.colours) for s in sets["scenes"]["test"]]
    assert len(set(contents)) == len(contents)
    captions = [c for item in sets["retrieval"] for c in item.caption]
    assert max(Counter(captions).values()) == 1
    train_captions = {_normal(c) for item in sets["train"] for c in item.caption}
    test_possible = set().union(*map(_all_texts, TEST_TEMPLATES))
    assert all(_normal(c) in test_possible and _normal(c) not in train_captions for c in captions)


@pytest.mark.parametrize("kind", BINDING_KINDS)
def test_negatives_break_exactly_one_binding(kind):
    rng = random.Random(1)
    for _ in range(200):
        d1, d2 = rng.sample(range(10), 2)
        truth = SceneText(rng.choice(TRAIN_TEMPLATES), (d1, d2), tuple(rng.sample(list(COLOURS), 2)),
                          (rng.random() < .5, rng.random() < .5))
        negative = truth.negative(kind, rng)
        assert negative.text() != truth.text() and negative.template == truth.template
        if kind == "digits_swapped":
            assert negative.digits == (d2, d1) and negative.colours == truth.colours
            assert negative.numerals == truth.numerals[::-1]
        elif kind == "colours_swapped":
            assert negative.colours == truth.colours[::-1] and negative.digits == truth.digits
        else:
            changed = [a != b for a, b in zip(negative.digits, truth.digits)]
            assert sum(changed) == 1 and negative.colours == truth.colours
            new = next(a for a, differs in zip(negative.digits, changed) if differs)
            assert new not in truth.digits


def test_binding_captions_are_word_permutations_except_the_replaced_digit(sets):
    for item in sets["binding"]:
        truth, *negatives = item.caption
        assert len(negatives) == len(BINDING_KINDS) and truth not in negatives
        words = Counter(_normal(truth).split())
        for kind, negative in zip(BINDING_KINDS, negatives):
            difference = words - Counter(_normal(negative).split())
            assert sum(difference.values()) == (1 if kind == "digit_replaced" else 0), (kind, truth, negative)


def test_training_negatives_are_false_swaps_of_the_captions(sets):
    for item in sets["train"]:
        assert len(item.negatives) == len(item.caption) * len(BINDING_KINDS)
        assert not set(item.negatives) & set(item.caption)


def _half_colours(png: bytes) -> list[set[int]]:
    """For the left and right halves: the channels that carry ink."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    halves = pixels[:, :SIZE // 2], pixels[:, SIZE // 2:]
    return [{c for c in range(3) if half[..., c].max() > 100} for half in halves]


def _channels(colour: str) -> set[int]:
    return {c for c, value in enumerate(COLOURS[colour]) if value}


def test_each_half_is_drawn_in_its_stated_colour(sets):
    for kind in ("train", "test"):
        items = sets["train" if kind == "train" else "left_digit"]
        for scene, item in list(zip(sets["scenes"][kind], items))[:60]:
            png, ext = item.load_image()
            assert ext == "png"
            assert _half_colours(png) == [_channels(c) for c in scene.colours], (scene, item.caption)
            if kind == "train":  # the caption names what is drawn
                words = _normal(item.caption[0]).split()
                assert set(scene.colours) <= set(words)


def test_render_keeps_channels_off_that_the_colour_does_not_use():
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 10:18] = 255
    image = render(digit, digit, ("yellow", "blue"), SIZE)
    assert image.shape == (SIZE, SIZE, 3)
    left, right = image[:, :SIZE // 2], image[:, SIZE // 2:]
    assert left[..., 2].max() == 0 and left[..., 0].max() == left[..., 1].max() == 255
    assert right[..., :2].max() == 0 and right[..., 2].max() == 255


def test_build_writes_clip_benchmark_sets_and_negatives(tmp_path, capsys):
    import json

    from clip_benchmark.datasets.builder import build_wds_dataset

    from data_tools.cli import main

    assert main(["build", "scenes", str(tmp_path), "--train-scenes", "40", "--test-scenes", "30",
                 "--per-shard", "16"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert paths["duplicate_test_captions"] == 0 and paths["num_test"] == 30
    retrieval, binding = (list(build_wds_dataset("scenes", lambda im: im.size, split="test", data_dir=e["path"]))
                          for e in paths["eval"][1:])
    assert len(retrieval) == 30 and all(len(c) == 2 and size == (SIZE, SIZE) for size, c in retrieval)
    assert all(len(c) == 1 + len(BINDING_KINDS) for _, c in binding)
    left = build_wds_dataset("scenes", lambda im: im.size, split="test", data_dir=paths["eval"][0]["path"])
    assert left.classes == list(DIGIT_NAMES)
    with tarfile.open(tmp_path / "train" / "00000.tar") as tar:
        names = tar.getnames()
    assert {"s000000.png", "s000000.txt", "s000000.extra.txt", "s000000.neg.txt"} <= set(names)


def test_scenes_table_reports_mean_and_sample_std_per_recipe():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "scenes_table.py"
    spec = importlib.util.spec_from_file_location("scenes_table", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    columns = [c[0] for c in bench.COLUMNS]
    runs = [{**{c: v for c in columns}, "wall seconds": s} for v, s in ((0.5, 100.0), (0.7, 140.0), (0.9, 120.0))]
    block = bench.table({"tiny-scenes.yaml": runs, "tiny-scenes-negclip.yaml": runs[:1]}, [0, 1, 2], "idle")
    assert "| metric | tiny-scenes.yaml | tiny-scenes-negclip.yaml |" in block
    assert "| binding: digits swapped | 70.0 ± 20.0 | 50.0 ± 0.0 |" in block
    assert "| wall seconds | 120.0 ± 20.0 | 100.0 ± 0.0 |" in block
