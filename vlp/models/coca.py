"""open_clip's CoCa (Yu et al. 2022) as a vlp tower: the dual encoder of `DualEncoder` plus a multimodal text
decoder whose caption logits the `coca` objective trains (vlp.objectives.coca)."""
from __future__ import annotations

from typing import Optional

import open_clip
import torch

from vlp.models.towers import OpenClipEncoder


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
