"""Writers of the two exported formats: open_clip's folder layout and a transformers CLIPModel/SiglipModel folder.

Both live side by side at the folder root (as on the Hub): open_clip reads open_clip_config.json +
open_clip_model.safetensors, transformers reads config.json + model.safetensors; the tokenizer files are shared.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from open_clip.tokenizer import HFTokenizer
from safetensors.torch import save_file

from vlp.export.hf_processor import hf_tokenizer, save_processor, token_ids
from vlp.export.layers import require
from vlp.models import portable_config
from vlp.models.checkpoints import EXPORT_CONFIG, EXPORT_WEIGHTS
from vlp.models.timm_activation import timm_act_kwargs
from vlp.models.towers import CoCa
from vlp.models.towers import OpenClipEncoder

PREPROCESS_KEYS = ("size", "mean", "std", "interpolation", "resize_mode")


def _tensors(state: dict) -> dict:
    return {name: value.detach().to("cpu").contiguous().clone() for name, value in state.items()}


def open_clip_model(model: torch.nn.Module) -> OpenClipEncoder:
    """`model` itself; only open_clip towers have the open_clip config both export formats are written from."""
    require(isinstance(model, OpenClipEncoder), f"{type(model).__name__} is not an open_clip tower: only those "
            f"export (open_clip/transformers formats); train with export.formats: [] and no export.push_to_hub")
    return model


def preprocess_config(model: torch.nn.Module) -> dict:
    cfg = model.preprocess_cfg
    return {key: (list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key]) for key in PREPROCESS_KEYS}


def open_clip_caveat(model: torch.nn.Module) -> Optional[str]:
    """What open_clip's own loader would compute otherwise than `model` from its open_clip folder, if anything."""
    act_kwargs = timm_act_kwargs(getattr(model, "open_clip_config", {}).get("vision_cfg", {}))
    if act_kwargs:
        return (f"open_clip format: open_clip's own loader ignores vision_cfg.act_kwargs {act_kwargs} on a "
                f"timm image tower and computes the timm model's GELU, so its image embeddings differ slightly; vlp's "
                f"loader and the transformers format compute the tower as trained")
    return None


def write_open_clip(model: torch.nn.Module, tokenizer, out_dir: Path) -> None:
    config = {"model_cfg": portable_config(open_clip_model(model).open_clip_config),
              "preprocess_cfg": preprocess_config(model)}
    (out_dir / EXPORT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file(_tensors(model.state_dict()), str(out_dir / EXPORT_WEIGHTS), metadata={"format": "pt"})
    if isinstance(tokenizer, HFTokenizer):  # open_clip's local-dir: loader reads it from the folder
        tokenizer.tokenizer.save_pretrained(str(out_dir))


def transformers_kind(model: torch.nn.Module) -> str:
    """"siglip" for a model with a logit bias (sigmoid objective), else "clip"."""
    return "siglip" if getattr(model, "logit_bias", None) is not None else "clip"


def convert_transformers(model: torch.nn.Module, tokenizer):
    """(kind, config object, weights, HF tokenizer); raises NotExportable before anything is written."""
    from transformers import CLIPConfig, SiglipConfig

    from vlp.export.hf_clip import clip_config_and_weights
    from vlp.export.hf_siglip import siglip_config_and_weights

    require(not isinstance(model, CoCa), "transformers has no CoCa model (a caption decoder); export it in the "
            "open_clip format (--format open_clip)")
    kind = transformers_kind(open_clip_model(model))
    hf_tok = hf_tokenizer(tokenizer)
    ids = token_ids(hf_tok)
    if kind == "clip":
        kwargs, weights = clip_config_and_weights(model, ids)
        config = CLIPConfig(**kwargs)
        config.architectures = ["CLIPModel"]
    else:
        kwargs, weights = siglip_config_and_weights(model, ids)
        require(isinstance(tokenizer, HFTokenizer), "SiglipModel export needs an HF tokenizer (text_cfg."
                "hf_tokenizer_name): open_clip's BPE tokenizer pads with id 0, which a transformers tokenizer "
                "cannot reproduce, and last-token pooling sees the padding")
        config = SiglipConfig(**kwargs)
        config.architectures = ["SiglipModel"]
    return kind, config, _tensors(weights), hf_tok


def write_transformers(converted, model: torch.nn.Module, out_dir: Path) -> None:
    from transformers.utils import SAFE_WEIGHTS_NAME

    kind, config, weights, hf_tok = converted
    config.save_pretrained(str(out_dir))
    save_file(weights, str(out_dir / SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    save_processor(out_dir, kind, hf_tok, preprocess_config(model))
