"""Image preprocessing from the model's `preprocess_cfg` (DualEncoder), via open_clip (so exports preprocess
identically)."""
from __future__ import annotations

from typing import Callable

from open_clip.transform import AugmentationCfg, PreprocessCfg, image_transform_v2
from torchvision.transforms import RandomResizedCrop


def image_transform(model, train: bool, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) -> Callable:
    """PIL image → normalised tensor. `train` adds RandomResizedCrop(scale, ratio) in place of resize + crop."""
    cfg = PreprocessCfg(**model.preprocess_cfg)
    aug = AugmentationCfg(scale=tuple(scale)) if train else None
    transform = image_transform_v2(cfg, is_train=train, aug_cfg=aug)
    if train:  # open_clip's non-timm path fixes the crop ratio at torchvision's default; set the recipe's
        for step in transform.transforms:
            if isinstance(step, RandomResizedCrop):
                step.ratio = tuple(ratio)
    return transform
