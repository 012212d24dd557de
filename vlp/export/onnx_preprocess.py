"""preprocess.json and the tokenizer files of the ONNX format: what a runtime without vlp or open_clip must reproduce
to feed the two encoders as vlp evaluates the model."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer, default_bpe

from vlp.export.formats import preprocess_config
from vlp.export.layers import require

RESIZE = {"shortest": "resize the shorter side to the image size, then crop the centre to the image size",
          "longest": "resize the longer side to the image size, then pad the centre to the image size with fill_color",
          "squash": "resize to the image size, ignoring the aspect ratio"}


def preprocess_facts(model: torch.nn.Module, tokenizer, dynamic_length: bool) -> dict:
    bias = getattr(model, "logit_bias", None)
    return {
        "image": _image_facts(model), "text": _text_facts(model, tokenizer, dynamic_length),
        "outputs": {"image": "image_embeds", "text": "text_embeds", "normalized": False,
                    "note": "projected embeddings, not L2-normalised: normalise both before cosine similarity"},
        "logit_scale": float(model.logit_scale.detach().exp()),
        "logit_bias": None if bias is None else float(bias.detach()),
        "logits": "logit_scale * cosine_similarity + logit_bias (0 when null)",
    }


def _image_facts(model: torch.nn.Module) -> dict:
    cfg = preprocess_config(model)
    size = cfg["size"] if isinstance(cfg["size"], list) else [cfg["size"], cfg["size"]]
    return {"input": "pixel_values", "layout": "NCHW float32 RGB", "size": size, "resize_mode": cfg["resize_mode"],
            "resize": RESIZE[cfg["resize_mode"]], "interpolation": cfg["interpolation"],
            "fill_color": model.preprocess_cfg["fill_color"], "scale": "pixel / 255, then (x - mean) / std",
            "mean": cfg["mean"], "std": cfg["std"]}


def _text_facts(model: torch.nn.Module, tokenizer, dynamic_length: bool) -> dict:
    return {"input": "input_ids", "dtype": "int64", "context_length": tokenizer.context_length,
            "length": "dynamic" if dynamic_length else "fixed",
            "length_note": ("any length up to context_length: pad to the batch's longest" if dynamic_length else
                            "open_clip's text transformer is traced at its context length: always pad to it"),
            "tokenizer": _tokenizer_facts(model, tokenizer)}


def _tokenizer_facts(model: torch.nn.Module, tokenizer) -> dict:
    clean = tokenizer.clean_fn.__name__.removeprefix("_clean_")
    if isinstance(tokenizer, HFTokenizer):
        return {"type": "huggingface", "files": "this folder (transformers.AutoTokenizer.from_pretrained)",
                "padding": "max_length (context_length) or longest", "truncation": True, "clean": clean,
                "strip_sep_token": tokenizer.strip_sep_token}
    require(isinstance(tokenizer, SimpleTokenizer), f"{type(tokenizer).__name__} has no ONNX tokenizer description")
    return {"type": "open_clip.SimpleTokenizer", "bpe_file": Path(_bpe_path(model)).name, "clean": clean,
            "sot_token_id": tokenizer.sot_token_id, "eot_token_id": tokenizer.eot_token_id, "pad_token_id": 0,
            "usage": "open_clip.SimpleTokenizer(bpe_path, context_length=context_length)(texts)"}


def write_tokenizer_files(model: torch.nn.Module, tokenizer, folder: Path) -> None:
    if isinstance(tokenizer, HFTokenizer):
        tokenizer.tokenizer.save_pretrained(str(folder))
    else:
        shutil.copyfile(_bpe_path(model), folder / Path(_bpe_path(model)).name)


def _bpe_path(model: torch.nn.Module) -> str:
    """The BPE vocabulary the tokenizer was built from (vlp.models.towers.make_tokenizer): the config's, else
    open_clip's."""
    kwargs = model.open_clip_config.get("text_cfg", {}).get("tokenizer_kwargs") or {}
    return kwargs.get("bpe_path", default_bpe())
