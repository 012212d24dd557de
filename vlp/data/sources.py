"""Training sources from the recipe: shard specs (brace ranges, URLs, `pipe:`), weights and epoch sizes.

A `Source` is one entry of the mix: an ordered list of shard URLs (or one HF dataset) plus its sampling weight.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import braceexpand

from vlp.recipe.schema import DataConfig, SourceConfig


class DataError(RuntimeError):
    """Training data that cannot be used at all (as opposed to single bad samples, which are skipped)."""


@dataclass(frozen=True)
class Source:
    name: str  # the spec as written, for messages
    urls: tuple[str, ...]  # expanded shard URLs; row ranges "start:stop" for HF sources
    weight: float
    sizes: Optional[tuple[int, ...]]  # samples per shard (sizes.json), None when unknown
    config: SourceConfig

    @property
    def num_samples(self) -> Optional[int]:
        return sum(self.sizes) if self.sizes is not None else None


def expand_shards(spec: str) -> list[str]:
    """`data/{000..009}.tar` → ten paths. `pipe:` commands and URLs are expanded the same way."""
    urls = list(braceexpand.braceexpand(spec.strip()))
    if not urls:
        raise DataError(f"shard spec {spec!r} names no shards")
    return urls


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def read_shard_sizes(urls: list[str]) -> Optional[tuple[int, ...]]:
    """Samples per shard from `sizes.json` ({shard file name: count}) next to local shards; None when unknown."""
    if not urls or not all(_is_local(u) for u in urls):
        return None
    tables: dict[str, dict] = {}
    sizes = []
    for url in urls:
        folder = os.path.dirname(os.path.abspath(url))
        if folder not in tables:
            path = os.path.join(folder, "sizes.json")
            tables[folder] = json.loads(open(path).read()) if os.path.isfile(path) else {}
        count = tables[folder].get(os.path.basename(url))
        if count is None:
            return None
        sizes.append(int(count))
    return tuple(sizes)


def _hf_source(cfg: SourceConfig) -> Source:
    from vlp.data.hf import hf_chunks, hf_num_rows  # deferred: imports `datasets`

    chunks = hf_chunks(hf_num_rows(cfg))
    sizes = None if chunks == ("0:",) else tuple(int(c.split(":")[1]) - int(c.split(":")[0]) for c in chunks)
    return Source(cfg.shards, chunks, cfg.weight, sizes, cfg)


def source_configs(cfg: DataConfig) -> list[SourceConfig]:
    """`sources:` as given, or `train` / `train_weights` ("::"-separated, as in OpenCLIP) turned into sources."""
    if cfg.sources:
        if cfg.train:
            raise DataError("set either data.train or data.sources, not both")
        return list(cfg.sources)
    if not cfg.train:
        raise DataError("no training data: set data.train or data.sources")
    specs = cfg.train.split("::")
    weights = [float(w) for w in cfg.train_weights.split("::")] if cfg.train_weights else [1.0] * len(specs)
    if len(weights) != len(specs):
        raise DataError(f"data.train_weights has {len(weights)} entries for {len(specs)} sources in data.train")
    return [SourceConfig(shards=s, weight=w) for s, w in zip(specs, weights)]


def load_sources(cfg: DataConfig) -> list[Source]:
    sources = []
    for sc in source_configs(cfg):
        if sc.weight <= 0:
            raise DataError(f"source {sc.shards!r}: weight must be positive, got {sc.weight}")
        if sc.type == "hf":
            sources.append(_hf_source(sc))
        else:
            urls = expand_shards(sc.shards)
            sources.append(Source(sc.shards, tuple(urls), sc.weight, read_shard_sizes(urls), sc))
    return sources
