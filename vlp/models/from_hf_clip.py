"""transformers `CLIPModel` → the open_clip CLIP computing the same: its config and its weights.

The reverse of vlp.export.hf_clip: native ViT image tower (class-token pooling, pre/post layer norms) and causal text
tower, both with bias-free linear projections. open_clip uses one activation for both towers, so they must agree.
"""
from __future__ import annotations

import torch

Tensors = dict[str, torch.Tensor]
OPEN_CLIP_ACTS = {"quick_gelu": True, "gelu": False}  # hidden_act → open_clip's quick_gelu flag
OPEN_CLIP_EPS = 1e-5  # torch's LayerNorm default, open_clip's unless norm_kwargs say otherwise
LEGACY_EOS = 2  # transformers pools at the largest token id (argmax) when eos_token_id is 2, as open_clip's argmax


def open_clip_config(hf) -> dict:
    """The open_clip model config of a transformers CLIPConfig; ValueError where open_clip has no equivalent."""
    vision, text = hf.vision_config, hf.text_config
    acts = {vision.hidden_act, text.hidden_act}
    if len(acts) != 1 or not acts <= set(OPEN_CLIP_ACTS):
        raise ValueError(f"hidden_act {sorted(acts)}: open_clip needs one activation for both towers, one of "
                         f"{', '.join(OPEN_CLIP_ACTS)}")
    if vision.num_channels != 3:
        raise ValueError(f"vision num_channels {vision.num_channels}: open_clip's ViT reads RGB images")
    vision_cfg = {"image_size": vision.image_size, "patch_size": vision.patch_size, "width": vision.hidden_size,
                  "layers": vision.num_hidden_layers, "head_width": head_width(vision),
                  "mlp_ratio": mlp_ratio(vision), **norm_kwargs(vision)}
    text_cfg = {"context_length": text.max_position_embeddings, "vocab_size": text.vocab_size,
                "width": text.hidden_size, "heads": text.num_attention_heads, "layers": text.num_hidden_layers,
                "mlp_ratio": mlp_ratio(text), **norm_kwargs(text), **_pooling(text)}
    return {"embed_dim": hf.projection_dim, "quick_gelu": OPEN_CLIP_ACTS[acts.pop()], "vision_cfg": vision_cfg,
            "text_cfg": text_cfg}


def head_width(tower) -> int:
    if tower.hidden_size % tower.num_attention_heads:
        raise ValueError(f"hidden_size {tower.hidden_size} is not a multiple of {tower.num_attention_heads} heads")
    return tower.hidden_size // tower.num_attention_heads


def mlp_ratio(tower) -> float:
    ratio = tower.intermediate_size / tower.hidden_size
    if int(tower.hidden_size * ratio) != tower.intermediate_size:  # open_clip's MLP width is int(width * mlp_ratio)
        raise ValueError(f"intermediate_size {tower.intermediate_size} is not reachable as open_clip's "
                         f"int(width * mlp_ratio)")
    return ratio


def norm_kwargs(tower) -> dict:
    """open_clip's norm_kwargs for the tower's layer_norm_eps (none at open_clip's default)."""
    return {} if tower.layer_norm_eps == OPEN_CLIP_EPS else {"norm_kwargs": {"eps": tower.layer_norm_eps}}


def _pooling(text) -> dict:
    return {} if text.eos_token_id == LEGACY_EOS else {"pool_type": "eos", "eos_id": text.eos_token_id}


def open_clip_state(hf: Tensors, layers: tuple[int, int]) -> tuple[Tensors, list[str]]:
    """(open_clip CLIP state dict, the CLIPModel keys it left unused) for (vision, text) layer counts."""
    source = without_buffers(hf)
    out: Tensors = {}
    _vision(out, source, layers[0])
    _text(out, source, layers[1])
    out["logit_scale"] = take(source, "logit_scale")
    return out, sorted(source)


def without_buffers(hf: Tensors) -> Tensors:
    """A copy of the state dict without the position-id buffers open_clip recomputes (`take` empties it)."""
    return {k: v for k, v in hf.items() if not k.endswith("position_ids")}


def take(source: Tensors, key: str) -> torch.Tensor:
    if key not in source:
        raise KeyError(key)
    return source.pop(key)


def _vision(out: Tensors, source: Tensors, layers: int) -> None:
    hf = "vision_model"
    out["visual.class_embedding"] = take(source, f"{hf}.embeddings.class_embedding")
    out["visual.conv1.weight"] = take(source, f"{hf}.embeddings.patch_embedding.weight")
    out["visual.positional_embedding"] = take(source, f"{hf}.embeddings.position_embedding.weight")
    weight_and_bias(out, "visual.ln_pre", source, f"{hf}.pre_layrnorm")
    encoder_blocks(out, "visual.transformer.resblocks", source, f"{hf}.encoder.layers", layers)
    weight_and_bias(out, "visual.ln_post", source, f"{hf}.post_layernorm")
    out["visual.proj"] = take(source, "visual_projection.weight").T


def _text(out: Tensors, source: Tensors, layers: int) -> None:
    text_encoder(out, "", source, layers)
    out["text_projection"] = take(source, "text_projection.weight").T


def text_encoder(out: Tensors, prefix: str, source: Tensors, layers: int) -> None:
    """HF `text_model.*` (embeddings, layers, final norm) → open_clip's text transformer under `prefix` ("" on CLIP,
    "text." on CustomTextCLIP); the projection differs between the two and is the caller's."""
    hf = "text_model"
    out[f"{prefix}token_embedding.weight"] = take(source, f"{hf}.embeddings.token_embedding.weight")
    out[f"{prefix}positional_embedding"] = take(source, f"{hf}.embeddings.position_embedding.weight")
    encoder_blocks(out, f"{prefix}transformer.resblocks", source, f"{hf}.encoder.layers", layers)
    weight_and_bias(out, f"{prefix}ln_final", source, f"{hf}.final_layer_norm")


def weight_and_bias(out: Tensors, prefix: str, source: Tensors, hf: str) -> None:
    """A LayerNorm's or Linear's weight and bias, same names on both sides."""
    for name in ("weight", "bias"):
        out[f"{prefix}.{name}"] = take(source, f"{hf}.{name}")


def encoder_blocks(out: Tensors, prefix: str, source: Tensors, hf: str, layers: int) -> None:
    """HF encoder layers → open_clip ResidualAttentionBlocks (q, k, v stacked into MultiheadAttention's in_proj)."""
    for i in range(layers):
        block, layer = f"{prefix}.{i}", f"{hf}.{i}"
        weight_and_bias(out, f"{block}.ln_1", source, f"{layer}.layer_norm1")
        for name in ("weight", "bias"):
            out[f"{block}.attn.in_proj_{name}"] = torch.cat(
                [take(source, f"{layer}.self_attn.{p}_proj.{name}") for p in "qkv"])
            out[f"{block}.attn.out_proj.{name}"] = take(source, f"{layer}.self_attn.out_proj.{name}")
            out[f"{block}.mlp.c_fc.{name}"] = take(source, f"{layer}.mlp.fc1.{name}")
            out[f"{block}.mlp.c_proj.{name}"] = take(source, f"{layer}.mlp.fc2.{name}")
        weight_and_bias(out, f"{block}.ln_2", source, f"{layer}.layer_norm2")
