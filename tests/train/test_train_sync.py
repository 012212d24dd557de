"""The GPU path's host side: a training step reads nothing from the device, a non-finite step is skipped on the device
exactly, and batches reach the device pinned and one step ahead."""
from __future__ import annotations

import traceback
from contextlib import contextmanager

import pytest
import torch

from helpers.train_support import make_shards, random_batch, recipe_dict, write_recipe
from vlp.data.train_data import prefetch_to
from vlp.train.components import EMA
from vlp.train.optim import step_unless_skipped

torch.set_num_threads(1)

# Every way Python code can copy a tensor's values to the host: on a GPU, each one waits for the device to finish.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextmanager
def counting_host_reads(monkeypatch, reads: list):
    """Records the call site of every host read made while `active[0]` is True."""
    active = [False]
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, __real=real, __name=name, **kwargs):
            if active[0]:
                reads.append(f"{__name}: {''.join(traceback.format_stack(limit=4)[:-1])}")
            return __real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    yield active


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), shards=1, per_shard=48)


@pytest.mark.parametrize("train_cfg", [
    dict(),  # one forward, the norm alone
    dict(micro_batch_size=4, ema_decay=0.9),  # GradCache and the EMA
], ids=["plain", "gradcache-ema"])
def test_a_training_step_reads_nothing_from_the_device(tmp_path, shards, monkeypatch, train_cfg):
    import vlp.train.loop as loop
    from vlp.train import train

    reads, steps = [], []
    real_step = loop._step
    with counting_host_reads(monkeypatch, reads) as active:
        def watched(run, batch):
            active[0] = True
            try:
                return real_step(run, batch)
            finally:
                active[0] = False
                steps.append(run.progress.step)

        monkeypatch.setattr(loop, "_step", watched)
        recipe = recipe_dict(shards, tmp_path / "runs", duration="5 steps", log_every=5, **train_cfg)
        recipe["optim"]["grad_clip"] = 1.0  # clipping through accelerate, as most recipes do
        result = train(write_recipe(tmp_path / "r.yaml", recipe))
    assert steps == [1, 2, 3, 4, 5] and result.metrics["loss"] > 0
    assert not reads, f"{len(reads)} host reads in 5 steps, the first at\n{reads[0]}"


def test_a_skipped_step_leaves_weights_moments_step_count_and_ema_exactly_as_they_were():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1, fused=True)
    ema = EMA(model, decay=0.9)

    def step(ok: bool, grad: float | None = None):
        model(torch.randn(2, 4)).sum().backward()
        if grad is not None:
            for p in model.parameters():
                p.grad.fill_(grad)
        step_unless_skipped(optimizer, torch.tensor(ok))
        optimizer.zero_grad(set_to_none=True)
        ema.update(model, torch.tensor(ok))

    def snapshot():
        return [t.clone() for t in (*model.parameters(), *ema.weights.values(),
                                    *(v for s in optimizer.state.values() for v in s.values()))]

    step(True)
    before = snapshot()
    step(False, grad=float("nan"))  # weight decay and moment decay would change the weights even with zero gradients
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot()))
    assert not hasattr(optimizer, "found_inf")  # nothing left behind for a later plain step
    step(True)
    assert not torch.equal(before[0], model.weight)


def test_nonfinite_stop_comes_at_the_next_log_step(tmp_path, shards, monkeypatch):
    """The counts are read where the host syncs anyway: three bad steps in a row (5-7) stop the run at step 8."""
    import vlp.train.gradcache as gradcache
    from vlp.train import NonFiniteLossError, train

    calls = [0]
    real = gradcache.objective_terms

    def nan_at_5_to_7(objective, features):
        calls[0] += 1
        terms = real(objective, features)
        return {**terms, "loss": terms["loss"] * float("nan")} if 5 <= calls[0] <= 7 else terms

    monkeypatch.setattr(gradcache, "objective_terms", nan_at_5_to_7)
    recipe = recipe_dict(shards, tmp_path / "runs", duration="12 steps", log_every=4, max_nonfinite_steps=3)
    with pytest.raises(NonFiniteLossError, match="stopping at step 8: .* 3 steps in a row"):
        train(write_recipe(tmp_path / "r.yaml", recipe))


