"""Data as users have it, in one command: Parquet with HF image structs or raw bytes, JSONL tables, Parquet/CSV
files and folders through the HF loader, shard globs, `check --write-sizes` and help for every flag."""
from __future__ import annotations

import argparse
import json
import os

import pandas as pd
import pytest

from data_tools.cli import add_commands
from data_tools.inputs import hf_items, table_items
from helpers.shards import captions_read_back, png, write_shards
from vlp.cli import main
from vlp.data.hf import open_hf_dataset
from vlp.data.wds import expand_shards


def hf_image_parquet(path, n: int = 6):
    """What `Dataset.to_parquet` writes: an image column of {bytes, path} structs."""
    import datasets

    ds = datasets.Dataset.from_dict({"image": [{"bytes": png(i), "path": None} for i in range(n)],
                                     "caption": [f"row {i}" for i in range(n)]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "caption": datasets.Value("string")}))
    ds.to_parquet(str(path))
    return ds


def test_parquet_image_structs_and_raw_bytes_shard_with_the_default_caption_column(tmp_path):
    hf_image_parquet(tmp_path / "structs.parquet")
    pd.DataFrame({"image": [png(i) for i in range(5)], "caption": [f"row {i}" for i in range(5)]}).to_parquet(
        tmp_path / "bytes.parquet")
    for name, n in (("structs", 6), ("bytes", 5)):
        items = table_items(tmp_path / f"{name}.parquet", "image")  # caption column found: `caption`
        spec_ = str(tmp_path / name / "train" / "{00000..00000}.tar")
        assert main(["data", "build", "table", str(tmp_path / f"{name}.parquet"), str(tmp_path / name)]) == 0
        assert len(items) == n and captions_read_back(spec_, n) == [f"row {i}" for i in range(n)]


def test_jsonl_table_of_paths(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"image": f"{i}.png", "text": f"line {i}"}) + "\n"
                                              for i in range(3)))
    assert main(["data", "build", "table", str(tmp_path / "t.jsonl"), str(tmp_path / "out")]) == 0
    assert captions_read_back(str(tmp_path / "out" / "train" / "00000.tar"), 3) == [f"line {i}" for i in range(3)]


def test_an_image_cell_of_no_known_kind_is_one_short_line_naming_the_row(tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text('{"image": "a.png", "caption": "a"}\n{"image": 17, "caption": "b"}\n')
    assert main(["data", "build", "table", str(tmp_path / "t.jsonl"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 't.jsonl'} row 1: image cell is int, not a path, URL, bytes or {{bytes, path}}"


def test_no_caption_column_names_the_columns(tmp_path, capsys):
    pd.DataFrame({"image": ["a.png"], "words": ["x"]}).to_csv(tmp_path / "t.csv", index=False)
    assert main(["data", "build", "table", str(tmp_path / "t.csv"), str(tmp_path / "out")]) == 2
    assert "no caption column (caption, text, txt); name one with --caption-column (columns: ['image', 'words'])" \
        in capsys.readouterr().err


def test_the_hf_loader_routes_files_and_folders_by_what_they_hold(tmp_path, capsys):
    hf_image_parquet(tmp_path / "one.parquet")
    (tmp_path / "hub" / "data").mkdir(parents=True)
    hf_image_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet", 4)
    hf_image_parquet(tmp_path / "hub" / "data" / "test-00000-of-00001.parquet", 2)
    pd.DataFrame({"image": [str(tmp_path / "im.png")], "caption": ["c"]}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "im.png").write_bytes(png(1))
    assert len(open_hf_dataset(str(tmp_path / "one.parquet"))) == 6
    assert [len(open_hf_dataset(str(tmp_path / "hub"), split)) for split in ("train", "test")] == [4, 2]
    assert [item.caption for item in hf_items(open_hf_dataset(str(tmp_path / "t.csv")), "image")] == ["c"]
    assert main(["data", "build", "hf", str(tmp_path / "hub"), str(tmp_path / "out")]) == 0
    assert captions_read_back(str(tmp_path / "out" / "train" / "00000.tar"), 4) == [f"row {i}" for i in range(4)]
    with pytest.raises(ValueError, match="Unknown split \"test\""):
        open_hf_dataset(str(tmp_path / "one.parquet"), "test")
    with pytest.raises(ValueError, match="no such file or folder"):
        open_hf_dataset(str(tmp_path / "missing.parquet"))
    with pytest.raises(ValueError, match="the Hub is offline"):  # the tests run with HF_HUB_OFFLINE=1
        open_hf_dataset("someone/some-dataset")


def test_a_shard_glob_expands_sorted_in_training_check_and_stats(tmp_path, capsys):
    write_shards(tmp_path / "shards", 6, per_shard=2)
    glob_spec = str(tmp_path / "shards" / "*.tar")
    assert expand_shards(glob_spec) == sorted(str(p) for p in (tmp_path / "shards").glob("*.tar"))
    assert captions_read_back(glob_spec, 6) == sorted(f"sample {i}" for i in range(6))
    assert main(["data", "check", glob_spec]) == 0 and main(["data", "stats", glob_spec]) == 0
    assert "3 shards, 6 samples" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "none" / "*.tar")]) == 1  # named as the missing shard it is
    assert f"BAD {tmp_path / 'none' / '*.tar'}: 0 samples; missing_shard=1" in capsys.readouterr().out


def test_check_write_sizes_records_the_samples_of_shards_written_without_sizes(tmp_path, capsys):
    write_shards(tmp_path / "shards", 5, per_shard=2)
    written = json.loads((tmp_path / "shards" / "sizes.json").read_text())
    os.remove(tmp_path / "shards" / "sizes.json")
    assert main(["data", "check", str(tmp_path / "shards" / "*.tar"), "--write-sizes"]) == 0
    assert f"wrote {tmp_path / 'shards' / 'sizes.json'} (3 shards)" in capsys.readouterr().out
    assert json.loads((tmp_path / "shards" / "sizes.json").read_text()) == written


def every_parser(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from every_parser(sub)


def test_every_data_command_flag_has_help():
    root = argparse.ArgumentParser()
    add_commands(root.add_subparsers())
    missing = [(parser.prog, action.dest) for parser in every_parser(root) for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert missing == []
