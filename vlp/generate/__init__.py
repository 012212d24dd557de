"""Captions from a trained CoCa's decoder: `generate` (files) and `caption_images` (tensors). Loaded on first use:
`vlp --help` imports the command line here without torch."""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {"caption_images": "api", "generate": "api"})
