"""Raw samples out of tar shards. A damaged shard ends the read and is recorded in the read's own `ShardRead`; a
shard that may not be read (permissions) is an error, and so is anything that is not damage (a bug).

A raw sample is a dict {"__key__", "__url__", "__index__" (position in its shard), extension: bytes, ...}.
"""
from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from vlp.data.sources import DataError

_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # "dir/000123.neg.txt" → ("dir/000123", "neg.txt")
# What a broken, cut-short or absent archive raises: format errors, IO errors (a failing curl or `pipe:` command
# surfaces as a plain OSError from webdataset's gopen), and EOF inside a member. PermissionError is an OSError too,
# but it is the user's setup, not damage: it is raised (see `_open`).
DAMAGE = (tarfile.TarError, EOFError, OSError)


@dataclass
class ShardRead:
    """What one read of a shard found. Local to that read, so nothing another reader or a counter's owner does can
    change what this read decides."""
    samples: int = 0  # complete samples read so far (all of them, whichever a caller keeps)
    damage: Optional[str] = None  # "missing_shard" (nothing could be read) or "corrupt_tar" (cut short, not a tar)
    cut: Optional[str] = None  # the member whose bytes the damage cut, where its header could still be read


# Shard URLs read through fsspec (s3fs): it signs each request with the environment's credentials, which curl cannot
FSSPEC_SCHEMES = ("s3://",)


def open_url(url: str):
    """A readable byte stream for a local path, an http(s):// URL (curl), an s3:// URL (fsspec) or a `pipe:` command
    (trusted input only)."""
    if url.startswith(FSSPEC_SCHEMES):
        import fsspec  # deferred, as webdataset is

        return fsspec.open(url, "rb").open()
    from webdataset.gopen import gopen  # deferred: webdataset import is slow

    return gopen(url, "rb")


def _open(url: str, read: ShardRead):
    try:
        return open_url(url)
    except PermissionError as e:
        raise DataError(f"shard {url}: permission denied ({e.strerror})") from None
    except ValueError as e:  # gopen: a URL scheme it has no reader for
        raise DataError(f"shard {url}: {e}") from None
    except DAMAGE:
        read.damage = "missing_shard"
        return None


