"""The eval preprocessing a model exports: open_clip's PIL transform from the model's `preprocess_cfg` (so exports
preprocess identically). Training's image operations are the data pipeline's (`vlp.data.augment`)."""
from __future__ import annotations

from typing import Callable

from open_clip.transform import PreprocessCfg, image_transform_v2


def image_transform(model) -> Callable:
    """PIL image → normalised float tensor, as open_clip evaluates the model."""
    return image_transform_v2(PreprocessCfg(**model.preprocess_cfg), is_train=False)
