"""Captions from a trained CoCa's decoder: `generate` (files) and `caption_images` (tensors)."""
from vlp.generate.api import caption_images, generate

__all__ = ["caption_images", "generate"]
