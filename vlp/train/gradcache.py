"""One local batch → parameter gradients, either directly or by GradCache feature caching over micro-batches.

Plain gradient accumulation computes the contrastive loss per micro-batch and so silently shrinks the set of negatives.
GradCache (Gao et al. 2021) keeps the whole batch's negatives at micro-batch memory cost:
  1. forward every micro-batch without a graph and keep only the embeddings;
  2. run the objective on the full local batch of embeddings (the objective gathers the other ranks' itself) and
     take the gradient of the loss with respect to the embeddings (and the logit scale/bias);
  3. forward each micro-batch again with a graph and backpropagate the cached embedding gradients.
The random state of each micro-batch's first forward is replayed in step 3, so dropout and patch dropout draw the
same masks and the result equals the gradient of one large-batch forward with those masks.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from vlp.data.batch import Batch
from vlp.models.text_trim import text_length_kwargs


@dataclass
class Features:
    image: torch.Tensor  # (b, D), L2-normalised
    text: torch.Tensor  # (b, D)
    negative_text: Optional[torch.Tensor]  # (b, K, D) hard-negative caption embeddings
    logit_scale: torch.Tensor  # t = exp(log-scale)
    logit_bias: Optional[torch.Tensor]
    captions: Optional[torch.Tensor] = None  # (b, K, D) every caption's embedding, for objectives that read them
    samples: Optional[Batch] = None  # the rows embedded: the per-sample inputs the objective reads (no gradient)
    caption_logits: Optional[torch.Tensor] = None  # (b, L−1, V) a caption decoder's next-token logits (CoCa)

    def detached(self) -> "Features":
        return replace(self, **{name: _map(getattr(self, name), torch.Tensor.detach) for name in EMBEDDINGS})


# Features with a gradient
EMBEDDINGS = ("image", "text", "negative_text", "logit_scale", "logit_bias", "captions", "caption_logits")


@dataclass
class StepOutput:
    terms: dict[str, torch.Tensor]  # "loss" and the objective's other terms, detached
    features: Features  # the local batch's embeddings, detached (for logit statistics)


def forward_features(model: torch.nn.Module, batch: Batch, reads: Sequence[str] = ()) -> Features:
    """Embed a batch; hard-negative captions (and every caption, when `reads` — the objective's — has captions)
    ride along in the text forward so DDP sees a single forward. With every caption read, the main caption is their
    first (`data.captions: all`) and is embedded once, as one of them."""
    n = batch.text.shape[0]
    all_captions = "captions" in reads and batch.captions is not None
    groups = [None if all_captions else batch.text, batch.negative_text, batch.captions if all_captions else None]
    out = model(batch.image, torch.cat([g.flatten(0, g.dim() - 2) for g in groups if g is not None]),
                **text_length_kwargs(model, batch.text_length))
    parts, start = [], 0 if all_captions else n
    for g in groups[1:]:  # (b, K, D) views of the extra caption groups, in the order they were appended
        parts.append(None if g is None else out["text_features"][start:start + g.shape[0] * g.shape[1]].view(
            n, g.shape[1], -1))
        start += 0 if g is None else g.shape[0] * g.shape[1]
    text = parts[1][:, 0] if all_captions else out["text_features"][:n]
    return Features(out["image_features"], text, parts[0], out["logit_scale"], out.get("logit_bias"), parts[1],
                    batch, out.get("logits"))


def objective_terms(objective: torch.nn.Module, f: Features) -> dict[str, torch.Tensor]:
    """The objective on `f` and the samples it embeds (hard negatives always: one that does not use them refuses
    them, rather than silently training without; a caption decoder's logits to the objective that reads them)."""
    if not hasattr(objective, "reads"):  # a plain module with the objective call signature, reading no sample
        return objective(f.image, f.text, logit_scale=f.logit_scale, logit_bias=f.logit_bias,
                         negative_text_features=f.negative_text)
    logits = {"caption_logits": f.caption_logits} if getattr(objective, "reads_caption_logits", False) else {}
    return objective(f.image, f.text, logit_scale=f.logit_scale, logit_bias=f.logit_bias,
                     negative_text_features=f.negative_text, caption_features=f.captions, samples=f.samples,
                     **logits)


def compute_gradients(model: torch.nn.Module, objective: torch.nn.Module, batch: Batch, micro_batch_size: int,
                      accelerator) -> StepOutput:
    """Accumulate ∂loss/∂θ of the local batch into the parameters' .grad.

    A non-finite loss is backpropagated too (its gradients are non-finite): deciding to skip here would make the
    host wait for the loss; the update skips the step on the device instead (`vlp.train.nonfinite`).
    """
    reads = getattr(objective, "reads", ())  # any module with the objective call signature will do
    if micro_batch_size >= len(batch):
        f = forward_features(model, batch, reads)
        terms = objective_terms(objective, f)
        accelerator.backward(terms["loss"])
        return StepOutput(_detach_terms(terms), f.detached())
    return _cached_step(model, objective, batch, micro_batch_size, accelerator, reads)


def _cached_step(model, objective, batch: Batch, micro_batch_size: int, accelerator,
                 reads: Sequence[str]) -> StepOutput:
    chunks, states, cached = batch.split(micro_batch_size), [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_rng_state())
            cached.append(forward_features(model, chunk, reads))
    after = _rng_state()
    full = replace(_leaf(_concat(cached)), samples=batch)
    terms = objective_terms(objective, full)
    terms["loss"].backward()  # gradients w.r.t. the cached embeddings only; no parameter is touched yet
    offsets = [0]
    for chunk in chunks:
        offsets.append(offsets[-1] + len(chunk))
    for i, chunk in enumerate(chunks):
        _set_rng_state(states[i])
        last = i == len(chunks) - 1
        # DDP reduces gradients once, after the last micro-batch.
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            f = forward_features(model, chunk, reads)
            accelerator.backward(_surrogate(f, full, offsets[i], offsets[i + 1], with_logits=last))
    _set_rng_state(after)
    return StepOutput(_detach_terms(terms), full.detached())


def _surrogate(f: Features, full: Features, start: int, stop: int, with_logits: bool) -> torch.Tensor:
    """A scalar whose parameter gradient is the chain rule through this micro-batch's embeddings; the logit scale
    and bias are shared by all micro-batches, so their cached gradient is applied once."""
    total = 0
    for name in ("image", "text", "negative_text", "captions", "caption_logits"):  # some may be unused (no grad)
        mine, cached = getattr(f, name), getattr(full, name)
        if mine is not None and cached.grad is not None:
            total = total + (mine * cached.grad[start:stop]).sum()
    if with_logits:
        for mine, cached in ((f.logit_scale, full.logit_scale), (f.logit_bias, full.logit_bias)):
            if mine is not None and cached.grad is not None:
                total = total + (mine * cached.grad).sum()
    return total


def _concat(parts: list[Features]) -> Features:
    def cat(name: str):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)
    first = parts[0]
    return Features(cat("image"), cat("text"), cat("negative_text"), first.logit_scale, first.logit_bias,
                    cat("captions"), caption_logits=cat("caption_logits"))


def _leaf(f: Features) -> Features:
    return replace(f, **{name: _map(getattr(f, name), lambda t: t.detach().float().requires_grad_())
                         for name in EMBEDDINGS})


def _map(value, fn):
    return None if value is None else fn(value)


def _detach_terms(terms: dict) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).detach() for k, v in terms.items()}


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)
