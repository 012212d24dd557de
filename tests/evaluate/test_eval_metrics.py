"""Zero-shot / retrieval metric math on embeddings, against naive numpy references and CLIP_benchmark's helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, balanced_accuracy_score

from vlp.evaluate import class_embeddings, retrieval_metrics, zeroshot_metrics
from vlp.evaluate.prompts import expand_prompts, load_classnames, load_templates, openai_imagenet_templates
from vlp.evaluate.ranking import blocked_best_positive_rank

BLOCKS = [1, 7, 1 << 24]  # one row at a time, ragged blocks, one block


def integer_embeddings(n: int, dim: int, seed: int, levels: int = 2) -> torch.Tensor:
    """Small-integer vectors: dot products are exact in float32 whatever the summation order, and often tie."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-levels, levels + 1, (n, dim), generator=g).float()


def stable_rank(scores: np.ndarray, positives: np.ndarray) -> int:
    """Naive: position (1-based) of the first positive in a stable descending sort (lower index wins ties)."""
    order = np.argsort(-scores, kind="stable")
    return int(np.flatnonzero(positives[order])[0]) + 1


def naive_retrieval(images, texts, owner, ks):
    s = (texts @ images.T).numpy().astype(np.float64)
    owner = owner.numpy()
    i2t = np.array([stable_rank(s[:, i], owner == i) for i in range(len(images))])
    t2i = np.array([stable_rank(s[j], np.arange(len(images)) == owner[j]) for j in range(len(texts))])
    out = {}
    for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        out.update({f"{name}_R@{k}": float(np.mean(ranks <= k)) for k in ks})
        out[f"{name}_mean_rank"], out[f"{name}_median_rank"] = float(ranks.mean()), float(np.median(ranks))
    return out


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_naive_with_ties_and_uneven_captions(block, seed):
    images = integer_embeddings(13, 4, seed)
    counts = torch.randint(1, 6, (13,), generator=torch.Generator().manual_seed(seed))
    owner = torch.repeat_interleave(torch.arange(13), counts)
    texts = integer_embeddings(len(owner), 4, seed + 100)
    ks = (1, 2, 5, 10)
    ours = retrieval_metrics(images, texts, owner, ks, block_elements=block)
    expected = naive_retrieval(images, texts, owner, ks)
    assert ours.keys() == expected.keys()
    for name in expected:
        assert ours[name] == pytest.approx(expected[name], abs=1e-12), name


def test_ranks_agree_with_clip_benchmark_recall_where_ties_do_not_touch_the_positive():
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k

    images = integer_embeddings(15, 3, 7, levels=4)
    owner = torch.repeat_interleave(torch.arange(15), torch.tensor([1, 3, 2] * 5))
    texts = integer_embeddings(len(owner), 3, 8, levels=4)
    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), owner] = True
    ranks = blocked_best_positive_rank(images, texts, owner, block_elements=10)
    for k in (1, 3, 5):
        theirs = recall_at_k(scores.T, positive.T, k) > 0
        best = scores.T.masked_fill(~positive.T, -math.inf).amax(1, keepdim=True)
        clean = ~((scores.T == best) & ~positive.T).any(1)  # no negative ties with the best positive
        assert 3 <= clean.sum() < len(images), "the data must hold both kinds of rows"
        assert torch.equal((ranks <= k)[clean], theirs[clean])


def naive_zeroshot(images, classes, labels):
    s = (images @ classes.T).numpy()
    labels = labels.numpy()
    ranks = np.array([stable_rank(row, np.arange(len(classes)) == y) for row, y in zip(s, labels)])
    acc5 = float(np.mean(ranks <= 5)) if len(classes) >= 5 else math.nan
    pred = s.argmax(1)
    return {"acc1": float(np.mean(ranks == 1)), "acc5": acc5,
            "mean_per_class_recall": balanced_accuracy_score(labels, pred)}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("num_classes", [1, 3, 5, 9])
@pytest.mark.parametrize("block", BLOCKS)
def test_zeroshot_matches_naive(num_classes, block):
    images = integer_embeddings(40, 3, num_classes)
    classes = integer_embeddings(num_classes, 3, 50 + num_classes)
    labels = torch.randint(0, num_classes, (40,), generator=torch.Generator().manual_seed(num_classes))
    ours = zeroshot_metrics(images, classes, labels, block_elements=block)
    expected = naive_zeroshot(images, classes, labels)
    for name, value in expected.items():
        assert (math.isnan(value) and math.isnan(ours[name])) or ours[name] == pytest.approx(value, abs=1e-12), name
    if num_classes == 1:
        assert ours["acc1"] == 1.0 and ours["mean_per_class_recall"] == 1.0
    assert math.isnan(ours["acc5"]) == (num_classes < 5)


