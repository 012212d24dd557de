"""Two gloo processes vs one process on the concatenated batch: same loss, terms and (DDP-averaged) gradients.

A tiny replicated model makes the features, so the comparison is on real parameter gradients: image/text
projections, log t and b.  All cases run in one spawn to pay the process start-up once.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import vlp.objectives as objectives
from helpers.objective_inputs import join_gloo
from helpers.processes import free_port, spawn
from vlp.recipe.schema import ObjectiveConfig, RegularizerConfig

pytestmark = pytest.mark.distributed

WORLD, LOCAL, DIM_IN, DIM, NEGATIVES = 2, 5, 6, 4, 2


def regs(*names):
    return [RegularizerConfig(name=n, weight=0.5 + i) for i, n in enumerate(names)]


CASES = {
    "softmax-global": ObjectiveConfig(name="softmax"),
    "softmax-local": ObjectiveConfig(name="softmax", gather="local_loss",
                                     params={"label_smoothing": 0.1, "image_to_text_weight": 0.7}),
    "softmax-tiled-global": ObjectiveConfig(name="softmax", tiled=True, tile_size=3),
    "softmax-tiled-local": ObjectiveConfig(name="softmax", tiled=True, tile_size=3, gather="local_loss",
                                           params={"label_smoothing": 0.1}),
    "sigmoid-global": ObjectiveConfig(name="sigmoid"),
    "sigmoid-local": ObjectiveConfig(name="sigmoid", gather="local_loss"),
    "sigmoid-ring": ObjectiveConfig(name="sigmoid", gather="ring"),
    "sigmoid-tiled-global": ObjectiveConfig(name="sigmoid", tiled=True, tile_size=3),
    "sigmoid-tiled-local": ObjectiveConfig(name="sigmoid", tiled=True, tile_size=4, gather="local_loss"),
    "sigmoid-tiled-ring": ObjectiveConfig(name="sigmoid", tiled=True, tile_size=2, gather="ring"),
    "hard_negative-global": ObjectiveConfig(name="hard_negative", params={"alpha": 0.6, "beta": 0.8}),
    "hard_negative-local": ObjectiveConfig(name="hard_negative", gather="local_loss", params={"beta": 1.2}),
    "dcl-global": ObjectiveConfig(name="dcl"),
    "dcl-local": ObjectiveConfig(name="dcl", gather="local_loss"),
    "clip_cuaxu": ObjectiveConfig(name="clip_cuaxu", gather="local_loss"),
    "sigmoid-regularized-ring": ObjectiveConfig(name="sigmoid", gather="ring", tiled=True, tile_size=3,
                                                regularizers=regs("uniform", "cross_uniform", "align")),
    "uniformity": ObjectiveConfig(name="uniformity"),
    "clip_cuaxu-tiled": ObjectiveConfig(name="clip_cuaxu", tiled=True, tile_size=3,
                                        regularizers=regs("cross_uniform", "align")),
    "clip_cua-tiled-local": ObjectiveConfig(name="clip_cua", tiled=True, tile_size=4, gather="local_loss"),
    "uniformity-tiled": ObjectiveConfig(name="uniformity", tiled=True, tile_size=3),
    "softmax-tiled-local-regularizers": ObjectiveConfig(name="softmax", tiled=True, tile_size=3,
                                                        regularizers=regs("uniform", "cross_uniform"),
                                                        regularizer_features="local"),
    "softmax-local-regularizers": ObjectiveConfig(name="softmax", regularizers=regs("align", "uniform"),
                                                  regularizer_features="local"),
}
WITH_NEGATIVES = {"hard_negative-global", "hard_negative-local"}


class Tower(torch.nn.Module):
    def __init__(self, objective):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(DIM_IN, DIM, bias=False)
        self.text = torch.nn.Linear(DIM_IN, DIM)
        self.logit_scale = torch.nn.Parameter(torch.tensor(objective.init_logit_scale))
        self.logit_bias = torch.nn.Parameter(torch.tensor(objective.init_logit_bias or 0.0))

    def loss_terms(self, objective, images, texts, negatives):
        extras = {}
        if negatives is not None:
            extras["negative_text_features"] = F.normalize(self.text(negatives), dim=-1)
        return objective(F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                         self.logit_scale.exp(), self.logit_bias, **extras)


def global_batch():
    g = torch.Generator().manual_seed(1)
    n = WORLD * LOCAL
    return (torch.randn(n, DIM_IN, generator=g), torch.randn(n, DIM_IN, generator=g),
            torch.randn(n, NEGATIVES, DIM_IN, generator=g))


def step(objective, rows, reduce_grads, with_negatives=False):
    """Loss terms and parameter gradients of `objective` on `rows` of the global batch."""
    model = Tower(objective)
    images, texts, negatives = (v[rows] for v in global_batch())
    terms = model.loss_terms(objective, images, texts, negatives if with_negatives else None)
    terms["loss"].backward()
    grads = {key: reduce_grads(torch.zeros_like(p) if p.grad is None else p.grad)
             for key, p in model.named_parameters()}
    return {k: v.detach() for k, v in terms.items()}, grads


def worker(rank, port, out_dir):
    ddp_average = join_gloo(rank, port, WORLD)
    try:
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        results = {name: step(objectives.build_from_config(cfg), rows, ddp_average, name in WITH_NEGATIVES) for name, cfg in CASES.items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def single_process(name):
    cfg, everything = CASES[name], slice(0, WORLD * LOCAL)
    if cfg.regularizer_features == "global" or not cfg.regularizers:
        return step(objectives.build_from_config(cfg), everything, lambda g: g, name in WITH_NEGATIVES)
    # local regularizers: the base on the whole batch plus each shard's regularizers, averaged over shards
    terms, grads = step(objectives.build(cfg.name, **cfg.params), everything, lambda g: g)
    alone = objectives.Composite(None, [(r.name, r.weight) for r in cfg.regularizers])
    for shard in range(WORLD):
        shard_terms, shard_grads = step(alone, slice(shard * LOCAL, (shard + 1) * LOCAL), lambda g: g)
        terms["loss"] = terms["loss"] + shard_terms["loss"] / WORLD
        for key in grads:
            grads[key] = grads[key] + shard_grads[key] / WORLD
    return {"loss": terms["loss"]}, grads


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("dist"))
    port = free_port()
    spawn(worker, (port, out_dir), WORLD)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process(two_process_results, name):
    ref_terms, ref_grads = single_process(name)
    for rank_results in two_process_results:
        terms, grads = rank_results[name]
        for key in ref_terms:
            torch.testing.assert_close(terms[key], ref_terms[key], atol=1e-5, rtol=1e-5, msg=lambda m: f"{key}: {m}")
        assert ref_grads["image.weight"].abs().sum() > 0 and ref_grads["text.weight"].abs().sum() > 0
        for key in ref_grads:
            torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-5, rtol=1e-5,
                                       msg=lambda m: f"grad {key}: {m}")
