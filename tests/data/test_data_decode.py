"""The fast JPEG path (vlp.data.fast_decode, vlp.data.augment.TrainCrop): torchvision's crop distribution, pixels
close to the PIL path, damaged and oversize JPEGs still counted, uint8 through the loader, normalisation as
torchvision's."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2 as T2
from PIL import Image
from scipy import stats

from helpers.shards import jpeg_shards, photo
from vlp.data.augment import TrainCrop, augmented_image
from vlp.data.decode import BadSample, SampleKeys
from vlp.data.device_images import EncodedCrop, normalize_images
from vlp.data.fast_decode import jpeg_size

KEYS = SampleKeys(image=("jpg",), caption="txt")
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def crop(scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3), size=224, decode="cpu") -> TrainCrop:
    return TrainCrop(size, scale, ratio, decode)


def boxes_drawn(monkeypatch, transform: TrainCrop, full: tuple[int, int], draws: int) -> np.ndarray:
    """The boxes the JPEG path crops, over `draws` seeds: (top, left, height, width) rows."""
    import vlp.data.augment as augment

    seen = []
    monkeypatch.setattr(augment, "decode_crop", lambda data, full, box, size: seen.append(box) or
                        np.zeros((*size, 3), np.uint8))
    for seed in range(draws):
        transform.from_jpeg(b"", full, seed)
    return np.array(seen)


def reference_boxes(height: int, width: int, scale, ratio, draws: int, rng, log_ratio: bool = True) -> np.ndarray:
    """RandomResizedCrop's distribution written out (Szegedy et al.'s crop, torchvision's 10 tries then a centred
    crop clamped to the ratio range), drawn with numpy."""
    area, out = height * width, []
    for _ in range(draws):
        for _ in range(10):
            target = area * rng.uniform(*scale)
            r = math.exp(rng.uniform(*np.log(ratio))) if log_ratio else rng.uniform(*ratio)
            w, h = round(math.sqrt(target * r)), round(math.sqrt(target / r))
            if 0 < w <= width and 0 < h <= height:
                out.append((h, w))
                break
        else:
            aspect = width / height
            w, h = ((width, round(width / min(ratio))) if aspect < min(ratio) else
                    (round(height * max(ratio)), height) if aspect > max(ratio) else (width, height))
            out.append((h, w))
    return np.array(out)


@pytest.mark.parametrize("scale,full", [((0.9, 1.0), (300, 400)), ((0.08, 1.0), (480, 360))])
def test_crop_scale_and_ratio_follow_random_resized_crop(monkeypatch, scale, full):
    ratio, draws = (3 / 4, 4 / 3), 3000
    ours = boxes_drawn(monkeypatch, crop(scale, ratio), full, draws)
    rng = np.random.default_rng(0)

    def statistics(hw):  # crop area share, log aspect ratio
        return hw[:, 0] * hw[:, 1] / (full[0] * full[1]), np.log(hw[:, 1] / hw[:, 0])
    ours_scale, ours_ratio = statistics(ours[:, 2:])
    ref_scale, ref_ratio = statistics(reference_boxes(*full, scale, ratio, draws, rng))
    assert stats.ks_2samp(ours_scale, ref_scale).pvalue > 1e-3
    assert stats.ks_2samp(ours_ratio, ref_ratio).pvalue > 1e-3
    # the boxes lie inside the image; the test has the power to see a wrong ratio law (uniform instead of log-uniform)
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= full[0]).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= full[1]).all()
    wrong_scale, wrong_ratio = statistics(reference_boxes(*full, scale, ratio, draws, rng, log_ratio=False))
    assert min(stats.ks_2samp(ours_ratio, wrong_ratio).pvalue, stats.ks_2samp(ours_scale, wrong_scale).pvalue) < 1e-3


def test_pil_path_is_torchvision_resized_crop_of_the_drawn_box(monkeypatch):
    """The PIL path's pixels are torchvision v2's RandomResizedCrop output for the box drawn (its draw replaced by
    ours: the distribution is tested above), bitwise."""
    import random

    from vlp.data.fast_decode import crop_box

    image = Image.open(io.BytesIO(photo(333, 250))).convert("RGB")
    reference = T2.Compose([T2.PILToTensor(), T2.RandomResizedCrop(224, scale=(0.5, 1.0), ratio=(0.8, 1.25),
                                                                   interpolation=T.InterpolationMode.BICUBIC)])
    for seed in range(5):
        box = crop_box(250, 333, (0.5, 1.0), (0.8, 1.25), random.Random(seed))
        monkeypatch.setattr(T2.RandomResizedCrop, "make_params",
                            lambda self, flat, box=box: dict(zip(("top", "left", "height", "width"), box)))
        ours = crop((0.5, 1.0), (0.8, 1.25))(image, seed)
        assert torch.equal(ours, reference(image)) and ours.dtype == torch.uint8
    assert len({crop_box(250, 333, (0.5, 1.0), (0.8, 1.25), random.Random(s)) for s in range(5)}) == 5


# Measured mean |fast − PIL| per image (0–255 levels), seeds 0–7, scale (0.9, 1), q90: 256×256 0 (full-scale decode:
# bitwise equal), 400×300 1.1–3.9, 512×384 0.9–4.1, 1024×768 0.5–3.8, 1200×900 1.2–4.6; means over the seeds ≤ 2.3.
# Most of it is the box rounded to whole pixels of the reduced decode (a shift under one decoded pixel), the rest the
# DCT-domain scaling. For scale: JPEG q90 itself moves the PIL path's output by 2.4, 1.8, 1.4, 0.7, 0.6 levels
# (vs the uncompressed photo) at those sizes; a box misplaced by 10 px moves it by 15+.
MEAN_ABS_BOUND, WORST_IMAGE_BOUND = 3.0, 5.0


@pytest.mark.parametrize("width,height", [(256, 256), (400, 300), (512, 384), (1024, 768), (1200, 900)])
def test_fast_path_pixels_within_tolerance_of_pil_path(width, height):
    data = photo(width, height)
    pil = Image.open(io.BytesIO(data)).convert("RGB")
    transform, diffs = crop(), []
    for seed in range(8):
        fast, slow = transform.from_jpeg(data, jpeg_size(data), seed), transform(pil, seed)
        assert fast.shape == slow.shape == (3, 224, 224) and fast.dtype == torch.uint8
        diffs.append((fast.float() - slow.float()).abs().mean().item())
    assert np.mean(diffs) <= MEAN_ABS_BOUND and max(diffs) <= WORST_IMAGE_BOUND, diffs


def test_fast_path_is_exact_when_the_crop_needs_full_scale():
    data = photo(256, 256)  # a 0.9–1 crop of 256 px cannot shrink by 7/8 and stay ≥ 224
    pil = Image.open(io.BytesIO(data)).convert("RGB")
    for seed in range(4):
        assert torch.equal(crop().from_jpeg(data, jpeg_size(data), seed), crop()(pil, seed))


def sample(data: bytes) -> dict:
    return {"jpg": data, "txt": "x"}


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_damaged_and_oversize_jpegs_are_bad_samples_and_cmyk_and_grey_decode(decode, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # gpu: the workers' 1/8-scale check finds damage
    good = photo(400, 300)
    with pytest.raises(BadSample, match="corrupt_image"):
        augmented_image(sample(good[: len(good) // 2]), KEYS, crop(decode=decode), 0)  # truncated
    with pytest.raises(BadSample, match="corrupt_image"):
        augmented_image(sample(b"\xff\xd8\xff" + b"\x00" * 100), KEYS, crop(decode=decode), 0)  # magic, no JPEG
    small = SampleKeys(image=("jpg",), caption="txt", max_image_pixels=400 * 300 - 1)
    with pytest.raises(BadSample, match="oversize_image"):
        augmented_image(sample(good), small, crop(decode=decode), 0)
    for mode in ("CMYK", "L"):  # with gpu: CMYK (which nvJPEG lacks) is decoded in the worker, grey on the device
        data = photo(400, 300, mode=mode)
        out = augmented_image(sample(data), KEYS, crop(decode=decode), 3)
        if decode == "gpu" and mode == "L":
            assert isinstance(out, EncodedCrop)
            continue
        pil = crop()(Image.open(io.BytesIO(data)).convert("RGB"), 3)
        assert (out.float() - pil.float()).abs().mean() <= WORST_IMAGE_BOUND


def test_normalisation_equals_torchvision_to_tensor_and_normalize():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    reference = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    expected = torch.stack([reference(Image.fromarray(i.permute(1, 2, 0).numpy())) for i in images])
    torch.testing.assert_close(normalize_images(images, MEAN, STD), expected, atol=1e-6, rtol=0)
    floats = torch.rand(2, 3, 4, 4)
    assert normalize_images(floats, MEAN, STD) is floats  # a source that normalises itself is left alone


def batches(spec: str, transform, workers: int = 0, skip: int = 0) -> list:
    from vlp.data import build_train_data
    from vlp.recipe.schema import DataConfig

    tokenizer = lambda texts: torch.tensor([[int(t.split()[-1])] for t in texts])  # noqa: E731
    data = build_train_data(DataConfig(train=spec, workers=workers, shuffle_buffer=4), transform, tokenizer,
                            local_batch_size=4, seed=0, rank=0, world_size=1)
    return list(data.batches(0, skip=skip))


def test_uint8_through_the_loader(tmp_path):
    got = batches(jpeg_shards(tmp_path), crop(size=32), workers=1)
    assert len(got) == 3 and all(b.image.dtype == torch.uint8 and b.image.shape == (4, 3, 32, 32) for b in got)


def test_gpu_decode_without_cuda_warns_once_and_gives_the_cpu_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = jpeg_shards(tmp_path)
    with pytest.warns(UserWarning, match="data.decode: gpu needs CUDA") as warned:
        gpu = batches(spec, crop(size=32, decode="gpu"))
    assert len(warned) == 1
    cpu = batches(spec, crop(size=32))
    assert [b.keys for b in gpu] == [b.keys for b in cpu]
    assert all(torch.equal(g.image, c.image) and g.jpegs is None for g, c in zip(gpu, cpu))


def test_device_decode_path_matches_the_cpu_path(monkeypatch):
    """The `data.decode: gpu` code run on the CPU device (torchvision's decode_jpeg takes either): full-size decode,
    crop and resize of the same boxes give exactly the PIL path's pixels here (on CUDA, nvJPEG and the float resize
    will differ slightly: untested on a GPU)."""
    from vlp.data.device_images import decode_rows, ready_images, stack_images
    from vlp.data.batch import Batch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_device, pil_path = crop(decode="gpu"), crop()
    files = [photo(300, 260), photo(640, 480), photo(1000, 700)]
    rows, expected = [], []
    for seed, data in enumerate(files):
        rows.append(on_device.from_jpeg(data, jpeg_size(data), seed))
        expected.append(pil_path(Image.open(io.BytesIO(data)).convert("RGB"), seed))
    assert all(isinstance(r, EncodedCrop) for r in rows)
    pixels = torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8)  # a PNG's row, decoded in the worker
    images, jpegs = stack_images([rows[0], pixels, rows[1], rows[2]])
    assert jpegs.rows == [0, 2, 3] and not images[jpegs.rows].any()
    decoded = decode_rows(images, jpegs)
    assert torch.equal(decoded[1], pixels)
    for row, want in zip(jpegs.rows, expected):
        assert torch.equal(decoded[row], want)
    ready = ready_images(Batch(images, torch.zeros(4, 1), jpegs=jpegs), MEAN, STD)
    assert ready.jpegs is None and ready.image.dtype == torch.float32
    torch.testing.assert_close(ready.image, normalize_images(decoded, MEAN, STD), atol=0, rtol=0)


def test_decode_key_is_validated():
    from vlp.data import check
    from vlp.recipe import ConfigError
    from vlp.recipe.schema import DataConfig

    check(DataConfig(decode="gpu"))
    with pytest.raises(ConfigError, match="data.decode"):
        check(DataConfig(decode="tpu"))


class PilOnly(TrainCrop):
    def from_jpeg(self, data, full, seed):
        raise ValueError("as if libjpeg-turbo refused it: the PIL path decodes")


def test_gpu_decode_batches_through_the_loader_decode_to_the_pil_path(tmp_path, monkeypatch):
    """Workers hand over JPEG bytes and boxes (a batch's `jpegs`); decoded on the CPU device they give exactly the
    batches of the PIL path."""
    from vlp.data.device_images import ready_images

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # TrainCrop keeps decode="gpu"
    spec = jpeg_shards(tmp_path)
    gpu = batches(spec, crop(size=32, decode="gpu"), workers=1)
    pil = batches(spec, PilOnly(32, (0.9, 1.0), (3 / 4, 4 / 3)), workers=1)
    assert all(b.jpegs is not None and len(b.jpegs.rows) == 4 for b in gpu)
    for g, p in zip(gpu, pil, strict=True):
        assert torch.equal(ready_images(g, MEAN, STD).image, normalize_images(p.image, MEAN, STD))


def damaged_variants(data: bytes) -> list[bytes]:
    """Cut short at several points, bytes overwritten inside the entropy-coded data, a zeroed tail."""
    n = len(data)
    cuts = [data[: n * k // 10] for k in range(1, 10)]
    flipped = [data[:i] + bytes(b ^ 0x5A for b in data[i:i + 16]) + data[i + 16:] for i in range(n // 5, n, n // 7)]
    return cuts + flipped + [data[: n // 2] + b"\x00" * (n - n // 2), b"\xff\xd8\xff" + b"\x00" * 100]


def outcome(call) -> str:
    try:
        call()
    except BadSample as bad:
        return bad.kind
    return "good"


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_a_resume_check_finds_exactly_the_samples_the_full_decode_finds_bad(decode, monkeypatch):
    """A resume skips samples with `check_only` (a 1/8-scale decode, no crop): it must call a sample bad exactly when
    decoding it in full would, or the resumed stream's chunks would shift."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    transform, cases = crop(decode=decode), []
    for width, height in [(400, 300), (1024, 768)]:
        data = photo(width, height)
        cases += [data, photo(width, height, mode="CMYK"), photo(width, height, mode="L"), *damaged_variants(data)]
    buffer = io.BytesIO()
    Image.open(io.BytesIO(cases[0])).save(buffer, format="PNG")
    cases += [buffer.getvalue(), buffer.getvalue()[:200]]
    found = []
    for seed, data in enumerate(cases):
        full = outcome(lambda: augmented_image(sample(data), KEYS, transform, seed))
        checked = outcome(lambda: augmented_image(sample(data), KEYS, transform, seed, check_only=True))
        assert checked == full, (seed, len(data))
        found.append(full)
    assert found.count("good") >= 8 and found.count("corrupt_image") >= 8  # both outcomes are exercised


def test_resume_over_damaged_jpegs_gives_the_uninterrupted_batches(tmp_path):
    from data_tools.writer import ShardWriter

    with ShardWriter(tmp_path, per_shard=7) as writer:
        for i in range(20):
            data = photo(300 + 20 * i, 260)
            writer.write(f"s{i:03d}", {"jpg": data[: len(data) // 3] if i % 4 == 1 else data, "txt": f"sample {i}"})
    full = batches(writer.spec, crop(size=32), workers=1)
    assert len(full) == 3 and sum(full[0].bad_samples.values()) + sum(full[1].bad_samples.values()) >= 1
    for skip in range(1, 3):  # the skipped positions hold damaged JPEGs
        tail = batches(writer.spec, crop(size=32), workers=1, skip=skip)
        assert [b.keys for b in tail] == [b.keys for b in full[skip:]]
        assert all(torch.equal(a.image, b.image) for a, b in zip(tail, full[skip:]))
