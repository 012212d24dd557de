"""vlp.evaluate against CLIP_benchmark's own functions on the same webdataset sets: tiny random-weight models, and a
model trained on the bundled digits (peaked similarities, captions repeated across images)."""
from __future__ import annotations

import math

import clip_benchmark.metrics.zeroshot_classification as cb_zeroshot
import clip_benchmark.metrics.zeroshot_retrieval as cb_retrieval
import numpy as np
import pytest
import torch
from clip_benchmark.datasets.builder import build_wds_dataset, image_captions_collate_fn
from helpers.eval_support import WORDS, random_images, tiny_model, write_wds_set

from vlp.evaluate import evaluate
from vlp.models import load_pretrained
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig

# CLIP_benchmark's own webdataset call and sklearn's one-class confusion matrix warn; not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore:WebDataset\\(shardshuffle:UserWarning"),
              pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")]
TEMPLATES = ["a photo of a {c}.", "a {c}.", "art of the {c}."]
TOL = 1e-6


@pytest.fixture(scope="module")
def model_bundle():
    torch.set_num_threads(1)
    return tiny_model(seed=1)


class ScalarNumpyTensor(torch.Tensor):
    """CLIP_benchmark's `accuracy` ends in `float(count.sum(0, keepdim=True).cpu().numpy())`: float() of a 1-element
    array, an error from numpy 2.4 on. Tensors of this class hand that element over as a 0-d array, which float()
    takes, so CLIP_benchmark's own function runs unchanged on any numpy."""

    def numpy(self, *args, **kwargs):
        array = super().numpy(*args, **kwargs)
        return array.reshape(()) if array.size == 1 else array


@pytest.fixture(autouse=True)
def clip_benchmark_accuracy(monkeypatch) -> list:
    """Feeds CLIP_benchmark's `accuracy` its logits as ScalarNumpyTensor; returns the list of its calls' topk."""
    original, calls = cb_zeroshot.accuracy, []

    def accuracy(output, target, topk=(1,)):
        calls.append(topk)
        return original(output.as_subclass(ScalarNumpyTensor), target, topk)

    monkeypatch.setattr(cb_zeroshot, "accuracy", accuracy)
    return calls


def run_cb_zeroshot(model_bundle, root, batch_size=8):
    model, preprocess, tokenizer = model_bundle
    dataset = build_wds_dataset("synthetic", preprocess, split="test", data_dir=str(root))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    return cb_zeroshot.evaluate(model, loader, tokenizer, dataset.classes, dataset.templates, "cpu", amp=False)


def run_vlp(model_bundle, root, task, batch_size=8, recall_k=(1, 5, 10)):
    model, preprocess, tokenizer = model_bundle
    cfg = EvalConfig(datasets=[EvalDatasetConfig(name="synthetic", task=task, path=str(root))],
                     batch_size=batch_size, recall_k=list(recall_k))
    [record] = evaluate(model, preprocess, tokenizer, cfg, "cpu", model_name="tiny", progress=False)
    return record


def assert_same(ours: dict, theirs: dict, names: dict):
    for our_name, their_name in names.items():
        a, b = ours[our_name], theirs[their_name]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL, (our_name, a, their_name, b)


def classification_set(root, classnames, labels, seed=0):
    samples = [{"png": im, "cls": int(y)} for im, y in zip(random_images(len(labels), seed), labels)]
    return write_wds_set(root, samples, classnames=classnames, templates=TEMPLATES)


ZS_NAMES = {"acc1": "acc1", "acc5": "acc5", "mean_per_class_recall": "mean_per_class_recall"}


@pytest.mark.parametrize("num_classes", [12, 3, 1])
def test_zeroshot_matches_clip_benchmark(tmp_path, model_bundle, num_classes, clip_benchmark_accuracy):
    labels = np.random.default_rng(num_classes).integers(0, num_classes, 30)
    root = classification_set(tmp_path, WORDS[:num_classes], labels)
    ours = run_vlp(model_bundle, root, "zeroshot")
    theirs = run_cb_zeroshot(model_bundle, root)
    assert clip_benchmark_accuracy == [(1, 5) if num_classes >= 5 else (1,)]  # their own top-k code decided
    assert ours["task"] == "zeroshot_classification" and ours["dataset"] == "synthetic" and ours["model"] == "tiny"
    assert_same(ours["metrics"], theirs, ZS_NAMES)
    assert math.isnan(ours["metrics"]["acc5"]) == (num_classes < 5)


