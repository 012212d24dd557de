"""Dual encoders built from the recipe's `model` section: any registered tower following `DualEncoder`, open_clip's
CLIP / CustomTextCLIP (as vlp subclasses) by default."""
from vlp.lazy import lazy_names

# lazy: the recipe loader imports `check` from here, and `vlp recipe show` must not import torch
__getattr__, __all__ = lazy_names(__name__, {
    "build_model": "build", "check": "config_check", "DualEncoder": "registry", "register_tower": "registry",
    "tower_types": "registry", "image_transform": "transforms", "load_pretrained": "pretrained",
    "make_tokenizer": "towers", "CheckpointError": "checkpoints", "find_checkpoint": "checkpoints",
    "resolve_checkpoint": "checkpoints", "resolve_hf_name": "towers", "portable_config": "towers",
    "PKG_PREFIX": "towers", "published_config": "published"})
