"""A batch's images on the trainer's device: decode the JPEGs that `data.decode: gpu` workers handed over as bytes,
then normalise uint8 pixels once per batch (workers hand over uint8: a quarter of float32's bytes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch.utils.data import default_collate

from vlp.data.batch import Batch
from vlp.data.fast_decode import Box


@dataclass(frozen=True)
class EncodedCrop:
    """A JPEG to decode on the device and its crop box, resized to `size` (h, w). Bytes, not a tensor: the loader
    pickles them with the batch instead of giving each its own shared-memory segment."""
    data: bytes
    box: Box
    size: tuple[int, int]


@dataclass
class DeviceJpegs:
    """The rows of a batch's image tensor still to be decoded (left zero by the worker)."""
    rows: list[int]
    data: list[bytes]
    boxes: list[Box]


def stack_images(images: Sequence) -> tuple[torch.Tensor, Optional[DeviceJpegs]]:
    """(b, 3, H, W) uint8 from decoded rows and `EncodedCrop`s (zero rows, listed in the DeviceJpegs)."""
    encoded = [i for i, image in enumerate(images) if isinstance(image, EncodedCrop)]
    if not encoded:  # in a DataLoader worker, default_collate stacks straight into shared memory: no copy to send
        return default_collate(list(images)), None
    h, w = images[encoded[0]].size
    rows = [torch.zeros(3, h, w, dtype=torch.uint8) if isinstance(image, EncodedCrop) else image for image in images]
    return torch.stack(rows), DeviceJpegs(encoded, [images[i].data for i in encoded], [images[i].box for i in encoded])


def decode_rows(images: torch.Tensor, jpegs: DeviceJpegs) -> torch.Tensor:
    """`images` with the listed rows decoded on `images.device` (nvJPEG on CUDA, in one batched call), cropped and
    resized there with the CPU path's arithmetic (torchvision's bicubic antialiased resize)."""
    from torchvision.io import ImageReadMode, decode_jpeg  # only with data.decode: gpu
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2.functional import resized_crop

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs.data]
    decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=images.device)
    out = images.clone()
    size = list(images.shape[-2:])
    for row, image, (top, left, h, w) in zip(jpegs.rows, decoded, jpegs.boxes):
        out[row] = resized_crop(image, top, left, h, w, size, InterpolationMode.BICUBIC, antialias=True)
    return out


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (b, 3, H, W) → float32 as torchvision's ToTensor + Normalize compute it (to ~3e-7), on the images'
    device; float images pass unchanged (a data source that normalises itself)."""
    if images.dtype != torch.uint8:
        return images
    # (x/255 − mean)/std as (x − 255·mean)·(1/(255·std)): two passes instead of three, constants in float64
    shift = torch.tensor(mean, dtype=torch.float64).mul(255).float().view(1, -1, 1, 1).to(images.device)
    scale = torch.tensor(std, dtype=torch.float64).mul(255).reciprocal().float().view(1, -1, 1, 1).to(images.device)
    return images.float().sub_(shift).mul_(scale)


def ready_images(batch: Batch, mean: Sequence[float], std: Sequence[float]) -> Batch:
    """The batch with float, normalised images on the device its images are on."""
    images = batch.image
    if batch.jpegs is not None:
        images = decode_rows(images, batch.jpegs)
    return batch.replaced(image=normalize_images(images, mean, std), jpegs=None)
