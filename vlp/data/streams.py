"""Raw-sample streams of one reading slot (a worker of a rank): which samples it reads, in which order, and the
shuffle buffer.

Epoch mode reads every sample at most once per epoch; see `vlp.data.epoch` for how an epoch's batches are chosen.
- Shard sizes known (sizes.json, HF row counts): the epoch's shards (shuffled per epoch) are laid end to end and cut
  into one run of samples per slot, sized by the batches the slot owes, so readers stay balanced however shards are
  sized; a run may start or end inside a shard.
- Sizes unknown (URLs, pipes, with `data.num_samples`): shards are dealt whole to the slots (split by sample index
  when there are fewer shards than slots).
Damage in a shard is counted once, by the piece that owns the sample where it cut the shard; the same piece notes a
shard whose readable count differs from sizes.json. Resampled mode draws shards with replacement.

Every random choice comes from an RNG seeded by (seed, epoch, rank, worker), so a stream is a pure function of those.
"""
from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections import Counter
from typing import Callable, Iterator, Optional, Sequence

from vlp.data.sources import DataError, Findings, Piece, Source


def rng_for(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


SampleId = tuple[int, int, int]  # (source, shard, index in the shard)


def sample_id(sample: dict) -> SampleId:
    return sample["__source__"], sample["__shard__"], sample["__index__"]


def read_piece(sources: Sequence[Source], piece: Piece, counts: Counter, findings: Findings) -> Iterator[dict]:
    source = sources[piece.source]
    for sample in source.reader.read(source, piece, counts, findings):
        sample["__source__"], sample["__shard__"] = piece.source, piece.shard
        yield sample


def epoch_pieces(sources: Sequence[Source], seed: int, epoch: int, slots: int,
                 quotas: Optional[list[int]]) -> list[list[Piece]]:
    """Each slot's pieces of this epoch (the same on every node): runs of `quotas[slot]` samples when shard sizes are
    known (`quotas` given), else whole shards dealt round-robin."""
    shards = [(s, i) for s, source in enumerate(sources) for i in range(len(source.shards))]
    rng_for(seed, epoch, "shards").shuffle(shards)
    if quotas is not None:
        return cut_runs([Piece(s, i) for s, i in shards], [source.sizes for source in sources], quotas)
    nparts = math.ceil(slots / len(shards))
    pieces = [Piece(s, i, part=part, nparts=nparts) for s, i in shards for part in range(nparts)]
    return [pieces[slot::slots] for slot in range(slots)]


def cut_runs(spans: list[Piece], sizes: list[Optional[tuple[int, ...]]], quotas: list[int],
             excluded: Optional[dict[tuple[int, int], list[int]]] = None) -> list[list[Piece]]:
    """The spans laid end to end, cut into consecutive runs of `quotas[slot]` samples, not counting the `excluded`
    indices (sorted, per (source, shard)). A span to its shard's end (stop None) keeps its last piece reading to the
    shard's real end, so that it sees a count that differs from sizes.json."""
    runs: list[list[Piece]] = [[] for _ in quotas]
    slot, left = 0, quotas[0]
    for span in spans:
        end = sizes[span.source][span.shard] if span.stop is None else span.stop
        gaps = (excluded or {}).get((span.source, span.shard), [])
        start = span.start
        while start < end:
            while left == 0 and slot + 1 < len(quotas):
                slot += 1
                left = quotas[slot]
            if left == 0:
                return runs
            stop = _after(start, left, gaps, end)
            runs[slot].append(span._replace(start=start, stop=None if stop == end and span.stop is None else stop))
            left -= stop - start - (bisect_left(gaps, stop) - bisect_left(gaps, start))
            start = stop
    return runs


def _after(start: int, wanted: int, gaps: list[int], end: int) -> int:
    """The index after the first `wanted` indices from `start` that are not in `gaps` (sorted), at most `end`."""
    stop = start + wanted
    for gap in gaps[bisect_left(gaps, start):]:
        if gap >= stop:
            break
        stop += 1
    return min(stop, end)


def epoch_stream(sources: Sequence[Source], pieces: Sequence[Piece], counts: Counter, findings: Findings,
                 shuffle: Callable[[Iterator[dict]], Iterator[dict]],
                 exclude: frozenset[SampleId] = frozenset()) -> Iterator[dict]:
    """This slot's pieces, once, through the shuffle buffer, without the `exclude`d samples (delivered earlier in the
    epoch, see `vlp.data.continuation`)."""
    samples = (s for piece in pieces for s in read_piece(sources, piece, counts, findings))
    yield from shuffle(s for s in samples if sample_id(s) not in exclude) if exclude else shuffle(samples)


def _resampled_source(sources: Sequence[Source], s: int, rng: random.Random, counts: Counter) -> Iterator[dict]:
    source = sources[s]
    shards = len(source.shards)
    empty_in_a_row = 0
    while True:
        found = 0
        for sample in read_piece(sources, Piece(s, rng.randrange(shards)), counts, {}):
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
