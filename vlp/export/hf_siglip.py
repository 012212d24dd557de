"""open_clip SigLIP-style model → transformers `SiglipModel`.

Exportable: image tower = timm ViT with MAP pooling and no class/register tokens (`timm_model_name` one of timm's
`vit_*_siglip_*` models, `timm_pool: map`, `timm_proj: none`); text tower = open_clip TextTransformer with
`no_causal_mask: true`, `pool_type: last`, `proj_bias: true` (text projection to the image width) and an HF
tokenizer (`hf_tokenizer_name`, so padding is identical on both sides); a logit bias. This is the layout of
open_clip's ViT-B-16-SigLIP config.
"""
from __future__ import annotations

import torch
from open_clip.timm_model import TimmModel

from vlp.export.layers import (Tensors, activation_name, layer_norm_eps, linear, norm, qkv,
                               require, require_params, text_encoder, text_tower)

TIMM_BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
              "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
MAP_HEAD = ["latent", "q.weight", "q.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias", "norm.weight",
            "norm.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


def siglip_config_and_weights(model: torch.nn.Module, token_ids: dict) -> tuple[dict, Tensors]:
    """(SiglipConfig kwargs, SiglipModel state dict) computing exactly what `model` computes."""
    weights: Tensors = {}
    vision_config = _vision(model.visual, weights)
    text_config = _text(model, weights, token_ids)
    require(text_config["projection_size"] == vision_config["hidden_size"],
            "SiglipModel needs the text projection to end at the image tower's width")
    require(model.logit_bias is not None, "SiglipModel needs a logit_bias (sigmoid objective)")
    weights["logit_scale"] = model.logit_scale.reshape(1)
    weights["logit_bias"] = model.logit_bias.reshape(1)
    return {"text_config": text_config, "vision_config": vision_config}, weights


def _vision(visual: torch.nn.Module, out: Tensors) -> dict:
    require(isinstance(visual, TimmModel), "SiglipModel export needs a timm ViT image tower with MAP pooling")
    trunk = visual.trunk
    require(len(visual.head) == 0, "image tower has a projection after the MAP head (use timm_proj: none)")
    require(getattr(trunk, "global_pool", None) == "map" and getattr(trunk, "cls_token", 1) is None
            and getattr(trunk, "num_reg_tokens", 1) == 0, "image tower must be a timm ViT with MAP pooling and "
                                                           "no class or register tokens")
    blocks = trunk.blocks
    for i, block in enumerate(blocks):
        require_params(block, TIMM_BLOCK, f"vision block {i}")
    pool = trunk.attn_pool
    require_params(pool, MAP_HEAD, "MAP head")
    require(pool.latent_len == 1 and pool.pos_embed is None, "MAP head must use one latent and no pos embed")
    top = {n for n, _ in trunk.named_parameters() if not n.startswith(("blocks.", "attn_pool."))}
    expected = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias"}
    require(top == expected, f"timm trunk parameters {sorted(top ^ expected)} are not exportable")
    acts = {activation_name(m.mlp.act, "vision") for m in [*blocks, pool]}
    require(len(acts) == 1, f"vision tower uses different activations {sorted(acts)}")
    prefix = "vision_model"
    out[f"{prefix}.embeddings.patch_embedding.weight"] = trunk.patch_embed.proj.weight
    out[f"{prefix}.embeddings.patch_embedding.bias"] = trunk.patch_embed.proj.bias
    out[f"{prefix}.embeddings.position_embedding.weight"] = trunk.pos_embed.reshape(-1, trunk.pos_embed.shape[-1])
    for i, block in enumerate(blocks):
        _timm_block(out, f"{prefix}.encoder.layers.{i}", block)
    norm(out, f"{prefix}.post_layernorm", trunk.norm)
    _map_head(out, f"{prefix}.head", pool)
    height, width = trunk.patch_embed.img_size
    patch = trunk.patch_embed.patch_size
    require(height == width and patch[0] == patch[1], "SiglipModel needs square images and patches")
    heads = {b.attn.num_heads for b in blocks} | {pool.num_heads}
    require(len(heads) == 1, "MAP head and blocks use different head counts")
    return {"hidden_size": trunk.embed_dim, "intermediate_size": blocks[0].mlp.fc1.out_features,
            "num_hidden_layers": len(blocks), "num_attention_heads": heads.pop(), "num_channels": 3,
            "image_size": height, "patch_size": patch[0], "hidden_act": acts.pop(),
            "layer_norm_eps": layer_norm_eps(trunk.modules(), "vision tower")}


def _timm_block(out: Tensors, layer: str, block: torch.nn.Module) -> None:
    norm(out, f"{layer}.layer_norm1", block.norm1)
    qkv(out, f"{layer}.self_attn", block.attn.qkv.weight, block.attn.qkv.bias)
    linear(out, f"{layer}.self_attn.out_proj", block.attn.proj)
    norm(out, f"{layer}.layer_norm2", block.norm2)
    linear(out, f"{layer}.mlp.fc1", block.mlp.fc1)
    linear(out, f"{layer}.mlp.fc2", block.mlp.fc2)


def _map_head(out: Tensors, prefix: str, pool: torch.nn.Module) -> None:
    """timm AttentionPoolLatent → HF's nn.MultiheadAttention-based pooling head (kv is [k; v])."""
    out[f"{prefix}.probe"] = pool.latent
    out[f"{prefix}.attention.in_proj_weight"] = torch.cat([pool.q.weight, pool.kv.weight])
    out[f"{prefix}.attention.in_proj_bias"] = torch.cat([pool.q.bias, pool.kv.bias])
    linear(out, f"{prefix}.attention.out_proj", pool.proj)
    norm(out, f"{prefix}.layernorm", pool.norm)
    linear(out, f"{prefix}.mlp.fc1", pool.mlp.fc1)
    linear(out, f"{prefix}.mlp.fc2", pool.mlp.fc2)


def _text(model: torch.nn.Module, out: Tensors, token_ids: dict) -> dict:
    text, pool_type, _ = text_tower(model)
    require(text.attn_mask is None, "SiglipModel's text tower is bidirectional (set text_cfg.no_causal_mask)")
    require(pool_type == "last", f"text pooling {pool_type!r}: SiglipModel pools the last token")
    projection = text.text_projection
    require(isinstance(projection, torch.nn.Linear) and projection.bias is not None,
            "SiglipModel's text head is a linear layer with bias (set text_cfg.proj_bias)")
    config = text_encoder(out, text)
    linear(out, "text_model.head", projection)
    return {**config, "projection_size": projection.out_features, **token_ids}
