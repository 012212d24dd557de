"""Raw-sample streams of one logical worker: which shards it reads, in which order, and the shuffle buffer.

Every random choice comes from an RNG seeded by (seed, epoch, rank, worker), so a stream is a pure function of those.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Callable, Iterator, Sequence

from vlp.data.reader import tar_samples
from vlp.data.sources import DataError, Source

Piece = tuple[int, int, int, int]  # (source index, shard index, part, nparts): every nparts-th sample of a shard


def rng_for(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


def read_piece(sources: Sequence[Source], piece: Piece, counts: Counter) -> Iterator[dict]:
    source_index, shard_index, part, nparts = piece
    source = sources[source_index]
    if source.config.type == "hf":
        from vlp.data.hf import hf_samples  # deferred: imports `datasets`

        samples = hf_samples(source, shard_index, part, nparts, counts)
    else:
        samples = tar_samples(source.urls[shard_index], counts, part, nparts)
    for sample in samples:
        sample["__source__"] = source_index
        yield sample


def epoch_pieces(sources: Sequence[Source], seed: int, epoch: int, slots: int) -> list[Piece]:
    """All shards of all sources in this epoch's order (the same on every node); shards are split into parts
    when there are fewer shards than reading slots (ranks × workers), so that every slot gets data."""
    shards = [(s, i) for s, source in enumerate(sources) for i in range(len(source.urls))]
    rng_for(seed, epoch, "shards").shuffle(shards)
    nparts = math.ceil(slots / len(shards))
    return [(s, i, part, nparts) for s, i in shards for part in range(nparts)]


def epoch_stream(sources: Sequence[Source], pieces: list[Piece], slot: int, slots: int, counts: Counter,
                 shuffle: Callable[[Iterator[dict]], Iterator[dict]]) -> Iterator[dict]:
    """This slot's pieces (shuffled), then, only if the batch count asks for more (bad samples, uneven shards), all
    pieces again from this slot's offset. A pass over everything yielding nothing is an error, not an endless loop."""
    yield from shuffle(s for piece in pieces[slot::slots] for s in read_piece(sources, piece, counts))
    yield from shuffle(_refill(sources, pieces[slot:] + pieces[:slot], counts))


def _refill(sources: Sequence[Source], pieces: list[Piece], counts: Counter) -> Iterator[dict]:
    while True:
        found = 0
        for piece in pieces:
            for sample in read_piece(sources, piece, counts):
                found += 1
                yield sample
        if found == 0:
            raise DataError(f"no readable samples in any shard of {_names(sources)} (skipped so far: {dict(counts)})")


def _resampled_source(sources: Sequence[Source], s: int, rng: random.Random, counts: Counter) -> Iterator[dict]:
    source = sources[s]
    shards = len(source.urls)
    empty_in_a_row = 0
    while True:
        found = 0
        for sample in read_piece(sources, (s, rng.randrange(shards), 0, 1), counts):
            found += 1
            yield sample
        empty_in_a_row = 0 if found else empty_in_a_row + 1
        if empty_in_a_row > 2 * shards + 10:
            raise DataError(f"source {source.name!r}: {empty_in_a_row} shards in a row could not be read "
                            f"(skipped so far: {dict(counts)})")


def resampled_stream(sources: Sequence[Source], seed: int, epoch: int, rank: int, worker: int,
                     counts: Counter) -> Iterator[dict]:
    """Shards drawn with replacement; each sample comes from a source drawn by weight (weights = sample shares)."""
    streams = [_resampled_source(sources, s, rng_for(seed, epoch, rank, worker, "source", s), counts)
               for s in range(len(sources))]
    if len(streams) == 1:
        yield from streams[0]
        return
    rng = rng_for(seed, epoch, rank, worker, "mix")
    weights = [s.weight for s in sources]
    indices = range(len(streams))
    while True:
        yield next(streams[rng.choices(indices, weights)[0]])


def shuffled(samples: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Buffer shuffle: each output is drawn at random from the next `size` inputs."""
    if size <= 1:
        yield from samples
        return
    buffer: list[dict] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


def _names(sources: Sequence[Source]) -> str:
    return ", ".join(repr(s.name) for s in sources)

