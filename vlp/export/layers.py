"""Shared pieces of the open_clip → transformers weight mapping: blocks, activations, layer-norm eps.

Every mapping first checks that the open_clip module has exactly the parameters it maps, so a tower with extra
parts (layer scale, qk-norm, registers, ...) is refused with a message instead of exported wrongly.
"""
from __future__ import annotations

from typing import Iterable

import torch
from open_clip.transformer import QuickGELU
from timm.layers.activations import GELU, GELUTanh
from timm.layers.activations import QuickGELU as TimmQuickGELU


class NotExportable(ValueError):
    """The model cannot be expressed exactly in the requested transformers architecture."""


Tensors = dict[str, torch.Tensor]


def require(condition: bool, message: str) -> None:
    if not condition:
        raise NotExportable(message)


def param_names(module: torch.nn.Module) -> set[str]:
    return {name for name, _ in module.named_parameters()}


def require_params(module: torch.nn.Module, expected: Iterable[str], what: str) -> None:
    found, expected = param_names(module), set(expected)
    require(found == expected, f"{what} has parameters {sorted(found ^ expected)} outside the exportable layout")


def activation_name(module: torch.nn.Module, what: str) -> str:
    """The transformers `hidden_act` computing exactly what `module` computes."""
    if isinstance(module, QuickGELU):
        return "quick_gelu"
    if isinstance(module, torch.nn.GELU):
        return {"none": "gelu", "tanh": "gelu_pytorch_tanh"}[module.approximate]
    timm_names = {GELU: "gelu", GELUTanh: "gelu_pytorch_tanh", TimmQuickGELU: "quick_gelu"}
    if type(module) in timm_names:
        return timm_names[type(module)]
    raise NotExportable(f"{what}: activation {type(module).__name__} has no transformers equivalent here")


def layer_norm_eps(modules: Iterable[torch.nn.Module], what: str) -> float:
    """transformers uses one eps per tower; every LayerNorm must agree and carry weight and bias."""
    norms = [m for m in modules if isinstance(m, torch.nn.LayerNorm)]
    require(bool(norms), f"{what}: no LayerNorm found")
    eps = {m.eps for m in norms}
    require(len(eps) == 1, f"{what}: LayerNorms use different eps {sorted(eps)}")
    require(all(m.elementwise_affine and m.bias is not None for m in norms), f"{what}: LayerNorm without affine")
    return eps.pop()


def norm(out: Tensors, prefix: str, module: torch.nn.LayerNorm) -> None:
    out[f"{prefix}.weight"] = module.weight
    out[f"{prefix}.bias"] = module.bias


def linear(out: Tensors, prefix: str, module: torch.nn.Linear) -> None:
    out[f"{prefix}.weight"] = module.weight
    if module.bias is not None:
        out[f"{prefix}.bias"] = module.bias


def qkv(out: Tensors, prefix: str, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """A fused [q; k; v] input projection → separate q_proj, k_proj, v_proj."""
    for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3), bias.chunk(3)):
        out[f"{prefix}.{name}.weight"] = w
        out[f"{prefix}.{name}.bias"] = b


OPEN_CLIP_BLOCK = ["ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
                   "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                   "mlp.c_proj.weight", "mlp.c_proj.bias"]


def open_clip_blocks(out: Tensors, prefix: str, blocks: torch.nn.ModuleList, what: str) -> str:
    """open_clip ResidualAttentionBlocks → `{prefix}.{i}.*` encoder layers; returns the activation name."""
    acts = set()
    for i, block in enumerate(blocks):
        require_params(block, OPEN_CLIP_BLOCK, f"{what} block {i}")
        require(isinstance(block.ls_1, torch.nn.Identity) and isinstance(block.ls_2, torch.nn.Identity),
                f"{what} block {i}: layer scale is not exportable")
        acts.add(activation_name(block.mlp.gelu, f"{what} block {i}"))
        layer = f"{prefix}.{i}"
        norm(out, f"{layer}.layer_norm1", block.ln_1)
        qkv(out, f"{layer}.self_attn", block.attn.in_proj_weight, block.attn.in_proj_bias)
        linear(out, f"{layer}.self_attn.out_proj", block.attn.out_proj)
        norm(out, f"{layer}.layer_norm2", block.ln_2)
        linear(out, f"{layer}.mlp.fc1", block.mlp.c_fc)
        linear(out, f"{layer}.mlp.fc2", block.mlp.c_proj)
    require(len(acts) == 1, f"{what}: blocks use different activations {sorted(acts)}")
    return acts.pop()


def text_tower(model: torch.nn.Module):
    """The native open_clip text tower: CLIP keeps its parts on the model, CustomTextCLIP on `model.text`."""
    text = getattr(model, "text", None)
    if text is None:
        return model, model.text_pool_type, getattr(model, "text_eos_id", None)
    from open_clip.transformer import TextTransformer
    require(isinstance(text, TextTransformer), f"text tower {type(text).__name__} is not open_clip's "
                                               f"TextTransformer (HF text towers are open_clip-format only)")
    require(text.cls_emb is None and not getattr(text, "use_pad_mask", False),
            "text tower with a CLS embedding or pad mask is not exportable")
    return text, text.pool_type, text.eos_id


def text_encoder(out: Tensors, text: torch.nn.Module) -> dict:
    """open_clip's text transformer → HF `text_model.*` (embeddings, layers, final norm); returns the shared config."""
    prefix = "text_model"
    out[f"{prefix}.embeddings.token_embedding.weight"] = text.token_embedding.weight
    out[f"{prefix}.embeddings.position_embedding.weight"] = text.positional_embedding
    blocks = text.transformer.resblocks
    act = open_clip_blocks(out, f"{prefix}.encoder.layers", blocks, "text")
    norm(out, f"{prefix}.final_layer_norm", text.ln_final)
    text_norms = [text.ln_final, *[m for b in blocks for m in b.modules()]]
    return {"vocab_size": text.token_embedding.num_embeddings, "hidden_size": text.token_embedding.embedding_dim,
            "intermediate_size": blocks[0].mlp.c_fc.out_features, "num_hidden_layers": len(blocks),
            "num_attention_heads": blocks[0].attn.num_heads,
            "max_position_embeddings": text.positional_embedding.shape[0], "hidden_act": act,
            "layer_norm_eps": layer_norm_eps(text_norms, "text tower")}