def test_mean_average_precision_matches_sklearn_and_counts_empty_classes_as_zero():
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(30, 8, generator=g), dim=1)
    classes = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    targets = (torch.rand(30, 5, generator=g) < 0.3).long()
    targets[:, 4] = 0
    targets[0, :4] = 1  # every other class has a positive
    scores = (images @ classes.T).numpy()
    per_class = [average_precision_score(targets[:, c].numpy(), scores[:, c]) for c in range(4)] + [0.0]
    ours = zeroshot_metrics(images, classes, targets)
    assert ours == {"mean_average_precision": pytest.approx(float(np.mean(per_class)), abs=1e-9)}


def test_class_embeddings_are_renormalised_means_of_normalised_prompts():
    g = torch.Generator().manual_seed(0)
    prompts = torch.randn(7, 6, generator=g) * torch.arange(1, 8)[:, None]
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    ours = class_embeddings(prompts, owner, 3)
    for c in range(3):
        mean = np.mean([p / np.linalg.norm(p) for p in prompts[owner == c].numpy()], axis=0)
        assert np.allclose(ours[c].numpy(), mean / np.linalg.norm(mean), atol=1e-6)
    with pytest.raises(ValueError, match="without prompts"):
        class_embeddings(prompts, owner, 4)


def test_bad_inputs_raise_clear_errors():
    x = F.normalize(torch.randn(4, 8), dim=1)
    with pytest.raises(ValueError, match="at least one image"):
        zeroshot_metrics(x[:0], x, torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie"):
        zeroshot_metrics(x, x[:2], torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="without any caption"):
        retrieval_metrics(x, x, torch.tensor([0, 0, 1, 3]))
    with pytest.raises(ValueError, match="at least one image"):
        retrieval_metrics(x[:0], x, torch.tensor([0, 0, 1, 3]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(x, x, torch.tensor([0, 1, 2, 4]))


def test_prompts_expand_templates_and_per_class_lists(tmp_path):
    prompts, owners = expand_prompts(["cat", "big dog"], ["a {c}.", "{c} photo"])
    assert prompts == ["a cat.", "cat photo", "a big dog.", "big dog photo"] and owners == [0, 0, 1, 1]
    prompts, owners = expand_prompts(["a", "b"], {"a": ["x"], "b": ["y", "z"], "c": ["unused"]})
    assert prompts == ["x", "y", "z"] and owners == [0, 1, 1]
    with pytest.raises(ValueError, match="placeholder"):
        expand_prompts(["a"], ["no placeholder"])
    with pytest.raises(ValueError, match="missing"):
        expand_prompts(["a", "b"], {"a": ["x"]})
    (tmp_path / "t.json").write_text('{"a": ["x"]}')
    (tmp_path / "c.txt").write_text("one\n\ntwo\n")
    assert load_templates(str(tmp_path / "t.json")) == {"a": ["x"]}
    assert load_classnames(str(tmp_path / "c.txt")) == ["one", "two"]
    with pytest.raises(FileNotFoundError):
        load_classnames(str(tmp_path / "missing.txt"))


def test_imagenet_lists_match_the_published_clip_lists():
    """Facts of the lists CLIP was evaluated with (OpenAI's ImageNet prompt-engineering notebook), by index."""
    names, templates = load_classnames("imagenet"), load_templates("imagenet")
    assert len(names) == 1000
    known = {0: "tench", 1: "goldfish", 134: "crane bird", 207: "Golden Retriever", 281: "tabby cat",
             517: "construction crane", 817: "sports car", 999: "toilet paper"}
    assert {i: names[i] for i in known} == known
    # OpenAI's curated names keep exactly two WordNet near-duplicates: "missile" and "sunglasses"
    assert [i for i, name in enumerate(names) if names.count(name) > 1] == [657, 744, 836, 837]
    assert names[657] == "missile" and names[836] == "sunglasses"
    assert len(templates) == len(set(templates)) == 80 and all(t.count("{c}") == 1 for t in templates)
    assert (templates[0], templates[1], templates[-1]) == ("a bad photo of a {c}.", "a photo of many {c}.",
                                                          "a tattoo of the {c}.")
    assert "itap of a {c}." in templates and templates == openai_imagenet_templates()
