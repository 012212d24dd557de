"""Dual encoders built from the recipe's `model` section: any registered tower following `DualEncoder`, open_clip's
CLIP / CustomTextCLIP (as vlp subclasses) by default."""
from vlp.models.build import build_model
from vlp.models.checkpoints import CheckpointError, find_checkpoint, resolve_checkpoint
from vlp.models.config_check import check
from vlp.models.pretrained import load_pretrained
from vlp.models.registry import DualEncoder, register_tower, tower_types
from vlp.models.towers import PKG_PREFIX, make_tokenizer, portable_config, resolve_hf_name
from vlp.models.transforms import image_transform

__all__ = ["build_model", "check", "DualEncoder", "register_tower", "tower_types", "image_transform", "load_pretrained",
           "make_tokenizer", "CheckpointError", "find_checkpoint", "resolve_checkpoint", "resolve_hf_name",
           "portable_config", "PKG_PREFIX"]
