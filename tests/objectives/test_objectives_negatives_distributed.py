"""The false-negative, uniformity, DCL, MACL and iSogCLR objectives: two gloo processes vs one process on the
concatenated batch — loss, DDP-averaged gradients, and for `isogclr` the per-sample state after several steps, also
handed between world sizes."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import vlp.objectives as objectives
from helpers.objective_inputs import call_inputs, join_gloo, state_components
from helpers.processes import free_port, spawn
from vlp.recipe.schema import ObjectiveConfig

pytestmark = pytest.mark.distributed

WORLD, LOCAL, DIM_IN, DIM, K, SAMPLES = 2, 5, 6, 4, 3, 17
ISOGCLR = dict(gamma=0.7, rho=0.5, tau_init=0.2, eta=0.1, beta=0.6)


def cfg(name, **kw):
    return ObjectiveConfig(name=name, **kw)


CASES = {
    "masked_softmax-global": cfg("masked_softmax"),
    "masked_softmax-local": cfg("masked_softmax", gather="local_loss"),
    "masked_softmax-tiled-global": cfg("masked_softmax", tiled=True, tile_size=3),
    "masked_softmax-tiled-local": cfg("masked_softmax", tiled=True, tile_size=3, gather="local_loss"),
    "supcon-global": cfg("supcon"),
    "supcon-tiled-local": cfg("supcon", tiled=True, tile_size=4, gather="local_loss"),
    "debiased-global": cfg("debiased", params={"tau_plus": 0.2}),
    "debiased-tiled-local": cfg("debiased", tiled=True, tile_size=3, gather="local_loss"),
    "macl-global": cfg("macl"),
    "macl-tiled-local": cfg("macl", tiled=True, tile_size=3, gather="local_loss", params={"alpha": 0.3}),
    "multi_caption-global": cfg("multi_caption"),
    "multi_caption-tiled": cfg("multi_caption", tiled=True, tile_size=4),
}


class Tower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(DIM_IN, DIM, bias=False)
        self.text = torch.nn.Linear(DIM_IN, DIM)
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.2))

    def terms(self, objective, rows, step=0):
        images, texts, captions, mask, labels, tokens, ids = (v[rows] for v in global_batch(step))
        wanted = {"labels": labels, "text": tokens, "sample_ids": ids, "caption_mask": mask,
                  "captions": F.normalize(self.text(captions), dim=-1)}
        return objective(F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                         self.logit_scale.exp(), **call_inputs({k: wanted[k] for k in objective.reads}))


def global_batch(step=0):
    g = torch.Generator().manual_seed(1 + step)
    n = WORLD * LOCAL
    labels = torch.randint(0, 4, (n,), generator=g)
    tokens = torch.stack([labels, labels % 2]).T  # captions repeat across (and within) ranks
    mask = torch.rand(n, K, generator=g) < 0.6
    mask[:, 0] = True
    return (torch.randn(n, DIM_IN, generator=g), torch.randn(n, DIM_IN, generator=g),
            torch.randn(n, K, DIM_IN, generator=g), mask, labels, tokens, torch.randperm(SAMPLES, generator=g)[:n])


def run(objective, rows, reduce_grads, step=0):
    model = Tower()
    terms = model.terms(objective, rows, step)
    terms["loss"].backward()
    return ({k: v.detach() for k, v in terms.items()},
            {k: reduce_grads(torch.zeros_like(p) if p.grad is None else p.grad) for k, p in model.named_parameters()})


def isogclr_steps(rows, reduce_grads, steps, state=None, tiled=False):
    objective = objectives.build("isogclr", **ISOGCLR, **({"tiled": True, "tile_size": 3} if tiled else {}))
    samples = state_components(objective, SAMPLES)["objective"]
    if state is not None:
        samples.load_state_dict(state)
    results = [run(objective, rows, reduce_grads, step) for step in steps]
    return results, samples.state_dict()


def worker(rank, port, out_dir):
    ddp_average = join_gloo(rank, port, WORLD)
    try:
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        results = {name: run(objectives.build_from_config(c), rows, ddp_average) for name, c in CASES.items()}
        results["isogclr"] = isogclr_steps(rows, ddp_average, range(3))
        results["isogclr-tiled"] = isogclr_steps(rows, ddp_average, range(3), tiled=True)
        # resumed on 2 processes from a 1-process run's state (world size changes between save and resume)
        one_process_state = torch.load(os.path.join(out_dir, "single.pt"), weights_only=True)
        results["isogclr-resharded"] = isogclr_steps(rows, ddp_average, [3], one_process_state)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def everything():
    return slice(0, WORLD * LOCAL)


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("dist"))
    torch.save(isogclr_steps(everything(), lambda g: g, range(3))[1], os.path.join(out_dir, "single.pt"))
    port = free_port()
    spawn(worker, (port, out_dir), WORLD)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def assert_same(got, want):
    (terms, grads), (ref_terms, ref_grads) = got, want
    for key in ref_terms:
        torch.testing.assert_close(terms[key], ref_terms[key], atol=1e-5, rtol=1e-5, msg=lambda m: f"{key}: {m}")
    assert ref_grads["image.weight"].abs().sum() > 0 and ref_grads["text.weight"].abs().sum() > 0
    for key in ref_grads:
        torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-5, rtol=1e-5, msg=lambda m: f"grad {key}: {m}")


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process(two_process_results, name):
    reference = run(objectives.build_from_config(CASES[name]), everything(), lambda g: g)
    for rank_results in two_process_results:
        assert_same(rank_results[name], reference)


@pytest.mark.parametrize("tiled", [False, True], ids=["dense", "tiled"])
def test_isogclr_two_processes_equal_one_process_over_steps(two_process_results, tiled):
    reference, reference_state = isogclr_steps(everything(), lambda g: g, range(3))  # dense, 1 process
    for rank_results in two_process_results:
        results, state = rank_results["isogclr-tiled" if tiled else "isogclr"]
        for got, want in zip(results, reference):
            assert_same(got, want)
        for key in reference_state:
            torch.testing.assert_close(state[key], reference_state[key], atol=1e-5, rtol=1e-5)


def test_isogclr_state_moves_between_world_sizes(two_process_results):
    """State of a 1-process run resumed on 2 processes (and gathered back) continues as 1 process would."""
    _, single_state = isogclr_steps(everything(), lambda g: g, range(3))
    reference, reference_state = isogclr_steps(everything(), lambda g: g, [3], single_state)
    for rank_results in two_process_results:
        results, state = rank_results["isogclr-resharded"]
        assert_same(results[0], reference[0])
        for key in reference_state:
            torch.testing.assert_close(state[key], reference_state[key], atol=1e-5, rtol=1e-5)
