"""transformers `SiglipModel` → the open_clip SigLIP computing the same: its config and its weights.

The reverse of vlp.export.hf_siglip: the image tower is a timm ViT with MAP pooling (no class token, no projection),
the text tower open_clip's bidirectional TextTransformer pooling the last token through a linear head with bias.
open_clip's TimmModel passes no architecture arguments to timm, so the image tower must be a *registered* timm model
(`timm.list_models("*siglip*")`) whose architecture is exactly the folder's, up to the GELU's approximation, which
`vision_cfg.act_kwargs` sets (timm registers Google's SigLIP architectures with exact GELU, the folders compute tanh).
Which one is decided by building each candidate on the meta device and exporting its config with hf_siglip, so both
directions share one definition.
"""
from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Optional

import torch

from vlp.models.from_hf_clip import (Tensors, encoder_blocks, mlp_ratio, norm_kwargs, take, text_encoder,
                                     weight_and_bias, without_buffers)

log = logging.getLogger(__name__)
# text hidden_act → open_clip text_cfg keys (+ the top-level quick_gelu flag): nn.GELU(approximate="tanh") is
# transformers' gelu_pytorch_tanh; the timm image tower takes its activation from the timm model, not from these.
TEXT_ACTS = {"gelu": (False, {}), "gelu_pytorch_tanh": (False, {"act_kwargs": {"approximate": "tanh"}}),
             "quick_gelu": (True, {})}
VISION_GELUS = {"gelu": "none", "gelu_pytorch_tanh": "tanh"}  # hidden_act → torch GELU's approximate
VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
               "image_size", "patch_size", "hidden_act", "layer_norm_eps")  # what hf_siglip's export writes
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
BPE_VOCAB = 49408  # open_clip's SimpleTokenizer ids, the tokenizer a folder without a usable one gets
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes in preprocessor_config.json


def open_clip_config(hf, folder: Path) -> dict:
    """The open_clip model config of a transformers SiglipConfig saved in `folder`; ValueError naming the setting
    open_clip cannot represent."""
    vision, text = hf.vision_config, hf.text_config
    if text.projection_size != vision.hidden_size:  # SiglipModel compares the two embeddings directly
        raise ValueError(f"text projection_size {text.projection_size} differs from vision hidden_size "
                         f"{vision.hidden_size}")
    quick_gelu, text_cfg = _text_cfg(text, folder)
    return {"embed_dim": vision.hidden_size, "quick_gelu": quick_gelu, "custom_text": True,
            "vision_cfg": _vision_cfg(vision), "text_cfg": text_cfg, **_preprocess(folder)}


def _vision_cfg(vision) -> dict:
    if not vision.vision_use_head:
        raise ValueError("vision_use_head false: open_clip's SigLIP image tower pools with the MAP head")
    for name in ("image_size", "patch_size"):
        if not isinstance(getattr(vision, name), int):
            raise ValueError(f"vision {name} {getattr(vision, name)}: timm's SigLIP ViTs are square")
    name, timm_act = timm_name(vision)
    act = {} if timm_act == vision.hidden_act else {"act_kwargs": {"approximate": VISION_GELUS[vision.hidden_act]}}
    return {"image_size": vision.image_size, "timm_model_name": name, "timm_model_pretrained": False,
            "timm_pool": "map", "timm_proj": "none", **act}


