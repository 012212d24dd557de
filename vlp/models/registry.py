"""The dual-encoder contract and the tower registry: recipe `model` section → a model, by tower type.

Training, evaluation, load_pretrained and the exporters use a model only through `DualEncoder`. A tower type is
registered with `@register_tower("name")` on a builder `(model_cfg, logit_scale, logit_bias) -> DualEncoder` and
chosen by `model.type`; without it the type follows the config: `hf` (HF text tower), `timm` (timm image trunk)
or `open_clip`, all three built by vlp's open_clip builder, which also builds `coca` (open_clip's CoCa: a config
with `multimodal_cfg`, named by the type explicitly as its forward also returns caption logits).
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import torch

from vlp.models.built_in import BUILT_IN
from vlp.recipe.errors import did_you_mean
from vlp.recipe.schema import ModelConfig


@runtime_checkable
class DualEncoder(Protocol):
    """A torch.nn.Module whose `forward(image, text)` returns {"image_features", "text_features" (L2-normalised),
    "logit_scale" (t = exp(self.logit_scale)), "logit_bias" (only when it has one)}."""

    logit_scale: torch.Tensor  # log t, a trainable parameter (training clamps it at log(model.max_logit_scale))
    logit_bias: Optional[torch.Tensor]  # None: the model has no bias (softmax objectives)
    tokenizer: Callable[[list[str]], torch.Tensor]  # captions → token ids, as encode_text takes them
    preprocess_cfg: dict  # image preprocessing as open_clip's PreprocessCfg keys (size, mean, std, ...)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...


# A builder receives the whole `model` section (its `config` holds the tower's own settings; the open_clip keys
# such as lock_image are the builder's to honour) and the initial log scale (None: the tower's default) and bias
# (None: no bias). build_model loads `init_checkpoint` into whatever it returns.
TowerBuilder = Callable[[ModelConfig, Optional[float], Optional[float]], DualEncoder]
_BUILDERS: dict[str, TowerBuilder] = {}




def register_tower(name: str) -> Callable[[TowerBuilder], TowerBuilder]:
    """Decorator: make `builder` the tower of `model.type: name`."""
    def register(builder: TowerBuilder) -> TowerBuilder:
        if name in _BUILDERS or name in BUILT_IN:
            raise ValueError(f"tower type {name!r} registered twice")
        _BUILDERS[name] = builder
        return builder
    return register


def tower_types() -> list[str]:
    return sorted({*BUILT_IN, *_BUILDERS})


def tower_type(model_cfg: ModelConfig) -> str:
    """`model.type`, else "open_clip" (`BUILT_IN`)."""
    return model_cfg.type or "open_clip"


def unknown_type_message(name: str) -> str:
    known = tower_types()
    return (f"unknown tower type {name!r}{did_you_mean(name, known)}; registered: {', '.join(known)} (import the "
            f"module that registers a custom one with vlp.models.register_tower first)")


def tower_builder(name: str) -> TowerBuilder:
    if name in _BUILDERS:
        return _BUILDERS[name]
    if name in BUILT_IN:
        from vlp.models.open_clip_tower import build_open_clip  # on use: open_clip is slow to import

        return build_open_clip
    raise ValueError(f"model.type: {unknown_type_message(name)}")
