"""`caption_images` (a CoCa and image tensors → captions) and `generate` (a run, checkpoint or export and image
files → captions), decoding with the model's own tokenizer."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from vlp.generate.decode import beam_search, greedy
from vlp.models.towers import CoCa

Method = Literal["greedy", "beam"]
MIN_TOKENS = 5  # open_clip's generate: the end token is barred before this many (start included)


def caption_images(model: CoCa, images: torch.Tensor, method: Method = "beam", beams: int = 6,
                   max_tokens: int = 30) -> list[str]:
    """One caption per image of `images` (n, 3, H, W), preprocessed as the model evaluates; `max_tokens` counts
    the start and end tokens and is capped at the tokenizer's context length."""
    tokenizer = model.tokenizer
    if not isinstance(model, CoCa):
        raise ValueError(f"{type(model).__name__} has no caption decoder: captions come from a CoCa (model.type coca)")
    if not isinstance(tokenizer, SimpleTokenizer):
        raise ValueError(f"captions decode with open_clip's BPE tokenizer, not {type(tokenizer).__name__}")
    limits = dict(sot=tokenizer.sot_token_id, eot=tokenizer.eot_token_id,
                  max_tokens=min(max_tokens, tokenizer.context_length), min_tokens=MIN_TOKENS)
    if method == "greedy":
        sequences = greedy(model, images, **limits)
    else:
        sequences = [beam_search(model, image, beams=beams, **limits) for image in images]
    return [decode(tokenizer, seq) for seq in sequences]


def decode(tokenizer: SimpleTokenizer, tokens: Sequence[int]) -> str:
    """The text between the start token and the first end token."""
    body = list(tokens[1:])
    if tokenizer.eot_token_id in body:
        body = body[:body.index(tokenizer.eot_token_id)]
    return tokenizer.decode(body).strip()


def generate(source, image_paths: Sequence, method: Method = "beam", beams: int = 6, max_tokens: int = 30,
             weights: str = "raw", device: str = "cpu") -> list[str]:
    """Captions of the image files by the CoCa in `source` (run dir, checkpoint dir or exported open_clip folder,
    as `vlp.models.load_pretrained` reads)."""
    from vlp.models import load_pretrained

    model, preprocess, _, _ = load_pretrained(source, device=device, weights=weights)
    images = torch.stack([preprocess(Image.open(Path(p)).convert("RGB")) for p in image_paths]).to(device)
    return caption_images(model, images, method, beams, max_tokens)