def timm_name(vision) -> tuple[str, str]:
    """(the registered timm model whose SigLIP export has this vision config, its hidden_act): one computing the same
    GELU if registered, else one differing only there (vlp.models.timm_activation sets the folder's); else ValueError
    naming the nearest's differences."""
    wanted = {key: getattr(vision, key) for key in VISION_KEYS}
    nearest: Optional[tuple[int, str, list[str]]] = None
    other_gelu: Optional[tuple[str, str]] = None
    for name in _candidates(vision.patch_size, vision.image_size):
        found = _exported_vision(name)
        if found is None:
            continue
        differing = [k for k in VISION_KEYS if wanted[k] != found[k]]
        if not differing:
            return name, found["hidden_act"]
        if differing == ["hidden_act"] and {wanted["hidden_act"], found["hidden_act"]} <= set(VISION_GELUS):
            other_gelu = other_gelu or (name, found["hidden_act"])
        diffs = [f"{k}: {wanted[k]!r} vs {found[k]!r}" for k in differing]
        if nearest is None or len(diffs) < nearest[0]:
            nearest = (len(diffs), name, diffs)
    if other_gelu:
        return other_gelu
    near = f"; nearest {nearest[1]} differs at {', '.join(nearest[2][:3])}" if nearest else ""
    raise ValueError(f"vision_config {', '.join(f'{k}={v}' for k, v in wanted.items())}: no registered timm SigLIP "
                     f"ViT (timm.list_models('*siglip*')) has this architecture{near}")


def _candidates(patch: int, image: int) -> list[str]:
    """timm's *siglip* models, less those whose name says another patch or image size (building all takes seconds)."""
    import timm

    def fits(name: str) -> bool:
        named_patch, named_size = re.search(r"patch(\d+)", name), re.search(r"_(\d+)$", name)
        return ((named_patch is None or int(named_patch.group(1)) == patch)
                and (named_size is None or int(named_size.group(1)) == image))
    return [name for name in sorted(timm.list_models("*siglip*")) if fits(name)]


@functools.lru_cache(maxsize=None)
def _exported_vision(name: str) -> Optional[dict]:
    """The SiglipVisionConfig hf_siglip exports for timm model `name` as open_clip builds it; None if not exportable."""
    from open_clip.timm_model import TimmModel

    from vlp.export.hf_siglip import _vision
    from vlp.export.layers import NotExportable

    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            visual = TimmModel(name, embed_dim=0, pool="map", proj="none")
        return _vision(visual, {})
    except (NotExportable, TypeError, ValueError, AttributeError):  # another trunk class (naflex, ...)
        return None


def _text_cfg(text, folder: Path) -> tuple[bool, dict]:
    if text.hidden_act not in TEXT_ACTS:
        raise ValueError(f"text hidden_act {text.hidden_act!r}: open_clip's text tower has {', '.join(TEXT_ACTS)}")
    quick_gelu, act = TEXT_ACTS[text.hidden_act]
    cfg = {"context_length": text.max_position_embeddings, "vocab_size": text.vocab_size, "width": text.hidden_size,
           "heads": text.num_attention_heads, "layers": text.num_hidden_layers, "mlp_ratio": mlp_ratio(text),
           **norm_kwargs(text), **act,
           "no_causal_mask": True, "pool_type": "last", "proj_bias": True,  # SiglipTextTransformer's layout
           **_tokenizer(text, folder)}
    return quick_gelu, cfg


def _tokenizer(text, folder: Path) -> dict:
    """The folder's own tokenizer when transformers loads it offline; else open_clip's BPE, as for CLIPModel folders.

    SigLIP's own tokenizer is sentencepiece; without that package (or with no tokenizer files) it does not load, and
    the BPE tokenizer is usable only if the vocabulary holds its ids.
    """
    why = "no tokenizer files"
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        try:
            AutoTokenizer.from_pretrained(str(folder))
            return {"hf_tokenizer_name": str(folder.resolve())}
        except Exception as e:  # transformers raises ImportError, ValueError, OSError... by tokenizer class
            why = f"its tokenizer does not load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            log.warning("%s: %s; using open_clip's BPE tokenizer", folder, why)
    if text.vocab_size < BPE_VOCAB:
        raise ValueError(f"text vocab_size {text.vocab_size}: {why}, and open_clip's BPE tokenizer needs "
                         f"{BPE_VOCAB} ids")
    return {}


