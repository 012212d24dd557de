"""The evaluations of a training run decode each eval split and tokenise each text once (`kept_inputs`), with the
same results as evaluating from the files each time; a set larger than the budget streams every time."""
from __future__ import annotations

import json

import torch

from helpers.eval_support import WORDS, random_images, tiny_model, write_wds_set
from vlp.evaluate import evaluate, kept_inputs
from vlp.evaluate.kept_inputs import KeptInputs, keeping
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig

N = 24


def eval_config(tmp_path) -> EvalConfig:
    images = random_images(N, seed=3)
    zeroshot = write_wds_set(tmp_path / "zs", [{"png": im, "cls": i % 4} for i, im in enumerate(images)],
                             classnames=WORDS[:4], templates=["a photo of a {c}.", "a {c}."])
    retrieval = write_wds_set(tmp_path / "rt", [{"png": im, "txt": f"a {WORDS[i % 12]}"} for i, im in
                                                enumerate(images)], dataset_type="retrieval")
    return EvalConfig(datasets=[EvalDatasetConfig(name="zs", task="zeroshot", path=str(zeroshot)),
                                EvalDatasetConfig(name="rt", task="retrieval", path=str(retrieval))],
                      batch_size=8, workers=0, pictures=False)


class Counted:
    """A preprocess and a tokenizer that count their calls."""

    def __init__(self, preprocess, tokenizer):
        self.preprocess, self.tokenizer, self.images, self.texts = preprocess, tokenizer, 0, 0

    def image(self, image):
        self.images += 1
        return self.preprocess(image)

    def tokenize(self, texts):
        self.texts += len(texts)
        return self.tokenizer(texts)


def metrics(records) -> str:
    """Every metric, exactly (NaN, as acc5 of 4 classes is, compares equal here)."""
    return json.dumps([r["metrics"] for r in records], sort_keys=True)


def test_a_runs_evaluations_decode_and_tokenise_once_with_the_same_results(tmp_path):
    model, preprocess, tokenizer = tiny_model()
    cfg, counted, kept = eval_config(tmp_path), Counted(preprocess, tokenizer), KeptInputs()
    expected = []
    got = []
    for seed in range(3):  # three evaluations of a model that changes between them
        torch.manual_seed(seed)
        for p in model.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        expected.append(metrics(evaluate(model, preprocess, tokenizer, cfg, progress=False)))
        with keeping(kept):
            got.append(metrics(evaluate(model, counted.image, counted.tokenize, cfg, progress=False)))
    assert got == expected
    # the two sets read the same 24 images from two folders once each; 8 prompts + 24 captions tokenised once
    assert (counted.images, counted.texts) == (2 * N, 8 + N)


def test_a_set_over_the_budget_is_read_every_time(tmp_path):
    model, preprocess, tokenizer = tiny_model()
    cfg, counted = eval_config(tmp_path), Counted(preprocess, tokenizer)
    one_set = EvalConfig(datasets=cfg.datasets[:1], batch_size=8, workers=0, pictures=False)
    kept = KeptInputs(budget=N * 3 * 32 * 32 * 4 - 1)  # one float32 image short of the set
    with keeping(kept):
        first = metrics(evaluate(model, counted.image, counted.tokenize, one_set, progress=False))
        second = metrics(evaluate(model, counted.image, counted.tokenize, one_set, progress=False))
    assert first == second and counted.images == 2 * N and kept.images == {} and len(kept.streamed) == 1


def test_outside_a_run_nothing_is_kept(tmp_path):
    calls = []
    assert kept_inputs.tokens(lambda t: calls.append(t) or len(calls), ["a"]) == 1
    assert kept_inputs.tokens(lambda t: calls.append(t) or len(calls), ["a"]) == 2
    assert list(kept_inputs.image_batches(("k",), lambda: iter([1, 2]))) == [1, 2]
