"""Captions from a CoCa's decoder, greedy or by beam search, token by token as open_clip's `CoCa.generate` does
(its forward on the tokens so far, the last position's logits; the end token barred until `min_tokens`).

open_clip's own `generate` cannot run with transformers 5 (it imports `BeamSearchScorer`, which that release
removed), so the two loops are written here on the same model calls; beam search is the plain one (no beam groups).
"""
from __future__ import annotations

import torch

from vlp.models.towers import CoCa


def next_token_logits(model: CoCa, image_embs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(n, vocab) logits of the token after `tokens` (n, T), given the images' token embeddings."""
    _, token_embs = model._encode_text(tokens)
    return model.text_decoder(image_embs, token_embs)[:, -1].float()


@torch.no_grad()
def greedy(model: CoCa, images: torch.Tensor, sot: int, eot: int, max_tokens: int,
           min_tokens: int) -> list[list[int]]:
    """The most likely token at each step, per image, until the end token or `max_tokens` (start included)."""
    _, image_embs = model._encode_image(images)
    tokens = torch.full((images.shape[0], 1), sot, dtype=torch.long, device=images.device)
    done = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
    while tokens.shape[1] < max_tokens and not done.all():
        logits = next_token_logits(model, image_embs, tokens)
        if tokens.shape[1] < min_tokens:
            logits[:, eot] = -torch.inf
        step = torch.where(done, model.pad_id, logits.argmax(-1))
        tokens = torch.cat([tokens, step[:, None]], dim=1)
        done |= step == eot
    return tokens.tolist()


@torch.no_grad()
def beam_search(model: CoCa, image: torch.Tensor, sot: int, eot: int, max_tokens: int, min_tokens: int,
                beams: int) -> list[int]:
    """The best of `beams` hypotheses for one image (3, H, W) by summed log-probability over generated tokens
    (length penalty 1, transformers' default); stops once `beams` hypotheses have ended."""
    _, image_embs = model._encode_image(image[None])
    alive, scores, ended = [[sot]], torch.zeros(1, device=image.device), []
    while alive and len(ended) < beams and len(alive[0]) < max_tokens:
        tokens = torch.tensor(alive, device=image.device)
        logp = next_token_logits(model, image_embs.expand(len(alive), -1, -1), tokens).log_softmax(-1)
        if tokens.shape[1] < min_tokens:
            logp[:, eot] = -torch.inf
        top = (scores[:, None] + logp).flatten().topk(2 * beams)
        alive, kept = _extend(alive, top, logp.shape[1], eot, beams, ended)
        scores = torch.tensor(kept, device=image.device)
    ended += [(score / (len(seq) - 1), seq) for score, seq in zip(scores.tolist(), alive)]
    return max(ended, key=lambda hypothesis: hypothesis[0])[1]


def _extend(alive, top, vocab: int, eot: int, beams: int, ended: list) -> tuple[list, list]:
    """The `beams` best continuations that do not end; those that end go to `ended` with their normalised score."""
    extended, kept = [], []
    for score, index in zip(top.values.tolist(), top.indices.tolist()):
        seq = alive[index // vocab] + [index % vocab]
        if seq[-1] == eot:
            ended.append((score / (len(seq) - 1), seq))
        elif len(extended) < beams:
            extended.append(seq)
            kept.append(score)
    return extended, kept