def _preprocess(folder: Path) -> dict:
    """The image processor's size, mean, std and resampling (SigLIP squashes to a square, no crop), when saved."""
    saved = _image_processor(folder)
    if saved is None:
        return {}
    size = saved.get("size", {})
    cfg = {"mean": saved.get("image_mean"), "std": saved.get("image_std"), "size": size.get("height"),
           "interpolation": RESAMPLE.get(saved.get("resample")), "resize_mode": "squash"}
    return {"preprocess_cfg": {k: v for k, v in cfg.items() if v is not None}}


def _image_processor(folder: Path) -> Optional[dict]:
    """transformers 5 nests it in processor_config.json; earlier versions (most Hub folders) write it alone."""
    alone, nested = folder / "preprocessor_config.json", folder / "processor_config.json"
    if alone.is_file():
        return json.loads(alone.read_text())
    if nested.is_file():
        return json.loads(nested.read_text()).get("image_processor")
    return None


def open_clip_state(hf: Tensors, layers: tuple[int, int]) -> tuple[Tensors, list[str]]:
    """(open_clip CustomTextCLIP state dict, the SiglipModel keys it left unused) for (vision, text) layer counts."""
    source = without_buffers(hf)
    out: Tensors = {}
    _vision(out, source, layers[0])
    text_encoder(out, "text.", source, layers[1])
    weight_and_bias(out, "text.text_projection", source, "text_model.head")
    for name in ("logit_scale", "logit_bias"):
        out[name] = take(source, name)
    return out, sorted(source)


def _vision(out: Tensors, source: Tensors, layers: int) -> None:
    hf, trunk = "vision_model", "visual.trunk"
    weight_and_bias(out, f"{trunk}.patch_embed.proj", source, f"{hf}.embeddings.patch_embedding")
    out[f"{trunk}.pos_embed"] = take(source, f"{hf}.embeddings.position_embedding.weight")[None]  # timm: (1, N, D)
    for i in range(layers):
        _timm_block(out, f"{trunk}.blocks.{i}", source, f"{hf}.encoder.layers.{i}")
    weight_and_bias(out, f"{trunk}.norm", source, f"{hf}.post_layernorm")
    _map_head(out, f"{trunk}.attn_pool", source, f"{hf}.head")


def _timm_block(out: Tensors, block: str, source: Tensors, layer: str) -> None:
    """HF encoder layer → timm Block (q, k, v stacked into the fused qkv)."""
    weight_and_bias(out, f"{block}.norm1", source, f"{layer}.layer_norm1")
    for name in ("weight", "bias"):
        out[f"{block}.attn.qkv.{name}"] = torch.cat([take(source, f"{layer}.self_attn.{p}_proj.{name}")
                                                     for p in "qkv"])
    weight_and_bias(out, f"{block}.attn.proj", source, f"{layer}.self_attn.out_proj")
    weight_and_bias(out, f"{block}.norm2", source, f"{layer}.layer_norm2")
    weight_and_bias(out, f"{block}.mlp.fc1", source, f"{layer}.mlp.fc1")
    weight_and_bias(out, f"{block}.mlp.fc2", source, f"{layer}.mlp.fc2")


def _map_head(out: Tensors, pool: str, source: Tensors, head: str) -> None:
    """HF's MultiheadAttention pooling head → timm AttentionPoolLatent: in_proj is [q; k; v], timm's kv is [k; v]."""
    out[f"{pool}.latent"] = take(source, f"{head}.probe")
    for name in ("weight", "bias"):
        in_proj = take(source, f"{head}.attention.in_proj_{name}")
        width = in_proj.shape[0] // 3
        out[f"{pool}.q.{name}"], out[f"{pool}.kv.{name}"] = in_proj[:width], in_proj[width:]
    weight_and_bias(out, f"{pool}.proj", source, f"{head}.attention.out_proj")
    weight_and_bias(out, f"{pool}.norm", source, f"{head}.layernorm")
    weight_and_bias(out, f"{pool}.mlp.fc1", source, f"{head}.mlp.fc1")
    weight_and_bias(out, f"{pool}.mlp.fc2", source, f"{head}.mlp.fc2")

