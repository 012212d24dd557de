"""One raw sample → (captions, negatives, RGB image), or the kind of defect it has (the training image ops that
follow decoding are `vlp.data.augment`'s).

Text is checked before the image is touched, and the image size is read from its header before it is decoded, so the
cheap rejections cost no decode.
"""
from __future__ import annotations

import io
import json
import random
import warnings
from dataclasses import dataclass
from typing import Optional, Union

from PIL import Image


class BadSample(Exception):
    """A sample that is skipped; `kind` is the counter it is recorded under."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class SampleKeys:
    image: tuple[str, ...]  # first present wins ("jpg;png;jpeg;webp")
    caption: str  # extension / column; "json" with `caption_field`
    caption_field: Optional[str] = None
    extra_captions: tuple[str, ...] = ()  # "EXT" (a caption per line) or "json:FIELD"; one caption drawn per sample
    negative: Optional[str] = None  # "EXT" (one caption per line) or "json:FIELD" (a JSON list)
    num_negatives: int = 1
    max_image_pixels: int = 4096 * 4096


def _text(value: Union[bytes, str]) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSample("bad_text") from None


def _json_field(sample: dict, key: str, field: str):
    if key not in sample:
        return None
    try:
        record = json.loads(_text(sample[key]))
    except json.JSONDecodeError:
        raise BadSample("bad_text") from None
    return record.get(field) if isinstance(record, dict) else None


def _lookup(sample: dict, key: str):
    """A text entry by "EXT" or "json:FIELD"; None when absent."""
    if key.startswith("json:"):
        return _json_field(sample, "json", key[5:])
    value = sample.get(key)
    return None if value is None else (value if isinstance(value, list) else _text(value))


def main_caption(sample: dict, keys: SampleKeys) -> str:
    if keys.caption_field is not None:
        value = _json_field(sample, keys.caption, keys.caption_field)
    else:
        value = sample.get(keys.caption)
        value = None if value is None else _text(value)
    if value is None:
        raise BadSample("missing_caption")
    if not isinstance(value, str):
        raise BadSample("bad_text")
    if not value.strip():
        raise BadSample("empty_caption")
    return value.strip()


def caption_pool(sample: dict, keys: SampleKeys) -> list[str]:
    """The sample's captions: the main one first, then the extras in `extra_captions` order."""
    pool = [main_caption(sample, keys)]
    for key in keys.extra_captions:
        extra = _lookup(sample, key)
        lines = extra.splitlines() if isinstance(extra, str) else extra if isinstance(extra, list) else []
        pool.extend(line.strip() for line in lines if isinstance(line, str) and line.strip())
    return pool


def choose_caption(sample: dict, keys: SampleKeys, rng: random.Random) -> str:
    if not keys.extra_captions:
        return main_caption(sample, keys)
    return rng.choice(caption_pool(sample, keys))


def choose_negatives(sample: dict, keys: SampleKeys, rng: random.Random) -> list[str]:
    value = _lookup(sample, keys.negative)
    if isinstance(value, str):
        value = value.splitlines()
    found = [v.strip() for v in value or [] if isinstance(v, str) and v.strip()]
    if not found:
        raise BadSample("missing_negative")
    if len(found) >= keys.num_negatives:
        return rng.sample(found, keys.num_negatives)
    return [rng.choice(found) for _ in range(keys.num_negatives)]


def image_data(sample: dict, keys: SampleKeys):
    """The sample's encoded image (or PIL image, from HF datasets) under the first key present."""
    key = next((k for k in keys.image if sample.get(k) is not None), None)
    if key is None:
        raise BadSample("missing_image")
    return sample[key]


def sample_label(sample: dict, key: str) -> int:
    """The integer label under `key` ("EXT", a column, or "json:FIELD"); a sample without one is bad."""
    value = _json_field(sample, "json", key[5:]) if key.startswith("json:") else sample.get(key)
    if isinstance(value, (bytes, str)):
        try:
            value = int(_text(value).strip())
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadSample("missing_label")
    return value


def decode_image(sample: dict, keys: SampleKeys) -> Image.Image:
    return open_image(image_data(sample, keys), keys)


def open_image(data, keys: SampleKeys) -> Image.Image:
    """RGB PIL image from bytes or a PIL image; its size is checked from the header before it is decoded."""
    if isinstance(data, Image.Image):
        return data.convert("RGB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
            width, height = image.size
            if width * height > keys.max_image_pixels:
                raise BadSample("oversize_image")
            image.load()
            return image.convert("RGB")
    except BadSample:
        raise
    except Image.DecompressionBombError:
        raise BadSample("oversize_image") from None
    except Exception:  # noqa: BLE001 - PIL raises many types for damaged files
        raise BadSample("corrupt_image") from None


def drawn_text(sample: dict, keys: SampleKeys, rng: random.Random) -> tuple[str, list[str]]:
    """The caption drawn for this sample and its hard negatives ([] when not configured)."""
    caption = choose_caption(sample, keys, rng)
    negatives = choose_negatives(sample, keys, rng) if keys.negative else []
    return caption, negatives
