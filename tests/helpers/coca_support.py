"""A tiny CoCa config for the CoCa tests (no tests here): the trainer tests' tiny towers plus a one-layer decoder."""
from __future__ import annotations

import copy

from helpers.train_support import TINY_MODEL

# open_clip's CoCa needs token outputs from both towers, an attentional pool on the image and a cls token on the text
TINY_COCA = copy.deepcopy(TINY_MODEL)
TINY_COCA["vision_cfg"].update(attentional_pool=True, attn_pooler_heads=2, attn_pooler_queries=4,
                               output_tokens=True)
TINY_COCA["text_cfg"].update(embed_cls=True, output_tokens=True)
TINY_COCA["multimodal_cfg"] = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                               "attn_pooler_heads": 2}
