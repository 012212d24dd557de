"""Shard writing: numbered tars of at most `per_shard` samples plus the samples-per-shard table `vlp.data.sizes`
reads."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Optional, Union

from vlp.data.sizes import write_shard_sizes

Value = Union[bytes, str, int]


def _as_bytes(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


class ShardWriter:
    """`with ShardWriter(dir) as w: w.write("key", {"png": b"...", "txt": "a cat"})` → dir/00000.tar, ..., sizes.json."""

    def __init__(self, out_dir: Union[str, Path], per_shard: int = 1000, pattern: str = "{:05d}.tar"):
        if per_shard < 1:
            raise ValueError(f"per_shard must be >= 1, got {per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.per_shard, self.pattern = per_shard, pattern
        self.sizes: dict[str, int] = {}
        self._tar: Optional[tarfile.TarFile] = None
        self._name = ""

    def _next_shard(self) -> None:
        self._close_shard()
        self._name = self.pattern.format(len(self.sizes))
        self.sizes[self._name] = 0
        self._tar = tarfile.open(self.out_dir / self._name, "w", format=tarfile.USTAR_FORMAT)

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def write(self, key: str, fields: dict[str, Value]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        if self._tar is None or self.sizes[self._name] >= self.per_shard:
            self._next_shard()
        for ext, value in fields.items():
            data = _as_bytes(value)
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self.sizes[self._name] += 1

    def close(self) -> None:
        self._close_shard()
        write_shard_sizes(self.out_dir, self.sizes)

    @property
    def spec(self) -> str:
        """Brace spec of every shard written, e.g. "out/{00000..00003}.tar"."""
        names = sorted(self.sizes)
        if len(names) == 1:
            return str(self.out_dir / names[0])
        first, last = names[0][:-4], names[-1][:-4]
        return str(self.out_dir / f"{{{first}..{last}}}.tar")

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
