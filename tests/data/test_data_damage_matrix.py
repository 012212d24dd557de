"""A damaged shard costs no other shard a sample: for each kind of damage, on 1, 4 or the default 8 streams, 0 or 2
DataLoader workers and 1 or 2 processes, an epoch trains exactly the readable good samples (bar fewer than one
global batch, which it names), each once, and counts every defect once by kind."""
from __future__ import annotations

import io
import json
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from helpers.processes import spawn
from helpers.shards import load, write_shards
from vlp.data import DataError
from vlp.recipe.schema import DataConfig

pytestmark = pytest.mark.faults
GLOBAL_BATCH = 8
SHARDS, PER_SHARD = 4, 24
LAYOUTS = [(streams, workers) for streams in (1, 4, None) for workers in (0, 2)]


def _corrupt(tar_path: Path, keys: dict[str, dict[str, bytes]]) -> None:
    """Rewrite the shard with the listed samples' members replaced."""
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            key, ext = member.name.split(".", 1)
            data = keys.get(key, {}).get(ext, data)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def _damage(root: Path, kind: str) -> dict[str, int]:
    """Damage the clean shards in `root` one way; returns the defects by the kind vlp counts them under."""
    shard = root / "00001.tar"
    if kind == "missing":
        shard.unlink()
        return {"missing_shard": 1}
    if kind == "truncated":
        data = shard.read_bytes()
        shard.write_bytes(data[:int(len(data) * 0.45)])
        return {"corrupt_tar": 1}
    if kind == "extra":
        sizes = json.loads((root / "sizes.json").read_text())
        sizes["00001.tar"] -= 4  # the shard holds 4 samples more than sizes.json says
        (root / "sizes.json").write_text(json.dumps(sizes))
        return {}
    if kind == "corrupt_image":
        _corrupt(shard, {"s00030": {"png": b"not a png"}, "s00031": {"png": b"\x89PNG\r\n"}})
        return {"corrupt_image": 2}
    if kind == "bad_caption":
        _corrupt(shard, {"s00040": {"txt": b"   "}, "s00041": {"txt": b"\xff\xfe caption"}})
        return {"empty_caption": 1, "bad_text": 1}
    raise ValueError(kind)


def readable_good_keys(root: Path) -> set[str]:
    """An independent count: every sample whose members a plain tarfile read returns whole, whose PNG PIL opens and
    whose caption is non-empty UTF-8."""
    good = set()
    for path in sorted(root.glob("*.tar")):
        groups: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            try:
                for member in tar:
                    data = tar.extractfile(member).read()
                    key, ext = member.name.split(".", 1)
                    if len(data) < member.size:
                        groups.pop(key, None)
                        break
                    groups.setdefault(key, {})[ext] = data
            except (tarfile.TarError, EOFError):
                pass
        for key, fields in groups.items():
            try:
                Image.open(io.BytesIO(fields["png"])).load()
                caption = fields["txt"].decode("utf-8")
            except Exception:
                continue
            if caption.strip():
                good.add(key)
    return good


@pytest.fixture(scope="module")
def damaged_sets(tmp_path_factory) -> dict[str, tuple[str, dict[str, int], set[str]]]:
    sets = {}
    for kind in ("missing", "truncated", "extra", "corrupt_image", "bad_caption"):
        root = tmp_path_factory.mktemp(kind)
        spec = write_shards(root, SHARDS * PER_SHARD, PER_SHARD)
        sets[kind] = (spec, _damage(root, kind), readable_good_keys(root))
    return sets


def _epochs(spec: str, streams, workers: int, rank: int = 0, world: int = 1) -> list[dict]:
    """Two epochs of this rank: the keys trained, the keys left over, the defects counted."""
    cfg = DataConfig(train=spec, streams=streams, workers=workers, shuffle_buffer=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sizes.json and worker-count warnings have their own tests
        data = load(cfg, batch=GLOBAL_BATCH // world, rank=rank, world=world)
        out = []
        for epoch in range(2):
            batches = list(data.batches(epoch))
            counts: Counter = Counter()
            for batch in batches:
                counts.update(batch.bad_samples)
            out.append({"trained": [k for b in batches for k in b.keys], "left_over": list(data.left_over),
                        "counts": dict(counts), "positions": [b.position for b in batches]})
    return out


def _check_epoch(epoch: dict, good: set[str], defects: dict[str, int]) -> None:
    trained = epoch["trained"]
    assert len(trained) == len(set(trained)), "a sample trained twice"
    assert set(trained).isdisjoint(epoch["left_over"])
    assert set(trained) | set(epoch["left_over"]) == good
    assert len(trained) == len(good) // GLOBAL_BATCH * GLOBAL_BATCH
    assert epoch["counts"] == defects
    assert epoch["positions"] == list(range(len(trained) // GLOBAL_BATCH))


@pytest.mark.parametrize("kind", ["missing", "truncated", "extra", "corrupt_image", "bad_caption"])
@pytest.mark.parametrize("streams,workers", LAYOUTS)
def test_one_process_trains_every_readable_good_sample_once(damaged_sets, kind, streams, workers):
    spec, defects, good = damaged_sets[kind]
    assert len(good) < SHARDS * PER_SHARD or kind == "extra"
    for epoch in _epochs(spec, streams, workers):
        _check_epoch(epoch, good, defects)


def _rank_epochs(rank: int, world: int, sets: dict, layouts: list, folder: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/group", rank=rank, world_size=world)
    try:
        out = {f"{kind}/{streams}/{workers}": _epochs(spec, streams, workers, rank, world)
               for kind, (spec, _, _) in sets.items() for streams, workers in layouts}
        (folder / f"{rank}.json").write_text(json.dumps(out))
    finally:
        dist.destroy_process_group()


TWO_PROCESS_LAYOUTS = [
    pytest.param([(4, 0), (None, 0)], id="in-process-loading"),
    pytest.param([(4, 2), (None, 2)], id="two-workers"),
]


@pytest.mark.distributed
@pytest.mark.parametrize("layouts", TWO_PROCESS_LAYOUTS)
def test_two_processes_train_every_readable_good_sample_once(damaged_sets, layouts, tmp_path):
    """Both ranks' batches together: the same samples once, the defects counted once over the ranks, and the
    same global batches as one process trains."""
    spawn(_rank_epochs, (2, damaged_sets, layouts, tmp_path), 2)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for name, per_rank in ranks[0].items():
        kind, streams, workers = name.split("/")
        spec, defects, good = damaged_sets[kind]
        streams = None if streams == "None" else int(streams)
        alone = _epochs(spec, streams, int(workers))
        for e, (a, b) in enumerate(zip(per_rank, ranks[1][name])):
            assert a["positions"] == b["positions"] and a["left_over"] == b["left_over"], name
            local = GLOBAL_BATCH // 2
            together = [k for p in range(len(a["positions"]))
                        for k in a["trained"][p * local:(p + 1) * local] + b["trained"][p * local:(p + 1) * local]]
            counts = Counter(a["counts"]) + Counter(b["counts"])
            _check_epoch({"trained": together, "left_over": a["left_over"], "counts": dict(counts),
                          "positions": a["positions"]}, good, defects)
            assert together == alone[e]["trained"], name  # the batches one process trains


def test_one_stream_cannot_split_over_two_processes(damaged_sets):
    spec, _, _ = damaged_sets["missing"]
    with pytest.raises(DataError, match="do not split evenly over 2 processes"):
        load(DataConfig(train=spec, streams=1, workers=0), batch=GLOBAL_BATCH // 2, rank=0, world=2)
