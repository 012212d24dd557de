"""LiT-style locking. Native towers use open_clip's own layer groups; HF text towers use the same scheme here
(open_clip's HF `lock` cannot unlock layers of e.g. BERT): groups are [embeddings], each encoder layer, [projection],
and the last N groups stay trainable."""
from __future__ import annotations

import torch
from open_clip.hf_model import HFTextEncoder


def lock_text_tower(model: torch.nn.Module, unlocked_layers: int) -> None:
    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder):
        model.lock_text_tower(unlocked_layers=unlocked_layers)
        return
    layers = _encoder_layers(text.transformer)
    layer_params = {id(p) for layer in layers for p in layer.parameters()}
    embeddings = [p for p in text.transformer.parameters() if id(p) not in layer_params]
    groups = [embeddings, *[list(layer.parameters()) for layer in layers], list(text.proj.parameters())]
    for p in text.parameters():
        p.requires_grad = False
    for group in groups[len(groups) - min(unlocked_layers, len(groups)):]:
        for p in group:
            p.requires_grad = True


def _encoder_layers(transformer: torch.nn.Module) -> torch.nn.ModuleList:
    """The longest ModuleList of the HF model: its stack of transformer layers."""
    lists = [m for m in transformer.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError(f"cannot find the layer stack of HF text tower {type(transformer).__name__}")
    return max(lists, key=len)