def test_prefetch_yields_the_same_batches_in_order_one_ahead():
    source = [random_batch(2, seed=i) for i in range(4)]
    for i, b in enumerate(source):
        b.resume_skip, b.bad_samples = i + 1, {"corrupt": i}
    pulled = []

    def batches():
        for b in source:
            pulled.append(b.resume_skip)
            yield b

    got = []
    for b in prefetch_to(batches(), torch.device("cpu")):
        got.append(b)
        # the next batch's copy is already issued when this one is handed to its step
        assert pulled[-1] == min(b.resume_skip + 1, len(source))
    assert [(b.resume_skip, b.bad_samples) for b in got] == [(b.resume_skip, b.bad_samples) for b in source]
    assert all(torch.equal(a.image, b.image) and torch.equal(a.text, b.text) for a, b in zip(got, source))
    assert list(prefetch_to(iter([]), torch.device("cpu"))) == []


def test_joining_the_workers_items_copies_once_into_pinned_memory_in_stream_order(monkeypatch):
    """A position's parts (one per DataLoader worker) are copied once, straight into page-locked memory: a copy from
    pageable memory makes the host wait, and pinning each part first would copy twice. One part is pinned as is."""
    from vlp.data.batch import joined

    real_empty, pinned = torch.empty, []

    def empty(*shape, pin_memory=False, **kwargs):
        pinned.append(pin_memory)
        return real_empty(*shape, **kwargs)

    parts = [random_batch(2, negatives=1), random_batch(3, seed=1, negatives=1)]
    for k, part in enumerate(parts):
        part.sample_ids, part.keys, part.text_length = torch.arange(len(part)) + 10 * k, [f"{k}"] * len(part), 8 * k
    monkeypatch.setattr(torch, "empty", empty)
    both = joined(parts, pin=True)
    assert pinned == [True] * 4  # image, text, negatives, ids
    for name in ("image", "text", "negative_text", "sample_ids"):
        assert torch.equal(getattr(both, name), torch.cat([getattr(p, name) for p in parts])), name
    assert both.keys == ["0", "0", "1", "1", "1"] and both.text_length == 8 and both.labels is None
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a: pinned.append(t) or t.clone())
    assert joined(parts[:1], pin=True).keys == ["0", "0"] and len(pinned) == 4 + 4


def test_the_trainer_pins_memory_only_for_a_cuda_device(tmp_path, shards, monkeypatch):
    import vlp.data.epoch as epoch
    from vlp.train import train

    seen, real = [], epoch.joined

    def spy(parts, pin=False):
        seen.append(pin)
        return real(parts, pin)

    monkeypatch.setattr(epoch, "joined", spy)
    train(write_recipe(tmp_path / "r.yaml", recipe_dict(shards, tmp_path / "runs", duration="1 steps")))
    assert seen and not any(seen)  # pinning on a CPU-only run just warns


@pytest.mark.distributed
def test_rank_agreement_runs_on_a_cpu_group_beside_a_gpu_one(tmp_path, monkeypatch):
    """Under NCCL, ranks agree on a separate gloo group: a flag read from an NCCL all-reduce would sync the GPU."""
    import torch.distributed as dist

    from vlp.data.epoch import agree_over_processes, cpu_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/group", rank=0, world_size=1)
    try:
        assert cpu_group() is None  # gloo already: the default group
        with monkeypatch.context() as patched:
            patched.setattr(dist, "get_backend", lambda group=None: "nccl")
            group = cpu_group()
        assert group is not None and dist.get_backend(group) == "gloo"
        assert agree_over_processes(True, group=group) and not agree_over_processes(False, group=group)
    finally:
        dist.destroy_process_group()
