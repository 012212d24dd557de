"""A recipe's training sources, checked and opened through the reader registry (`vlp.data.sources`)."""
from __future__ import annotations

from vlp.data.config_check import check, require_training_data
from vlp.data.sources import DataError, Source, source_configs, source_reader
from vlp.recipe.schema import DataConfig


def load_sources(cfg: DataConfig) -> list[Source]:
    """Each source of `cfg` with its shards and their sizes. Raises ConfigError for a section that `vlp.data.check`
    rejects (one built in Python skipped the recipe loader)."""
    check(cfg)
    require_training_data(cfg)
    sources = []
    for sc in source_configs(cfg):
        reader = source_reader(sc.type)
        shards, sizes = reader.shards(sc)
        if not shards:
            raise DataError(f"source {sc.shards!r} has no shards")
        sources.append(Source(sc.shards, tuple(shards), sc.weight, None if sizes is None else tuple(sizes), sc,
                              reader))
    return sources
