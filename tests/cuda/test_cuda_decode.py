"""On a GPU, `data.decode: gpu` (nvJPEG batch decode, then crop and resize on the device) gives the CPU path's
pixels within JPEG-decoder tolerance, rows the workers decoded (a PNG's) untouched, and normalised float32 batches
on the GPU (the CPU forms: tests/data/test_data_decode.py)."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from helpers.shards import photo
from vlp.data.augment import TrainCrop
from vlp.data.batch import Batch
from vlp.data.device_images import EncodedCrop, decode_rows, normalize_images, ready_images, stack_images
from vlp.data.fast_decode import jpeg_size

pytestmark = pytest.mark.cuda
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# nvJPEG and libjpeg-turbo differ in IDCT and chroma upsampling rounding, and the device resize rounds its float
# result once more: about a level on average (the bound). A box misplaced by 10 px moves an image by 15+ levels, a
# wrong channel order or colour conversion by tens; single pixels at colour edges differ most (chroma upsampling), so
# the per-pixel bound catches only gross errors (a row left undecoded, garbage).
MEAN_ABS_BOUND, WORST_PIXEL_BOUND = 2.0, 64


def test_gpu_decode_on_cuda_matches_the_cpu_path_within_tolerance():
    on_device, cpu_path = TrainCrop(224, (0.9, 1.0), (3 / 4, 4 / 3), "gpu"), TrainCrop(224, (0.9, 1.0), (3 / 4, 4 / 3))
    files = [photo(300, 260), photo(640, 480), photo(1000, 700), photo(1200, 900)]
    rows, expected = [], []
    for seed, data in enumerate(files):
        rows.append(on_device.from_jpeg(data, jpeg_size(data), seed))
        expected.append(cpu_path(Image.open(io.BytesIO(data)).convert("RGB"), seed))  # the same box, on the CPU
    assert all(isinstance(r, EncodedCrop) for r in rows)  # decode: gpu keeps the bytes for the device
    pixels = torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8)  # a PNG's row, decoded in the worker
    images, jpegs = stack_images([rows[0], pixels, *rows[1:]])
    decoded = decode_rows(images.cuda(), jpegs)
    assert decoded.device.type == "cuda" and decoded.dtype == torch.uint8
    assert torch.equal(decoded[1].cpu(), pixels)
    for row, want in zip(jpegs.rows, expected):
        diff = (decoded[row].cpu().float() - want.float()).abs()
        assert diff.mean() <= MEAN_ABS_BOUND and diff.max() <= WORST_PIXEL_BOUND, (row, diff.mean(), diff.max())
    ready = ready_images(Batch(images.cuda(), torch.zeros(5, 1), jpegs=jpegs), MEAN, STD)
    assert ready.jpegs is None and ready.image.dtype == torch.float32 and ready.image.device.type == "cuda"
    torch.testing.assert_close(ready.image, normalize_images(decoded, MEAN, STD), atol=0, rtol=0)
