"""Image preprocessing from the model's `preprocess_cfg` (DualEncoder).

Evaluation uses open_clip's PIL transform (so exports preprocess identically). Training uses `TrainCrop`: open_clip's
train transform (RandomResizedCrop, bicubic) on uint8 tensors, returned as uint8 — the DataLoader moves a quarter of
the bytes, and the trainer normalises each batch once, on its device (`vlp.data.device_images`) — with a fast path
from JPEG bytes (`vlp.data.fast_decode`).
"""
from __future__ import annotations

import random
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from vlp.data.device_images import EncodedCrop
from vlp.data.fast_decode import crop_box, decode_crop, device_decodable, resized_crop, validate_jpeg


class TrainCrop:
    """torchvision's RandomResizedCrop(size, scale, ratio, bicubic, antialias) on the RGB uint8 tensor, whose output
    (3, H, W) uint8 it returns.

    `decode`: "cpu" decodes JPEG bytes in the worker at the smallest DCT scale the crop allows; "gpu" only checks
    them there (a 1/8-scale decode finds damage) and hands the bytes and the crop box to the trainer, which decodes
    the batch on its device (`vlp.data.device_images`).
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float], ratio: Sequence[float], decode: str = "cpu"):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        if decode == "gpu" and not torch.cuda.is_available():
            warnings.warn("data.decode: gpu needs CUDA, which this machine lacks: JPEGs are decoded on the CPU "
                          "(data.decode: cpu)", stacklevel=2)
            decode = "cpu"
        self.decode = decode

    def __call__(self, image: Image.Image, seed: int) -> torch.Tensor:
        """The PIL path (PNG, WebP, PIL inputs): torchvision's tensor RandomResizedCrop of the decoded image, its box
        drawn from `seed` alone."""
        box = crop_box(image.height, image.width, self.scale, self.ratio, random.Random(seed))
        return resized_crop(np.array(image.convert("RGB")), box, self.size)

    def from_jpeg(self, data: bytes, full: tuple[int, int], seed: int):
        """The same crop (same box for the same seed) from JPEG bytes of full size (height, width); ValueError if
        libjpeg-turbo cannot decode them."""
        box = crop_box(*full, self.scale, self.ratio, random.Random(seed))
        if self.decode == "gpu" and device_decodable(data):
            validate_jpeg(data)
            return EncodedCrop(bytes(data), box, self.size)
        return decode_crop(data, full, box, self.size)


def image_transform(model, train: bool, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3), decode: str = "cpu") -> Callable:
    """Eval: PIL image → normalised float tensor (open_clip). Train: `TrainCrop` (uint8, normalised by the trainer)."""
    cfg = PreprocessCfg(**model.preprocess_cfg)
    if train:
        return TrainCrop(cfg.size, scale, ratio, decode)
    return image_transform_v2(cfg, is_train=False)


def pixel_stats(model) -> tuple[Sequence[float], Sequence[float]]:
    """(mean, std) the model's images are normalised with (open_clip's defaults where its preprocess_cfg has none)."""
    cfg = PreprocessCfg(**model.preprocess_cfg)
    return cfg.mean, cfg.std
