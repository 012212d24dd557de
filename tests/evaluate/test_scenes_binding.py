"""The `binding` evaluation task against an independent computation, and both scenes recipes through `vlp demo`
(a 2-step train on a small scenes build: shards, hard negatives, every eval set)."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from helpers.eval_support import random_images, tiny_model

from data_tools.build import write_retrieval_set
from data_tools.inputs import Item
from vlp.evaluate import evaluate, layout
from vlp.evaluate.tasks.binding import binding_metrics
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig

torch.set_num_threads(1)
KINDS = ["digits_swapped", "colours_swapped", "digit_replaced"]
CAPTIONS = [["a red cat", "a cat red", "a blue cat", "a red dog"], ["two birds", "birds two", "three birds", "x"],
            ["a tree on a hill", "a hill on a tree", "a tree on a hill.", "a bush on a hill"],
            ["snow", "wons", "rain", "snow snow"], ["left 3 right 7", "left 7 right 3", "left 3 right 1", "7 3"]]


def _naive_accuracy(image_emb: np.ndarray, text_emb: np.ndarray) -> list[float]:
    """text_emb (N, 1 + K, D): per kind, the share of images whose true caption scores higher (ties ½)."""
    per_kind = []
    for k in range(1, text_emb.shape[1]):
        points = 0.0
        for i in range(len(image_emb)):
            true, false = float(image_emb[i] @ text_emb[i, 0]), float(image_emb[i] @ text_emb[i, k])
            points += 1.0 if true > false else 0.5 if true == false else 0.0
        per_kind.append(points / len(image_emb))
    return per_kind


def test_binding_metrics_match_a_loop_and_count_ties_as_half():
    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(40, 4, 8, generator=gen), dim=-1)
    texts[:10, 2] = texts[:10, 0]  # ties: a text encoder blind to the difference
    metrics = binding_metrics(images, texts[:, 0], texts[:, 1:], KINDS)
    expected = _naive_accuracy(images.numpy().astype(np.float64), texts.numpy().astype(np.float64))
    for kind, value in zip(KINDS, expected):
        assert metrics[f"binding_{kind}_acc"] == pytest.approx(value, abs=1e-12)
    assert metrics["binding_mean_acc"] == pytest.approx(sum(expected) / 3)
    blind = binding_metrics(images, texts[:, 0], texts[:, :1].expand(-1, 3, -1), KINDS)
    assert all(blind[f"binding_{k}_acc"] == 0.5 for k in KINDS)


def _png(image):
    import io

    def load():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "png"
    return load


@pytest.fixture(scope="module")
def binding_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("binding") / "set"
    items = [Item(f"{i:04d}", _png(im), caps) for i, (im, caps) in enumerate(zip(random_images(5, 7), CAPTIONS))]
    write_retrieval_set(items, root, per_shard=2)
    layout.write_binding_kinds(root, KINDS)
    return root


def test_binding_task_equals_an_independent_computation_on_a_toy_model(binding_set):
    model, preprocess, tokenizer = tiny_model(3)
    cfg = EvalConfig(datasets=[EvalDatasetConfig(name="toy_binding", task="binding", path=str(binding_set))],
                     batch_size=3, workers=0)
    [record] = evaluate(model, preprocess, tokenizer, cfg, progress=False)
    assert record["task"] == "binding"
    from vlp.evaluate.datasets import open_eval_set

    samples = list(open_eval_set(cfg.datasets[0], "captions").samples())
    with torch.no_grad():
        image_emb = np.stack([torch.nn.functional.normalize(model.encode_image(preprocess(im)[None]), dim=-1)[0].numpy()
                              for im, _ in samples])
        text_emb = np.stack([torch.nn.functional.normalize(model.encode_text(tokenizer(caps)), dim=-1).numpy()
                             for _, caps in samples])
    expected = _naive_accuracy(image_emb.astype(np.float64), text_emb.astype(np.float64))
    for kind, value in zip(KINDS, expected):
        assert record["metrics"][f"binding_{kind}_acc"] == pytest.approx(value)
    assert "geometry_modality_gap" in record["metrics"]


def test_binding_set_without_kinds_or_with_a_missing_negative_fails_clearly(tmp_path, binding_set):
    model, preprocess, tokenizer = tiny_model(3)
    bare = tmp_path / "bare"
    items = [Item(f"{i:04d}", _png(im), caps[:3]) for i, (im, caps) in enumerate(zip(random_images(2), CAPTIONS))]
    write_retrieval_set(items, bare)
    cfg = EvalConfig(datasets=[EvalDatasetConfig(name="bare", task="binding", path=str(bare))], workers=0)
    with pytest.raises(ValueError, match="binding_kinds.txt"):
        evaluate(model, preprocess, tokenizer, cfg, progress=False)
    layout.write_binding_kinds(bare, KINDS)
    with pytest.raises(ValueError, match="has 3 captions, expected the true one and 3 negatives"):
        evaluate(model, preprocess, tokenizer, cfg, progress=False)


@pytest.mark.parametrize("recipe", ["tiny-scenes.yaml", "tiny-scenes-negclip.yaml"])
def test_scenes_recipe_trains_two_steps_through_the_demo(recipe, tmp_path, capsys, monkeypatch):
    import data_tools.scenes
    from vlp.cli import main

    small = functools.partial(data_tools.scenes.build_scenes, train_scenes=64, test_scenes=24, per_shard=32)
    monkeypatch.setattr(data_tools.scenes, "build_scenes", small)
    monkeypatch.chdir(tmp_path)
    argv = ["demo", recipe, "--data-dir", str(tmp_path / "data"), "--set", "train.duration=2 steps",
            "--set", "train.batch_size=16", "--set", "data.workers=0", "--set", "logging.progress=false",
            "--set", "eval.workers=0", "--set", f"train.output_dir={tmp_path / 'runs'}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "scenes_left_digit: zero-shot left digit top-1" in out
    assert "scenes_retrieval: image→text R@1" in out and "text→image R@1" in out
    assert "scenes_binding (true caption vs a false one, chance 50%): digits swapped" in out
    run_dir = next((tmp_path / "runs").iterdir())
    report = json.loads((run_dir / "demo_report.json").read_text())
    assert report["steps"] == 2 and report["source"] == "scenes"
    assert [r["dataset"] for r in report["eval"]] == ["scenes_left_digit", "scenes_retrieval", "scenes_binding"]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    uses_negatives = any("objective/hard_negative_logit_mean" in m for m in logged)
    assert uses_negatives == (recipe == "tiny-scenes-negclip.yaml")
