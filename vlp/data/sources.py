"""Training sources: the reader registry keyed by `data.sources[].type`, and the recipe's sources opened through it.

A `Source` is one entry of the mix: an ordered list of shards (whatever its reader names them: URLs, row ranges),
their sizes when known, and its sampling weight. Each source type is a `SourceReader` in a file of its own
(`vlp.data.wds`, `vlp.data.hf`); `register_source` adds others. `vlp.data.open_sources` opens a recipe's sources
through it (above `vlp.data.config_check`, whose rules ask this registry).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Iterator, NamedTuple, Optional, Sequence

from vlp.recipe.errors import did_you_mean
from vlp.recipe.redact import redact_text
from vlp.recipe.schema import DataConfig, SourceConfig

from vlp.data.fields import SampleField, register_field

if TYPE_CHECKING:
    from vlp.data.decode import SampleKeys
    from vlp.data.reader import ShardRead

Findings = dict[str, tuple[int, int]]  # shard → (samples readable, samples its recorded size promises)
BUILTIN = {"webdataset": "vlp.data.wds", "wds": "vlp.data.wds", "hf": "vlp.data.hf"}  # type → module with READER


class DataError(RuntimeError):
    """Training data that cannot be used at all (as opposed to single bad samples, which are skipped). Its message
    quotes shard URLs, which may carry passwords and signatures, and is printed and logged: it is redacted here, for
    every data error, as the model card is (`data_message` does the same for warnings)."""

    def __init__(self, message: str):
        super().__init__(data_message(message))


def data_message(text: str) -> str:
    """A data error or warning as users may see it: shard credentials masked (vlp.recipe.redact)."""
    return redact_text(text)


class Piece(NamedTuple):
    """The samples `start <= index < stop` (stop None: to the shard's end) with `index % nparts == part` of a shard."""
    source: int
    shard: int
    start: int = 0
    stop: Optional[int] = None
    part: int = 0
    nparts: int = 1

    def takes(self, index: int) -> bool:
        return self.start <= index and (self.stop is None or index < self.stop) and index % self.nparts == self.part


@dataclass(frozen=True)
class Source:
    name: str  # the spec as written, for messages
    shards: tuple[str, ...]
    weight: float
    sizes: Optional[tuple[int, ...]]  # samples per shard, None when unknown
    config: SourceConfig
    reader: "SourceReader"  # travels with the source into DataLoader workers: no registry lookup there
    # per shard, the damage its census found (None: none; empty tuple: no census), already counted for each epoch
    damage: tuple[Optional[str], ...] = ()

    @property
    def num_samples(self) -> Optional[int]:
        return sum(self.sizes) if self.sizes is not None else None


class SourceReader(ABC):
    """One source type. Raw samples are dicts {"__key__", "__url__", "__index__" (place in its shard), field: value}
    with the image as encoded bytes or a PIL image and text as str or bytes."""

    fields: tuple[SampleField, ...] = ()  # per-sample inputs beyond image and caption that every batch of it carries

    @abstractmethod
    def shards(self, cfg: SourceConfig) -> tuple[Sequence[str], Optional[Sequence[int]]]:
        """The source's shards and samples per shard (None when unknown: epochs then need data.num_samples)."""

    @abstractmethod
    def read(self, source: Source, piece: Piece, counts: Counter, findings: Findings) -> Iterator[dict]:
        """The raw samples of `piece` (those `piece.takes(index)`), in shard order. Damage that loses samples is
        counted by kind in `counts`; a shard whose readable count differs from its size goes in `findings`."""

    def census(self, source: Source) -> tuple[Optional["ShardRead"], ...]:
        """Per shard, what a cheap look (no sample decoded) finds it holds, or None where only a read can tell;
        the epoch is then planned on what is readable rather than on recorded sizes. By default: no look."""
        return (None,) * len(source.shards)

    def sample_keys(self, data: DataConfig, cfg: SourceConfig) -> "SampleKeys":
        """Where a raw sample keeps its image and caption: by default the recipe's data.image_key / caption_key."""
        from vlp.data.decode import SampleKeys

        return SampleKeys(image=tuple(data.image_key.split(";")), caption=data.caption_key,
                          caption_field=data.caption_field, extra_captions=tuple(data.extra_caption_keys),
                          negative=data.negative_key, num_negatives=data.num_negatives,
                          max_image_pixels=data.max_image_pixels)

    def hub_datasets(self, cfg: SourceConfig) -> list[str]:
        """Hub dataset ids this source reads (model card metadata)."""
        return []


_REGISTERED: dict[str, SourceReader] = {}


def register_source(name: str, reader: SourceReader) -> None:
    """Make `data.sources: [{type: NAME, shards: ...}]` read through `reader`."""
    if name in _REGISTERED or name in BUILTIN:
        raise ValueError(f"source type {name!r} registered twice")
    for sample_field in reader.fields:
        register_field(sample_field)
    _REGISTERED[name] = reader


def source_fields(types: Sequence[str]) -> tuple[SampleField, ...]:
    """The registered fields that sources of every type in `types` yield (the built-in readers yield none)."""
    declared = [_REGISTERED[t].fields if t in _REGISTERED else () for t in types]
    return tuple(f for f in declared[0] if all(f in d for d in declared[1:])) if declared else ()


def field_sources(name: str) -> list[str]:
    """The registered source types that yield batch field `name`."""
    return sorted(t for t, reader in _REGISTERED.items() if any(f.name == name for f in reader.fields))


def source_types() -> list[str]:
    return sorted({*BUILTIN, *_REGISTERED})


def source_reader(name: str) -> SourceReader:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in BUILTIN:  # imported on use: the HF reader pulls in `datasets`
        return import_module(BUILTIN[name]).READER
    hint = did_you_mean(name, source_types(), f"; registered: {', '.join(source_types())}", cutoff=0.5)
    raise DataError(f"unknown source type {name!r}{hint}")


def source_configs(cfg: DataConfig) -> list[SourceConfig]:
    """`sources:` as given, or `train` / `train_weights` ("::"-separated, as in OpenCLIP) turned into sources, of a
    section `vlp.data.check` accepts."""
    if cfg.sources:
        return list(cfg.sources)
    specs = cfg.train.split("::")
    weights = [float(w) for w in cfg.train_weights.split("::")] if cfg.train_weights else [1.0] * len(specs)
    return [SourceConfig(shards=s, weight=w) for s, w in zip(specs, weights)]


def hub_datasets(cfg: DataConfig) -> list[str]:
    """Hub dataset ids the recipe's sources read."""
    return sorted({name for sc in cfg.sources for name in source_reader(sc.type).hub_datasets(sc)})
