"""`stats`: sample counts, caption length histogram (words) and image size distribution (read from headers)."""
from __future__ import annotations

import io
import random
from collections import Counter

from PIL import Image
from tqdm import tqdm

from vlp.data.decode import BadSample, SampleKeys, choose_caption
from vlp.data.reader import ShardRead, tar_samples
from vlp.data.sources import DataError
from vlp.data.wds import expand_shards

LENGTH_BINS = (0, 5, 10, 20, 40, 77, 150)


def shard_stats(spec: str, keys: SampleKeys) -> dict:
    """Raises DataError for a shard that cannot be read at all (a wrong path, a dead URL): stats of the rest would
    look plausible and be wrong."""
    counts, problems, lengths, sizes = Counter(), Counter(), Counter(), Counter()
    rng = random.Random(0)
    for url in tqdm(expand_shards(spec), desc="stats", unit="shard"):
        read = ShardRead()
        for sample in tar_samples(url, read):
            counts["samples"] += 1
            try:
                words = len(choose_caption(sample, keys, rng).split())
                lengths[max(b for b in LENGTH_BINS if b <= words)] += 1
            except BadSample as bad:
                problems[bad.kind] += 1
            image_key = next((k for k in keys.image if k in sample), None)
            if image_key is not None:
                try:
                    sizes["x".join(map(str, Image.open(io.BytesIO(sample[image_key])).size))] += 1
                except Exception:  # noqa: BLE001 - damaged image headers are reported, not fatal
                    problems["corrupt_image"] += 1
        if read.damage == "missing_shard":
            raise DataError(f"cannot read shard {url}: no such file, or nothing could be read from it")
        if read.damage:
            problems[read.damage] += 1
    return {"samples": counts["samples"], "problems": dict(problems),
            "caption_words": {_bin_label(b): lengths[b] for b in LENGTH_BINS if lengths[b]},
            "image_sizes": dict(sizes.most_common(20))}


def _bin_label(start: int) -> str:
    later = [b for b in LENGTH_BINS if b > start]
    return f"{start}-{later[0] - 1}" if later else f"{start}+"


def format_stats(stats: dict) -> str:
    lines = [f"samples: {stats['samples']}", f"problems: {stats['problems'] or 'none'}", "caption length (words):"]
    total = max(1, sum(stats["caption_words"].values()))
    lines += [f"  {k:>7}: {v:7d} {'#' * round(40 * v / total)}" for k, v in stats["caption_words"].items()]
    lines.append("image sizes (most common):")
    lines += [f"  {k:>11}: {v}" for k, v in stats["image_sizes"].items()]
    return "\n".join(lines)
