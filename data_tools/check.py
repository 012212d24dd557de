"""`check`: read every sample of every shard the way training does and report problems per shard."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from vlp.data.decode import BadSample, SampleKeys, check_text, decode_image
from vlp.data.reader import tar_samples
from vlp.data.sources import expand_shards, read_shard_sizes


@dataclass
class ShardReport:
    url: str
    samples: int = 0
    problems: Counter = field(default_factory=Counter)
    expected: int | None = None  # from sizes.json

    @property
    def ok(self) -> bool:
        return not self.problems and (self.expected is None or self.expected == self.samples)


def check_shards(spec: str, keys: SampleKeys, max_caption_words: int = 200) -> list[ShardReport]:
    urls = expand_shards(spec)
    sizes = read_shard_sizes(urls)
    reports = []
    rng = random.Random(0)
    for i, url in enumerate(tqdm(urls, desc="check", unit="shard")):
        report = ShardReport(url, expected=sizes[i] if sizes else None)
        for sample in tar_samples(url, report.problems):
            report.samples += 1
            try:
                caption, _ = check_text(sample, keys, rng)
                decode_image(sample, keys)
            except BadSample as bad:
                report.problems[bad.kind] += 1
                continue
            if len(caption.split()) > max_caption_words:
                report.problems["long_caption"] += 1
        reports.append(report)
    return reports


def format_reports(reports: list[ShardReport]) -> str:
    lines = []
    for r in reports:
        problems = ", ".join(f"{k}={v}" for k, v in sorted(r.problems.items()))
        if r.expected is not None and r.expected != r.samples:
            problems += f"{', ' if problems else ''}sizes.json says {r.expected}"
        lines.append(f"{'ok ' if r.ok else 'BAD'} {r.url}: {r.samples} samples{'; ' + problems if problems else ''}")
    bad = sum(not r.ok for r in reports)
    lines.append(f"{len(reports)} shards, {sum(r.samples for r in reports)} samples, {bad} damaged shard(s)")
    return "\n".join(lines)
