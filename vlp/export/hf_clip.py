"""open_clip CLIP (native ViT image tower + native causal text tower) → transformers `CLIPModel`.

Exportable: `vision_cfg` without timm/ResNet trunk, attentional pooling, layer scale, `no_ln_pre` or non-`tok`
pooling; `text_cfg` with the causal mask, `argmax`/`eos` pooling, a bias-free linear projection and no CLS embedding.
"""
from __future__ import annotations

import torch
from open_clip.transformer import VisionTransformer

from vlp.export.layers import (Tensors, layer_norm_eps, norm, open_clip_blocks, require, text_encoder,
                               text_tower)

VISION_TOP = {"class_embedding", "positional_embedding", "proj", "conv1.weight", "ln_pre.weight", "ln_pre.bias",
              "ln_post.weight", "ln_post.bias"}


def clip_config_and_weights(model: torch.nn.Module, token_ids: dict) -> tuple[dict, Tensors]:
    """(CLIPConfig kwargs, CLIPModel state dict) computing exactly what `model` computes.

    token_ids: the tokenizer's bos_token_id, eos_token_id, pad_token_id.
    """
    weights: Tensors = {}
    vision_config = _vision(model.visual, weights)
    text_config = _text(model, weights, dict(token_ids))
    weights["logit_scale"] = model.logit_scale.reshape(())
    require(model.logit_bias is None, "CLIPModel has no logit_bias; a sigmoid-loss model exports as SiglipModel")
    require(vision_config["projection_dim"] == text_config["projection_dim"], "towers project to different sizes")
    config = {"text_config": text_config, "vision_config": vision_config,
              "projection_dim": text_config["projection_dim"],
              "logit_scale_init_value": float(model.logit_scale.detach())}
    return config, weights


def _vision(visual: torch.nn.Module, out: Tensors) -> dict:
    require(isinstance(visual, VisionTransformer), f"image tower {type(visual).__name__} is not a native open_clip "
                                                   "ViT (ResNet/ConvNeXt/timm towers export in open_clip format only)")
    require(visual.attn_pool is None and visual.pool_type == "tok", "vision pooling must be the class token")
    require(not isinstance(visual.ln_pre, torch.nn.Identity), "vision tower without ln_pre (no_ln_pre) has no "
                                                              "CLIPModel equivalent")
    require(visual.proj is not None, "vision tower without projection")
    blocks = visual.transformer.resblocks
    top = {n for n, _ in visual.named_parameters() if not n.startswith("transformer.")}
    require(top == VISION_TOP, f"vision tower parameters {sorted(top ^ VISION_TOP)} are not exportable")
    height, width = visual.image_size
    patch = visual.conv1.kernel_size
    require(height == width and patch[0] == patch[1], "CLIPModel needs square images and patches")
    prefix = "vision_model"
    out[f"{prefix}.embeddings.class_embedding"] = visual.class_embedding
    out[f"{prefix}.embeddings.patch_embedding.weight"] = visual.conv1.weight
    out[f"{prefix}.embeddings.position_embedding.weight"] = visual.positional_embedding
    norm(out, f"{prefix}.pre_layrnorm", visual.ln_pre)
    act = open_clip_blocks(out, f"{prefix}.encoder.layers", blocks, "vision")
    norm(out, f"{prefix}.post_layernorm", visual.ln_post)
    out["visual_projection.weight"] = visual.proj.T
    hidden = visual.conv1.out_channels
    return {"hidden_size": hidden, "intermediate_size": blocks[0].mlp.c_fc.out_features,
            "num_hidden_layers": len(blocks), "num_attention_heads": blocks[0].attn.num_heads,
            "num_channels": visual.conv1.in_channels, "image_size": height, "patch_size": patch[0],
            "hidden_act": act, "layer_norm_eps": layer_norm_eps(visual.modules(), "vision tower"),
            "projection_dim": visual.proj.shape[1]}


def _text(model: torch.nn.Module, out: Tensors, token_ids: dict) -> dict:
    text, pool_type, eos_id = text_tower(model)
    require(text.attn_mask is not None, "CLIPModel's text tower is causal; this one is bidirectional")
    require(pool_type in ("argmax", "eos"), f"text pooling {pool_type!r}: CLIPModel pools at the EOS token")
    if pool_type == "eos":
        token_ids["eos_token_id"] = eos_id
    else:  # argmax pooling finds the first EOS only when EOS is the largest id (open_clip's BPE)
        require(token_ids["eos_token_id"] == text.token_embedding.num_embeddings - 1,
                "text pooling 'argmax' with a tokenizer whose EOS is not the largest id; use pool_type 'eos'")
    projection = text.text_projection
    require(isinstance(projection, torch.nn.Parameter), "CLIPModel's text projection is linear without bias")
    config = text_encoder(out, text)
    out["text_projection.weight"] = projection.T
    return {**config, "projection_dim": projection.shape[1], **token_ids}