def test_zeroshot_ties_among_wrong_classes_match(tmp_path, model_bundle):
    # Duplicate class names give tied class embeddings; no image belongs to them, so any tie order gives one answer.
    classnames = ["cat", "dog", "dog", "bird", "fish", "fish", "cow"]
    labels = np.random.default_rng(0).choice([0, 3, 6], 25)
    root = classification_set(tmp_path, classnames, labels)
    assert_same(run_vlp(model_bundle, root, "zeroshot")["metrics"], run_cb_zeroshot(model_bundle, root), ZS_NAMES)


def test_multilabel_matches_clip_benchmark(tmp_path, model_bundle):
    rng = np.random.default_rng(3)
    targets = (rng.random((20, 6)) < 0.3).astype(np.int64)
    targets[:, 5] = 0  # a class without any positive counts as AP 0 in both
    samples = [{"png": im, "npy": t} for im, t in zip(random_images(20, 3), targets)]
    root = write_wds_set(tmp_path, samples, classnames=WORDS[:6], templates=TEMPLATES, dataset_type="multilabel")
    ours = run_vlp(model_bundle, root, "zeroshot")["metrics"]
    theirs = run_cb_zeroshot(model_bundle, root)
    assert_same(ours, theirs, {"mean_average_precision": "mean_average_precision"})


def retrieval_set(root, caption_counts, seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for i, (image, count) in enumerate(zip(random_images(len(caption_counts), seed), caption_counts)):
        captions = [" ".join(rng.choice(WORDS, 3)) + f" number {i}" for _ in range(count)]
        samples.append({"png": image, "txt": "\n".join(captions)})
    return write_wds_set(root, samples, dataset_type="retrieval")


def run_cb_retrieval(model_bundle, root, batch_size=5, recall_k=(1, 5, 10)):
    model, preprocess, tokenizer = model_bundle
    dataset = build_wds_dataset("synthetic", preprocess, split="test", data_dir=str(root))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=image_captions_collate_fn)
    return cb_retrieval.evaluate(model, loader, tokenizer, "cpu", amp=False, recall_k_list=list(recall_k))


def retrieval_names(recall_k):
    names = {}
    for k in recall_k:
        names[f"image_to_text_R@{k}"] = f"text_retrieval_recall@{k}"
        names[f"text_to_image_R@{k}"] = f"image_retrieval_recall@{k}"
    return names


def test_retrieval_matches_clip_benchmark_with_varying_caption_counts(tmp_path, model_bundle):
    root = retrieval_set(tmp_path, [1, 5, 2, 3, 1, 4, 2, 5, 1, 3, 2, 1, 3, 2])
    ours = run_vlp(model_bundle, root, "retrieval", batch_size=4)
    theirs = run_cb_retrieval(model_bundle, root)
    assert ours["task"] == "zeroshot_retrieval"
    assert_same(ours["metrics"], theirs, retrieval_names((1, 5, 10)))


@pytest.fixture(scope="module")
def trained_bundle(trained_digits):
    run_dir, paths = trained_digits
    model, preprocess, tokenizer, _ = load_pretrained(run_dir)
    return (model, preprocess, tokenizer), paths


def test_trained_model_matches_clip_benchmark_on_held_out_digits(trained_bundle, clip_benchmark_accuracy):
    bundle, paths = trained_bundle
    ours = run_vlp(bundle, paths["zeroshot"], "zeroshot", batch_size=64)["metrics"]
    assert ours["acc1"] > 0.4  # chance is 0.1: peaked similarities, unlike the random-weight tests above
    assert_same(ours, run_cb_zeroshot(bundle, paths["zeroshot"], batch_size=64), ZS_NAMES)
    assert clip_benchmark_accuracy == [(1, 5)]
    # Captions repeat across the images of a digit: exact ties, which both break towards the lower index.
    ours = run_vlp(bundle, paths["retrieval"], "retrieval", batch_size=64)["metrics"]
    assert ours["text_to_image_R@10"] > 10 / paths["num_test"]  # above chance: a retrieval ranking with structure
    assert_same(ours, run_cb_retrieval(bundle, paths["retrieval"], batch_size=64), retrieval_names((1, 5, 10)))
