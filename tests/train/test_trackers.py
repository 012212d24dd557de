"""Trackers: TensorBoard events in RUN_DIR/tensorboard/ and W&B (offline, through accelerate) receive the run's
scalars and its evaluation pictures."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image

from helpers.train_support import COLORS, make_shards, recipe_dict, write_recipe
from vlp.run_dir import RunDir
from vlp.train.metrics import read_metrics


def test_tensorboard_events_hold_the_scalars_and_pictures(evaluated_digits):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = evaluated_digits
    run = RunDir(run_dir)
    assert sorted(p.name for p in run.tensorboard.glob("events.out.tfevents*"))  # directly below, no <project>/
    assert not (run.root / "digits").exists()  # the old place: RUN_DIR/<run name>/
    events = EventAccumulator(str(run.tensorboard), size_guidance={"images": 0, "scalars": 0}).Reload()
    logged = read_metrics(run_dir)
    for key in ("loss", "eval/digits_zeroshot/acc1", "eval/digits_retrieval/text_to_image_R@5"):
        expected = {r["step"]: r[key] for r in logged if key in r}
        got = {e.step: e.value for e in events.Scalars(key)}
        assert expected and got == pytest.approx(expected, rel=1e-6)
    for picture in ("digits_zeroshot/confusion", "digits_retrieval/retrieval", "digits_zeroshot/modality_gap"):
        stored = events.Images(f"pictures/{picture}")
        assert [e.step for e in stored] == [30, 60]
        assert stored[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_lists_the_run_once_with_its_hyperparameters(evaluated_digits):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    from vlp.recipe import load_recipe

    run = RunDir(evaluated_digits[0])
    # once three runs: this one, add_hparams' timestamp-named sub-run and another holding only hparams.yml
    assert [p for p in run.tensorboard.rglob("*") if p.is_dir()] == []
    [events_file] = run.tensorboard.glob("events.out.tfevents*")
    assert events_file.stat().st_size > 0
    events = EventAccumulator(str(run.tensorboard)).Reload()
    start = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["optim.lr"].number_value == load_recipe(run.recipe).optim.lr
    assert events.Scalars("loss")  # the same event file holds the curves


def test_wandb_offline_run_holds_the_scalars_and_pictures(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # in the dev extra
    from helpers.eval_support import write_wds_set

    from vlp.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb").mkdir()
    names = list(COLORS)
    rng = np.random.default_rng(5)
    samples = [{"png": Image.fromarray(np.clip(np.array(COLORS[c]) + rng.normal(0, 12, (16, 16, 3)), 0, 255)
                                       .astype(np.uint8)), "cls": i} for _ in range(2) for i, c in enumerate(names)]
    eval_dir = write_wds_set(tmp_path / "colors", samples, classnames=names, templates=["a {c} square"])
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=32), tmp_path / "runs",
                         duration="4 steps")
    recipe["eval"] = {"datasets": [{"name": "colors", "task": "zeroshot", "path": str(eval_dir)}], "batch_size": 16,
                      "workers": 0}
    recipe["logging"] = {"trackers": ["wandb"], "wandb_project": "vlp-test", "progress": False}
    train(write_recipe(tmp_path / "run.yaml", recipe))

    [offline] = list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    history = [item for record in read_wandb_records(next(offline.glob("*.wandb")))
               if record.WhichOneof("record_type") == "history" for item in [_history(record)]]
    logged = read_metrics(tmp_path / "runs" / "run")
    for key in ("loss", "lr", "eval/colors/acc1"):
        expected = {r["step"]: r[key] for r in logged if key in r}
        got = {row["_step"]: row[key] for row in history if key in row}
        assert expected and got == pytest.approx(expected, rel=1e-6)
    pictures = {row["_step"]: row for row in history if "pictures/colors/confusion/_type" in row}
    assert list(pictures) == [4] and pictures[4]["pictures/colors/confusion/_type"] == "images/separated"
    for name in ("confusion", "modality_gap", "similarity"):  # each picture's file is in the run's files
        [file] = pictures[4][f"pictures/colors/{name}/filenames"]
        assert (offline / "files" / file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _history(record) -> dict:
    """A history row; nested values (an image's fields) come flattened as KEY/FIELD."""
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}


def read_wandb_records(path):
    """The protobuf records of a W&B run file: a 7-byte file header, then LevelDB-log framing (32 KiB blocks; each
    chunk is crc32 (4), length (2), type (1: full, 2: first, 3: middle, 4: last) and data; a block tail shorter
    than a chunk header is padding)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a W&B run file (format changed?)"
    position, pending, records = 7, b"", []
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 0 and length == 0:  # zero fill at the end of the file
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records
