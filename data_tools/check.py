"""`check`: read every sample of every shard the way training does and report problems per shard, naming the keys
of the damaged samples so they can be found and fixed."""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from vlp.data.decode import BadSample, SampleKeys, drawn_text, decode_image
from vlp.data.reader import ShardRead, tar_samples
from vlp.data.sizes import SIZES_FILE, read_shard_sizes, write_shard_sizes
from vlp.data.wds import expand_shards
from vlp.recipe.paths import is_remote

KEYS_SHOWN = 20  # damaged sample keys listed per shard unless all are asked for


@dataclass
class ShardReport:
    url: str
    samples: int = 0
    problems: Counter = field(default_factory=Counter)
    expected: Optional[int] = None  # from sizes.json
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (sample key, problem), in shard order

    @property
    def ok(self) -> bool:
        return not self.problems and (self.expected is None or self.expected == self.samples)


def _problem(sample: dict, keys: SampleKeys, rng: random.Random, max_caption_words: int) -> Optional[str]:
    try:
        caption, _ = drawn_text(sample, keys, rng)
        decode_image(sample, keys)
    except BadSample as bad:
        return bad.kind
    return "long_caption" if len(caption.split()) > max_caption_words else None


def check_shards(spec: str, keys: SampleKeys, max_caption_words: int = 200) -> list[ShardReport]:
    urls = expand_shards(spec)
    sizes = read_shard_sizes(urls)
    reports = []
    rng = random.Random(0)
    for i, url in enumerate(tqdm(urls, desc="check", unit="shard")):
        report, read = ShardReport(url, expected=sizes[i] if sizes else None), ShardRead()
        for sample in tar_samples(url, read):
            report.samples += 1
            problem = _problem(sample, keys, rng, max_caption_words)
            if problem is not None:
                report.problems[problem] += 1
                report.damaged.append((sample["__key__"], problem))
        if read.damage:
            report.problems[read.damage] += 1
        reports.append(report)
    return reports


def write_sizes(reports: list[ShardReport]) -> list[str]:
    """sizes.json next to each folder's shards from the samples just read (kept entries of other shards): for shards
    written without one, so training knows each shard's size without a census. A shard cut short is recorded with
    the samples it holds, which is what an epoch can read of it."""
    folders: dict[str, dict[str, int]] = {}
    for r in reports:
        if is_remote(r.url):
            raise ValueError(f"{r.url}: --write-sizes writes next to local shards only")
        folders.setdefault(os.path.dirname(os.path.abspath(r.url)), {})[os.path.basename(r.url)] = r.samples
    written = []
    for folder, sizes in folders.items():
        path = Path(folder) / SIZES_FILE
        kept = json.loads(path.read_text()) if path.is_file() else {}
        written.append(f"wrote {write_shard_sizes(folder, {**kept, **sizes})} ({len(sizes)} shards)")
    return written


def format_reports(reports: list[ShardReport], all_keys: bool = False) -> str:
    lines = []
    for r in reports:
        problems = ", ".join(f"{k}={v}" for k, v in sorted(r.problems.items()))
        if r.expected is not None and r.expected != r.samples:
            problems += f"{', ' if problems else ''}sizes.json says {r.expected}"
        lines.append(f"{'ok ' if r.ok else 'BAD'} {r.url}: {r.samples} samples{'; ' + problems if problems else ''}")
        shown = r.damaged if all_keys else r.damaged[:KEYS_SHOWN]
        lines += [f"    {key}: {problem}" for key, problem in shown]
        if len(shown) < len(r.damaged):
            lines.append(f"    ... and {len(r.damaged) - len(shown)} more (--all lists every one)")
    bad = sum(not r.ok for r in reports)
    lines.append(f"{len(reports)} shards, {sum(r.samples for r in reports)} samples, {bad} damaged shard(s)")
    return "\n".join(lines)
