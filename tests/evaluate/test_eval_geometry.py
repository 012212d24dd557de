"""Geometry diagnostics on constructed embeddings with known answers, and against naive double loops."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlp.evaluate import geometry_metrics
from vlp.evaluate.geometry import cross_uniformity, effective_rank, separability, uniformity, unmatched_cosine


def random_unit(n: int, dim: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def test_identical_modalities_have_no_gap_and_are_inseparable():
    x = random_unit(200, 16, 0)
    g = geometry_metrics(x, x.clone())
    assert g["geometry_modality_gap"] == pytest.approx(0, abs=1e-12)
    assert g["geometry_centroid_cosine"] == pytest.approx(1)
    assert g["geometry_alignment"] == pytest.approx(0, abs=1e-12)
    assert g["geometry_matched_cosine"] == pytest.approx(1)
    # Held-out pairs are split together, so each test image has its identical text beside it: exactly chance.
    assert g["geometry_separability"] == pytest.approx(0.5)
    assert g["geometry_uniformity_image"] == pytest.approx(g["geometry_uniformity_text"])
    assert g["geometry_effective_rank_image"] == pytest.approx(g["geometry_effective_rank_text"])


def test_shifted_modalities_are_separable():
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(300, 8, generator=g, dtype=torch.float64)
    shift = torch.zeros(8, dtype=torch.float64)
    shift[0] = 3
    x, y = F.normalize(noise + shift, dim=1), F.normalize(noise - shift, dim=1)
    metrics = geometry_metrics(x, y)
    assert metrics["geometry_separability"] == 1.0
    assert metrics["geometry_modality_gap"] == pytest.approx((x.mean(0) - y.mean(0)).norm().item())
    assert metrics["geometry_modality_gap"] > 1.0


def test_two_constant_modalities_have_closed_form_values():
    x = torch.zeros(10, 4, dtype=torch.float64)
    y = torch.zeros(10, 4, dtype=torch.float64)
    x[:, 0], y[:, 1] = 1, 1
    g = geometry_metrics(x, y)
    assert g["geometry_modality_gap"] == pytest.approx(math.sqrt(2))
    assert g["geometry_centroid_cosine"] == pytest.approx(0, abs=1e-12)
    assert g["geometry_alignment"] == pytest.approx(2)
    assert g["geometry_uniformity_image"] == pytest.approx(0)  # all at one point: exp(0) everywhere
    assert g["geometry_uniformity_cross"] == pytest.approx(-4)  # ||e1 − e2||² = 2
    assert g["geometry_matched_cosine"] == 0 and g["geometry_unmatched_cosine"] == 0
    assert math.isnan(g["geometry_effective_rank_image"])  # no spread at all
    assert g["geometry_separability"] == 1.0


def test_uniformity_known_configurations():
    assert uniformity(torch.eye(6, dtype=torch.float64)) == pytest.approx(-4)  # pairwise ||ei − ej||² = 2
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert uniformity(antipodal) == pytest.approx(-8)
    assert math.isnan(uniformity(antipodal[:1]))


def test_uniformities_and_unmatched_cosine_match_naive_loops():
    x, y = random_unit(23, 5, 2), random_unit(23, 5, 3)
    xs, ys = x.numpy(), y.numpy()
    pairs = [(i, j) for i in range(23) for j in range(23) if i != j]
    naive_uniform = math.log(np.mean([math.exp(-2 * np.sum((xs[i] - xs[j]) ** 2)) for i, j in pairs if i < j]))
    naive_cross = math.log(np.mean([math.exp(-2 * np.sum((xs[i] - ys[j]) ** 2)) for i, j in pairs]))
    naive_unmatched = np.mean([xs[i] @ ys[j] for i, j in pairs])
    assert uniformity(x) == pytest.approx(naive_uniform, abs=1e-10)
    assert cross_uniformity(x, y) == pytest.approx(naive_cross, abs=1e-10)
    assert unmatched_cosine(x, y) == pytest.approx(naive_unmatched, abs=1e-12)


def test_effective_rank_known_answers():
    eye = torch.eye(16, dtype=torch.float64)
    balanced = torch.cat([eye[:5], -eye[:5]])  # centred already, five equal singular values
    assert effective_rank(balanced) == pytest.approx(5)
    a, b = 3.0, 1.0
    uneven = torch.cat([a * eye[:1], -a * eye[:1], b * eye[1:2], -b * eye[1:2]])
    p = np.array([a, b]) / (a + b)
    assert effective_rank(uneven) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert effective_rank(balanced + 5 * eye[7]) == pytest.approx(5)  # a common offset does not count


def test_separability_needs_two_pairs_and_large_sets_are_subsampled_deterministically():
    x = random_unit(3, 4, 0)
    assert math.isnan(separability(x[:1], x[:1]))
    big_x, big_y = random_unit(300, 8, 4), random_unit(300, 8, 5)
    first = geometry_metrics(big_x, big_y, max_samples=100)
    assert first == geometry_metrics(big_x, big_y, max_samples=100)
    assert first["geometry_alignment"] != pytest.approx(geometry_metrics(big_x, big_y)["geometry_alignment"],
                                                        abs=1e-9)
    with pytest.raises(ValueError, match="paired"):
        geometry_metrics(big_x, big_y[:5])
