"""Raw samples of one logical stream: which samples it reads, in which order, and its shuffle buffer.

An epoch is read as `S` streams (`data.streams`), a number fixed by the recipe, not by processes or DataLoader
workers; each stream is a pure function of (seed, epoch, stream, data), so the batches built from them
(`vlp.data.pipeline`) are the same on every layout.
- Shard sizes known (sizes.json, HF row counts): the epoch's shards (shuffled per epoch) are laid end to end and cut
  into one run of samples per stream, of the samples its batches need (`quotas`), so streams stay balanced however
  shards are sized; a run may start or end inside a shard.
- Sizes unknown (URLs, pipes, with `data.num_samples`): shards are dealt whole to the streams (split by sample index
  when there are fewer shards than streams).
Damage in a shard is counted once, by the piece that owns the sample where it cut the shard; the same piece notes a
shard whose readable count differs from sizes.json. Resampled mode draws shards and sources with replacement, from
RNGs keyed by (seed, epoch, stream).
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Iterator, Optional, Sequence

from vlp.data.sources import DataError, Findings, Piece, Source


def rng_for(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


def read_piece(sources: Sequence[Source], piece: Piece, counts: Counter, findings: Findings) -> Iterator[dict]:
    source = sources[piece.source]
    for sample in source.reader.read(source, piece, counts, findings):
        sample["__source__"], sample["__shard__"] = piece.source, piece.shard
        yield sample


def stream_quotas(sources: Sequence[Source], streams: int, batch_size: int) -> Optional[list[int]]:
    """Samples each stream reads, None when shard sizes are unknown: the B/S samples per whole global batch, and the
    rest (less than a batch) shared out, so that clean data fills every stream's chunks exactly."""
    if any(s.num_samples is None for s in sources):
        return None
    total = sum(s.num_samples for s in sources)
    full = total // batch_size * (batch_size // streams)
    rest = total - full * streams
    return [full + rest // streams + (s < rest % streams) for s in range(streams)]


def epoch_pieces(sources: Sequence[Source], seed: int, epoch: int, streams: int,
                 quotas: Optional[list[int]]) -> list[list[Piece]]:
    """Each stream's pieces of this epoch (the same on every process): runs of `quotas[stream]` samples when shard
    sizes are known (`quotas` given), else whole shards dealt round-robin."""
    shards = [(s, i) for s, source in enumerate(sources) for i in range(len(source.shards))]
    rng_for(seed, epoch, "shards").shuffle(shards)
    if quotas is not None:
        return cut_runs([Piece(s, i) for s, i in shards], [source.sizes for source in sources], quotas)
    nparts = math.ceil(streams / len(shards))
    pieces = [Piece(s, i, part=part, nparts=nparts) for s, i in shards for part in range(nparts)]
    return [pieces[stream::streams] for stream in range(streams)]


def cut_runs(shards: list[Piece], sizes: list[tuple[int, ...]], quotas: list[int]) -> list[list[Piece]]:
    """The whole shards laid end to end, cut into consecutive runs of `quotas[stream]` samples. A run to its shard's
    end keeps reading to the shard's real end (stop None), so that it sees a count that differs from sizes.json."""
    runs: list[list[Piece]] = [[] for _ in quotas]
    stream, left = 0, quotas[0]
    for shard in shards:
        end, start = sizes[shard.source][shard.shard], 0
        while start < end:
            while left == 0 and stream + 1 < len(quotas):
                stream += 1
                left = quotas[stream]
            if left == 0:
                return runs
            stop = min(start + left, end)
            runs[stream].append(shard._replace(start=start, stop=None if stop == end else stop))
            left -= stop - start
            start = stop
    return runs


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


def resampled_stream(sources: Sequence[Source], seed: int, epoch: int, stream: int,
                     counts: Counter) -> Iterator[dict]:
    """Shards drawn with replacement; each sample comes from a source drawn by weight (weights = sample shares)."""
    streams = [_resampled_source(sources, s, rng_for(seed, epoch, stream, "source", s), counts)
               for s in range(len(sources))]
    if len(streams) == 1:
        yield from streams[0]
        return
    rng = rng_for(seed, epoch, stream, "mix")
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


def raw_stream(sources: Sequence[Source], pieces: Optional[Sequence[Piece]], resampled: bool, seed: int,
               epoch: int, stream: int, shuffle_buffer: int, counts: Counter, findings: Findings) -> Iterator[dict]:
    """Stream `stream`'s raw samples of the epoch through its own shuffle buffer: its `pieces` once (epoch mode), or
    endless resampled draws."""
    if resampled:
        samples = resampled_stream(sources, seed, epoch, stream, counts)
    else:
        samples = (s for piece in pieces for s in read_piece(sources, piece, counts, findings))
    return shuffled(samples, shuffle_buffer, rng_for(seed, epoch, stream, "buffer"))
