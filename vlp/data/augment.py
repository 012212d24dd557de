"""Every image operation of training, owned by the data pipeline: decode, random crop, resample (here, in the
DataLoader workers) and normalisation (`vlp.data.device_images`, once per batch on the trainer's device).

One convention: a training image op takes a sample's encoded image (bytes, or a PIL image from HF datasets) and the
sample's seed, and draws every random number from that seed alone, so a sample's pixels depend on (seed, epoch,
stream, index) only and a resumed run sees the same ones. `image(data, keys, seed)` returns the pixels (a uint8
(3, H, W) tensor, or an `EncodedCrop` for the trainer to decode); `check(data, keys)` raises `BadSample` exactly when
`image` would, decoding no more than that takes (a resume skipping samples). `TrainCrop` is vlp's (open_clip's train
transform on uint8 tensors); `SeededTransform` adapts any transform of PIL images (torchvision's), which then draws
from the global torch generator seeded per sample.

The model only says what it takes (`preprocess_cfg`: size, mean, std) and owns the eval preprocessing it exports
(`vlp.models.image_transform`).
"""
from __future__ import annotations

import random
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from PIL import Image

from vlp.data.decode import BadSample, SampleKeys, image_data, open_image
from vlp.data.device_images import EncodedCrop
from vlp.data.fast_decode import (crop_box, decode_crop, device_decodable, is_jpeg, jpeg_size, resized_crop,
                                  validate_jpeg)


@runtime_checkable
class TrainImageOp(Protocol):
    def image(self, data, keys: SampleKeys, seed: int) -> Any: ...

    def check(self, data, keys: SampleKeys) -> None: ...


class TrainCrop:
    """torchvision's RandomResizedCrop(size, scale, ratio, bicubic, antialias) on the RGB uint8 tensor, whose output
    (3, H, W) uint8 it returns. JPEGs go through `from_jpeg` (decoded at the smallest DCT scale the crop allows),
    everything else, and the JPEGs libjpeg-turbo cannot decode (damaged ones: PIL then decides whether they are bad),
    through PIL (`__call__`); both draw the same box for the same seed.

    `decode`: "cpu" decodes JPEG bytes in the worker; "gpu" only checks them there (a 1/8-scale decode finds damage)
    and hands the bytes and the crop box to the trainer, which decodes the batch on its device.
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float], ratio: Sequence[float], decode: str = "cpu"):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        if decode == "gpu" and not torch.cuda.is_available():
            warnings.warn("data.decode: gpu needs CUDA, which this machine lacks: JPEGs are decoded on the CPU "
                          "(data.decode: cpu)", stacklevel=2)
            decode = "cpu"
        self.decode = decode

    def image(self, data, keys: SampleKeys, seed: int):
        full = self._jpeg_size(data, keys)
        if full is not None:
            try:
                return self.from_jpeg(data, full, seed)
            except ValueError:
                pass
        return self(open_image(data, keys), seed)

    def check(self, data, keys: SampleKeys) -> None:
        if self._jpeg_size(data, keys) is not None:
            try:
                return validate_jpeg(data)
            except ValueError:
                pass
        open_image(data, keys)

    @staticmethod
    def _jpeg_size(data, keys: SampleKeys):
        """(height, width) of a JPEG libjpeg-turbo reads the header of, else None; an oversize one is bad."""
        full = jpeg_size(data) if is_jpeg(data) else None
        if full is not None and full[0] * full[1] > keys.max_image_pixels:
            raise BadSample("oversize_image")
        return full

    def __call__(self, image: Image.Image, seed: int):
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


class SeededTransform:
    """A transform of PIL images (torchvision's, say) as a training image op: decoded by PIL, run with the global
    torch generator seeded with the sample's seed."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def image(self, data, keys: SampleKeys, seed: int):
        image = open_image(data, keys)
        with seeded(seed):
            return self.transform(image)

    def check(self, data, keys: SampleKeys) -> None:
        open_image(data, keys)


def train_image_op(transform) -> TrainImageOp:
    """`transform` as a training image op: itself if it is one, else a `SeededTransform` of it."""
    return transform if isinstance(transform, TrainImageOp) else SeededTransform(transform)


def augmented_image(sample: dict, keys: SampleKeys, op: TrainImageOp, seed: int, check_only: bool = False):
    """The sample's image through `op` (None with `check_only`: only checked, as `op.check` does)."""
    data = image_data(sample, keys)
    if check_only:
        op.check(data, keys)
        return None
    return op.image(data, keys, seed)


@contextmanager
def seeded(seed: int):
    """The global torch generator seeded with `seed`, restored afterwards (the caller's RNG is untouched when this
    runs in the main process). Not torch.manual_seed: on CUDA builds it also queues a CUDA reseed, ~10 ms a call."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


def train_crop(preprocess_cfg: dict, scale: Sequence[float], ratio: Sequence[float], decode: str = "cpu") -> TrainCrop:
    """The training crop of a model whose preprocessing is `preprocess_cfg` (open_clip's PreprocessCfg keys): its
    input size, with the recipe's `data.augment_scale`, `augment_ratio` and `decode`."""
    from open_clip.transform import PreprocessCfg

    return TrainCrop(PreprocessCfg(**preprocess_cfg).size, scale, ratio, decode)


def pixel_stats(preprocess_cfg: dict) -> tuple[Sequence[float], Sequence[float]]:
    """(mean, std) a model with this `preprocess_cfg` takes its images normalised with (open_clip's defaults where it
    names none): what `vlp.data.device_images.ready_images` normalises the uint8 batches with."""
    from open_clip.transform import PreprocessCfg

    cfg = PreprocessCfg(**preprocess_cfg)
    return cfg.mean, cfg.std