def _tar_members(url: str, read: ShardRead) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) pairs; on damage the iteration ends with `read.damage` set. A shard that cannot be opened
    or streams nothing (404, failing pipe) is `missing_shard`; one that is not a tar or is cut short `corrupt_tar`.
    A local uncompressed tar is read by `_walk_headers` (the census's parser, which follows tarfile's rules: the
    same members and damage): tarfile's stream mode costs ~0.05 ms a sample in Python-level header parsing and 16 KiB
    reads, the parser two reads a member."""
    stream = _open(url, read)
    if stream is None:
        return
    size = _plain_local_tar_size(url, stream)
    if size is not None:
        with stream:
            try:
                yield from _walk_headers(stream, size, read, with_data=True)
            except (ValueError, OSError):
                read.damage = "corrupt_tar"
        return
    seen, finished = 0, False
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if info.isfile():
                    read.cut = info.name  # until its bytes are in
                    data = tar.extractfile(info).read()
                    read.cut = None
                    seen += 1
                    yield info.name, data
        finished = True
    except DAMAGE as e:
        # Nothing came: an empty stream, or a failed fetch/pipe (curl's exit status can surface as a read error,
        # racing with EOF); a tar format error with nothing read is a file that exists but is not a tar.
        nothing_came = seen == 0 and (not isinstance(e, tarfile.ReadError) or "empty" in str(e))
        read.damage = "missing_shard" if nothing_came else "corrupt_tar"
    finally:
        try:
            stream.close()
        except DAMAGE:  # a failing pipe's exit status surfaces here; after an early stop (or damage) it means nothing
            if finished:
                read.damage = "missing_shard" if seen == 0 else "corrupt_tar"


def _grouped(members: Iterator[tuple[str, Any]], url: str, read: ShardRead) -> Iterator[dict]:
    """Members grouped into samples by key, in order; the last one only once the archive ended cleanly (a sample
    cut off by damage is dropped). The one grouping rule: reading and counting a shard (`census`) both use it."""
    current: Optional[dict] = None
    for name, data in members:
        match = _KEY_EXT.match(name)
        if match is None or name.rsplit("/", 1)[-1].startswith("__"):
            continue
        key, ext = match.group(1), match.group(2).lower()
        if current is None or key != current["__key__"] or ext in current:
            if current is not None:
                read.samples += 1
                yield current
            current = {"__key__": key, "__url__": url, "__index__": read.samples}
        current[ext] = data
    if current is not None and (read.damage is None or _cut_after(read.cut, current["__key__"])):
        read.samples += 1
        yield current


def _cut_after(cut: Optional[str], key: str) -> bool:
    """Whether the damage cut a member of a later sample than `key` (which then came out whole)."""
    match = None if cut is None else _KEY_EXT.match(cut)
    return match is not None and match.group(1) != key


def tar_samples(url: str, read: Optional[ShardRead] = None) -> Iterator[dict]:
    """Every sample of one shard, members grouped by key, in order (`_grouped`)."""
    read = ShardRead() if read is None else read
    yield from _grouped(_tar_members(url, read), url, read)


def _tar_headers(path: str, read: ShardRead) -> Iterator[tuple[str, None]]:
    """The member names of a local uncompressed tar, from its headers alone (each member's data is seeked over):
    what `_tar_members` would yield, without the bytes, ending with `read.damage` set where it would. Parsed here
    rather than by `tarfile` (~20x slower per member, all of it Python-level TarInfo work), following its rules:
    a bad first header is damage, a bad or short later one ends the archive as a zero block does."""
    try:
        size = os.path.getsize(path)
        stream = open(path, "rb", buffering=0)
    except PermissionError as e:
        raise DataError(f"shard {path}: permission denied ({e.strerror})") from None
    except OSError:
        read.damage = "missing_shard"
        return
    with stream:
        try:
            yield from _walk_headers(stream, size, read)
        except (ValueError, OSError):
            read.damage = "corrupt_tar"


def _plain_local_tar_size(url: str, stream) -> Optional[int]:
    """The size of `url` when it is a local uncompressed .tar (what the census reads too) and `stream` its file (left
    at its start); else None, and tarfile reads it."""
    if "://" in url or url.startswith("pipe:") or not url.endswith(".tar"):
        return None
    try:
        magic = stream.read(6)
        stream.seek(0)
        size = os.fstat(stream.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        return None
    return None if magic.startswith(_COMPRESSED) else size


_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")  # gzip, bzip2, xz: tarfile's stream mode decompresses these


def _walk_headers(stream, size: int, read: ShardRead, with_data: bool = False) -> Iterator[tuple[str, Optional[bytes]]]:
    """The file members' (name, None), or (name, bytes) `with_data`, ending with `read.damage` where tarfile would
    find damage."""
    offset, extended, long_name = 0, False, None
    while True:
        stream.seek(offset)
        header = stream.read(_BLOCK)
        if len(header) < _BLOCK or header.count(0) == _BLOCK or not _checksum_ok(header):
            if offset == 0 and header.count(0) != _BLOCK:  # tarfile: "empty file" / "bad checksum" at the start
                read.damage = "missing_shard" if not header else "corrupt_tar"
            elif extended:  # the header an extended one announced is bad: tarfile raises here
                read.damage = "corrupt_tar"
            return
        kind, member_size = header[156:157], _number(header[124:136])
        data_at = offset + _BLOCK
        if data_at + member_size > size:  # cut inside this member's data
            read.cut, read.damage = long_name or _header_name(header), "corrupt_tar"
            return
        offset = data_at + -(-member_size // _BLOCK) * _BLOCK
        if kind in _EXTENDED_KINDS:  # the next header's long name (GNU "L", pax "x" path=) or other metadata
            stream.seek(data_at)
            record = stream.read(member_size)
            if kind == b"L":
                long_name = record.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif kind == b"x":
                long_name = _pax_path(record) or long_name
            extended = True
            continue
        name, extended, long_name = long_name or _header_name(header), False, None
        if kind in _FILE_KINDS and not name.endswith("/"):
            if not with_data:
                yield name, None
            else:
                read.cut = name  # until its bytes are in
                stream.seek(data_at)
                data = stream.read(member_size)
                if len(data) < member_size:  # the file shrank since its size was read
                    read.damage = "corrupt_tar"
                    return
                read.cut = None
                yield name, data
        if offset > size:  # cut in the padding after the data: a stream read fails there, the member is out
            read.damage = "corrupt_tar"
            return


_BLOCK = 512
_FILE_KINDS = (b"0", b"\0", b"7")  # regular, old-style regular, contiguous: what TarInfo.isfile() accepts
_EXTENDED_KINDS = (b"L", b"K", b"x", b"g")  # GNU long name / long link, pax per-member / global records


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256, for members of 8 GiB and more
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[:1] == b"\xff" else value
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0  # ValueError on junk: damage


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _number(header[148:156])
    except ValueError:
        return False
    unsigned = 256 + sum(header[:148]) + sum(header[156:])
    signed = 256 + sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) if stored != unsigned else 0
    return stored in (unsigned, signed)


def _header_name(header: bytes) -> str:
    name = header[:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\0":  # POSIX ustar: a long path is split into prefix/name
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax_path(records: bytes) -> Optional[str]:
    for record in records.split(b"\n"):
        _, _, field = record.partition(b" ")
        if field.startswith(b"path="):
            return field[5:].decode("utf-8", "surrogateescape")
    return None


def census(path: str) -> Optional[ShardRead]:
    """How many samples a local shard holds and what damage ends it, from its tar headers (no member read: about a
    quarter of a read's cost, bench/census_cost.py); None for a shard this cannot tell cheaply (a URL, a pipe, a
    compressed tar), whose count only a read finds."""
    if "://" in path or path.startswith("pipe:") or not path.endswith(".tar"):
        return None
    read = ShardRead()
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":  # gzip: headers only come out of decompressing everything
                return None
    except OSError:
        pass  # missing or unreadable: `_tar_headers` tells which
    for _ in _grouped(_tar_headers(path, read), path, read):
        pass
    return read
