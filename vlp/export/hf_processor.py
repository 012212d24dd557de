"""Tokenizer and image processor files for an exported transformers folder, built offline.

open_clip's BPE tokenizer becomes a `CLIPTokenizer` from open_clip's own vocab and merges (bpe_simple_vocab_16e6),
with HF's names for the start/end tokens; it pads with <|endoftext|> where open_clip pads with 0, which changes
nothing for EOS-pooled (CLIP) text towers (a pad token "!" would split "!!" as an added token). HF tokenizers of
the text tower are saved as they are.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
from open_clip.tokenizer import HFTokenizer

_HF_SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def hf_tokenizer(tokenizer):
    """A transformers tokenizer giving the same ids as the open_clip tokenizer up to and including EOS."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.tokenizer
    if not isinstance(tokenizer, open_clip.SimpleTokenizer) or tokenizer.clean_fn.__name__ != "_clean_lower":
        raise ValueError(f"no transformers equivalent known for tokenizer {type(tokenizer).__name__}")
    from transformers import CLIPTokenizer

    vocab = {_HF_SPECIAL.get(token, token): index for token, index in tokenizer.encoder.items()}
    merges = [pair for pair, _ in sorted(tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=tokenizer.context_length)


def token_ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}


def save_processor(out_dir: Path, kind: str, tokenizer, preprocess_cfg: dict) -> None:
    """`kind` "clip" or "siglip": processor_config + image processor + tokenizer files in `out_dir`."""
    from transformers import CLIPImageProcessor, CLIPProcessor, SiglipImageProcessor, SiglipProcessor

    size = preprocess_cfg["size"]
    size = size[0] if isinstance(size, (tuple, list)) else size
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0}[preprocess_cfg.get("interpolation", "bicubic")]
    common = dict(image_mean=list(preprocess_cfg["mean"]), image_std=list(preprocess_cfg["std"]), resample=resample)
    if kind == "clip":
        images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **common)
        processor = CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    else:
        images = SiglipImageProcessor(size={"height": size, "width": size}, **common)
        processor = SiglipProcessor(image_processor=images, tokenizer=tokenizer)
    processor.save_pretrained(str(out_dir))
