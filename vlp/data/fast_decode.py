"""JPEG → the pixels of one RandomResizedCrop, decoding no more than the crop needs.

libjpeg-turbo can scale by M/8 (M = 1..16) inside the inverse DCT, which skips most of the decode work for images
larger than the crop's output. The crop box is drawn first, on the full-size dimensions read from the header, by
torchvision's `RandomResizedCrop.get_params` algorithm (the same distribution) from a Python RNG seeded per sample —
torchvision's own draw costs ~0.1 ms a box in torch calls, a quarter of decoding a 256-px JPEG; the image is then
decoded at the smallest M/8 scale that keeps the crop at least the output size, and only the crop region is
resampled, with torch's native uint8 bicubic antialiased kernel (torchvision's tensor resize; ~2.5× faster than
PIL's on one core).

simplejpeg does the decode: it exposes libjpeg-turbo's M/8 factors through `min_height/min_width` and ships its own
libjpeg-turbo in the wheel. PIL's `draft` offers only 1/2, 1/4 and 1/8, so it often decodes larger than needed;
PyTurboJPEG needs the libturbojpeg shared library installed separately. `python bench/data_throughput.py` prints the
per-image timings of PIL, PIL draft and simplejpeg on its shard sets.
"""
from __future__ import annotations

import math
import random
from typing import Optional

import numpy as np
import simplejpeg
import torch

JPEG_MAGIC = b"\xff\xd8\xff"

Box = tuple[int, int, int, int]  # top, left, height, width (torchvision's order), in full-size pixels


def is_jpeg(data) -> bool:
    return isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:3]) == JPEG_MAGIC


def jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    """(height, width) from the header; None when libjpeg-turbo cannot read it (the PIL path then decides)."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return height, width


def crop_box(height: int, width: int, scale, ratio, rng: random.Random) -> Box:
    """A RandomResizedCrop box for an image of this size, drawn as torchvision's `get_params` draws it (area share
    uniform in `scale`, log aspect ratio uniform in log `ratio`, up to 10 tries, then the whole image clamped to the
    ratio range, centred), from `rng`."""
    area, log_ratio = height * width, (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target, aspect = area * rng.uniform(*scale), math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    if width / height < min(ratio):
        w, h = width, round(width / min(ratio))
    elif width / height > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(pixels: np.ndarray, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """The crop `box` of (h, w, 3) uint8 `pixels` resized to `size` (h, w), as a uint8 (3, h, w) tensor: what
    torchvision's tensor `resized_crop` (bicubic, antialiased) computes on the CPU — the same native uint8 kernel,
    called without its wrapper (~0.04 ms a crop; `tests/data/test_data_decode.py` checks the pixels bitwise)."""
    top, left, h, w = box
    crop = torch.from_numpy(pixels[top:top + h, left:left + w]).permute(2, 0, 1)  # a channels-last view
    if (h, w) == tuple(size):
        return crop
    return torch.nn.functional.interpolate(crop[None], size=list(size), mode="bicubic", align_corners=False,
                                           antialias=True)[0]


def decode_crop(data: bytes, full: tuple[int, int], box: Box, size: tuple[int, int]) -> torch.Tensor:
    """The crop `box` of the JPEG `data` (full size `full` = (height, width)) resized to `size` = (height, width),
    decoded at the smallest M/8 scale that keeps the crop at least `size`; the box is rounded to whole pixels of that
    scale (a shift below one decoded pixel). Raises ValueError when libjpeg-turbo cannot decode `data`."""
    top, left, h, w = box
    need_h, need_w = math.ceil(size[0] * full[0] / h), math.ceil(size[1] * full[1] / w)
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=need_h, min_width=need_w)
    sy, sx = pixels.shape[0] / full[0], pixels.shape[1] / full[1]
    y0, x0, y1, x1 = round(top * sy), round(left * sx), round((top + h) * sy), round((left + w) * sx)
    return resized_crop(pixels, (y0, x0, y1 - y0, x1 - x0), size)


def device_decodable(data: bytes) -> bool:
    """Whether nvJPEG takes this JPEG (it has no CMYK/YCCK); the header has been read before, so it parses."""
    return simplejpeg.decode_jpeg_header(data)[2] in ("YCbCr", "Gray")


def validate_jpeg(data: bytes) -> None:
    """Decode at the smallest scale (1/8: entropy decoding of every block, DC-only IDCT) to find damage cheaply.
    Raises ValueError like `decode_crop`."""
    simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=8)
