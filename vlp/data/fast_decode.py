"""JPEG → the pixels of one RandomResizedCrop, decoding no more than the crop needs.

libjpeg-turbo can scale by M/8 (M = 1..16) inside the inverse DCT, which skips most of the decode work for images
larger than the crop's output. The crop box is drawn first, on the full-size dimensions read from the header, with
torchvision's own `RandomResizedCrop.get_params` (so the augmentation distribution is torchvision's); the image is then
decoded at the smallest M/8 scale that keeps the crop at least the output size, and only the crop region is resampled,
with torchvision's tensor resize (its native uint8 bicubic kernel, ~2.5× faster than PIL's on one core).

simplejpeg does the decode: it exposes libjpeg-turbo's M/8 factors through `min_height/min_width` and ships its own
libjpeg-turbo in the wheel. PIL's `draft` offers only 1/2, 1/4 and 1/8, so it often decodes larger than needed;
PyTurboJPEG needs the libturbojpeg shared library installed separately. `python bench/data_throughput.py` prints the
per-image timings of PIL, PIL draft and simplejpeg on its shard sets.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import simplejpeg
import torch
from torchvision.transforms import RandomResizedCrop

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


def crop_box(height: int, width: int, scale, ratio) -> Box:
    """torchvision's RandomResizedCrop draw for an image of this size, from the global torch generator."""
    dims = torch.empty((1, 1, 1), dtype=torch.uint8).expand(1, height, width)  # shape only: no pixels
    return tuple(RandomResizedCrop.get_params(dims, list(scale), list(ratio)))


def resized_crop(pixels: np.ndarray, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """The crop `box` of (h, w, 3) uint8 `pixels` resized to `size` (h, w): torchvision's tensor RandomResizedCrop
    arithmetic (bicubic, antialiased; on the CPU its native uint8 kernel), as a uint8 (3, h, w) tensor."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2.functional import resized_crop as crop_and_resize

    image = torch.from_numpy(pixels).permute(2, 0, 1)  # a view: channels-last, as the uint8 kernel prefers
    return crop_and_resize(image, *box, list(size), InterpolationMode.BICUBIC, antialias=True)


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
