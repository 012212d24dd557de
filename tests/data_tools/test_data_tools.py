"""data_tools: building shards from each source, eval sets in CLIP_benchmark layout, check/stats, and read-back."""
from __future__ import annotations

import json
import re
import tarfile

import pytest
import torch

from data_tools import (build_digits, class_folder_items, folder_items, hf_items, split_items, table_items,
                        write_train_shards, write_zeroshot_set)
from data_tools.cli import main as tools_main
from helpers.shards import TRANSFORM, captions_read_back, png
from vlp.data import build_train_data
from vlp.recipe.schema import DataConfig, SourceConfig


def test_folder_with_sidecar_captions(tmp_path):
    for i in range(7):
        (tmp_path / "src" / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / f"sub{i % 2}" / f"im{i}.png").write_bytes(png(i))
        (tmp_path / "src" / f"sub{i % 2}" / f"im{i}.txt").write_text(f"caption {i}\n")
    (tmp_path / "src" / "nocaption.png").write_bytes(png(99))
    train, test = split_items(folder_items(tmp_path / "src"), 2 / 7, seed=0)
    assert (len(train), len(test)) == (5, 2)
    spec = write_train_shards(train, tmp_path / "out", per_shard=2)
    assert json.loads((tmp_path / "out" / "sizes.json").read_text()) == {"00000.tar": 2, "00001.tar": 2,
                                                                          "00002.tar": 1}
    got = captions_read_back(spec, 5)
    assert set(got) | {t.caption for t in test} == {f"caption {i}" for i in range(7)}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_source(tmp_path, suffix):
    import pandas as pd

    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(png(i))
    table = pd.DataFrame({"path": [f"{i}.png" for i in range(4)], "caption": [f"row {i}" for i in range(4)]})
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        table.to_parquet(path)
    else:
        table.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    spec = write_train_shards(table_items(path, "path", "caption"), tmp_path / "out")
    assert captions_read_back(spec, 4) == [f"row {i}" for i in range(4)]


def test_hf_dataset_to_shards_and_as_a_direct_source(tmp_path):
    import datasets
    from PIL import Image

    images = [Image.new("RGB", (9, 9), (i, 0, 0)) for i in range(6)]
    ds = datasets.Dataset.from_dict({"image": images, "text": [f"hf {i}" for i in range(6)]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "text": datasets.Value("string")}))
    spec = write_train_shards(hf_items(ds, "image", "text"), tmp_path / "shards")
    assert captions_read_back(spec, 6) == [f"hf {i}" for i in range(6)]
    ds.save_to_disk(str(tmp_path / "saved"))
    seen = []
    cfg = DataConfig(sources=[SourceConfig(shards=str(tmp_path / "saved"), type="hf")], workers=0)
    data = build_train_data(cfg, TRANSFORM, lambda t: (seen.extend(t), torch.zeros(len(t), 1))[1],
                            local_batch_size=2, seed=0, rank=0, world_size=1)
    assert data.samples_per_epoch == 6 and len(list(data.batches(0))) == 3
    assert sorted(seen) == [f"hf {i}" for i in range(6)]


def test_zeroshot_set_layout(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "src" / c / f"{i}.png").write_bytes(png(i))
    items, classes = class_folder_items(tmp_path / "src")
    out = write_zeroshot_set(items, tmp_path / "zs", classes, ["a {c}."])
    assert (out / "classnames.txt").read_text() == "cat\ndog\n"
    assert (out / "zeroshot_classification_templates.txt").read_text() == "a {c}.\n"
    assert (out / "test" / "nshards.txt").read_text().strip() == "1"
    with tarfile.open(out / "test" / "0.tar") as tar:
        labels = sorted(tar.extractfile(m).read().decode() for m in tar if m.name.endswith(".cls"))
    assert labels == ["0"] * 3 + ["1"] * 3


def test_bundled_digits_and_clip_benchmark_reads_them(tmp_path):
    from clip_benchmark.datasets.builder import build_wds_dataset

    paths = build_digits(tmp_path, source="digits", image_size=16, seed=0, per_shard=400)
    assert paths["num_train"] + paths["num_test"] == 1797 and paths["num_test"] == round(1797 * 0.2)
    sizes = json.loads((tmp_path / "train" / "sizes.json").read_text())
    assert sum(sizes.values()) == paths["num_train"]
    zs = build_wds_dataset("digits", lambda im: im.size, split="test", data_dir=paths["zeroshot"])
    assert zs.classes == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    train_captions = {_normal(c) for c in _shard_captions(tmp_path / "train")}
    prompts = [_normal(t.replace("{c}", c)) for t in zs.templates for c in zs.classes]
    assert len(prompts) == 40 and not train_captions.intersection(prompts)  # "unseen prompts" means every one
    samples = list(zs)
    assert len(samples) == paths["num_test"] and samples[0][0] == (16, 16)
    assert set(label for _, label in samples) == set(range(10))
    rt = list(build_wds_dataset("digits", lambda im: im.size, split="test", data_dir=paths["retrieval"]))
    assert len(rt) == paths["num_test"] and all(len(captions) == 3 for _, captions in rt)
    assert len(captions_read_back(paths["train"], paths["num_train"], extra_caption_keys=["extra.txt"])) > 0


def test_no_eval_prompt_is_a_possible_training_caption():
    from data_tools.bundled import DIGIT_NAMES, EVAL_TEMPLATES, TRAIN_TEMPLATES, _caption

    possible = {_normal(_caption(t, label)) for t in TRAIN_TEMPLATES for label in range(10)}
    for template in EVAL_TEMPLATES:
        assert not possible.intersection(_normal(template.format(c=name)) for name in DIGIT_NAMES), template


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _shard_captions(folder) -> list[str]:
    captions = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            captions += [line for m in tar if m.name.endswith(".txt")
                         for line in tar.extractfile(m).read().decode().splitlines()]
    return captions


def test_check_flags_damage_and_stats_counts(tmp_path, capsys):
    good = write_train_shards(folder_items(_folder(tmp_path / "src", 4)), tmp_path / "good", per_shard=2)
    assert tools_main(["check", good]) == 0
    capsys.readouterr()
    assert tools_main(["stats", good, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 4 and stats["image_sizes"] == {"12x12": 4} and stats["caption_words"] == {"0-4": 4}
    bad = tmp_path / "good" / "00001.tar"
    bad.write_bytes(bad.read_bytes()[:700])
    assert tools_main(["check", good]) == 1
    assert "BAD" in capsys.readouterr().out


def test_check_names_the_keys_of_damaged_samples(tmp_path, capsys):
    """Issue 15 item 9: the first 20 keys per shard, every one with --all, each with its problem."""
    from data_tools.writer import ShardWriter

    with ShardWriter(tmp_path, per_shard=30) as writer:
        for i in range(30):
            bad = i % 10 < 8  # 24 damaged: 8 of every 10
            writer.write(f"s{i:03d}", {"png": b"not a png" if bad else png(i), "txt": f"caption {i}"})
    damaged = [f"s{i:03d}" for i in range(30) if i % 10 < 8]
    assert tools_main(["check", writer.spec]) == 1
    out = capsys.readouterr().out
    assert re.findall(r"^    (s\d+): corrupt_image$", out, re.M) == damaged[:20]
    assert "... and 4 more (--all lists every one)" in out
    assert tools_main(["check", writer.spec, "--all"]) == 1
    assert re.findall(r"^    (s\d+): corrupt_image$", capsys.readouterr().out, re.M) == damaged


@pytest.mark.parametrize("entry", ["data_tools", "vlp"])
def test_stats_on_a_missing_path_fails_in_one_line(tmp_path, capsys, entry):
    from vlp.cli import main as vlp_main

    run = tools_main if entry == "data_tools" else lambda argv: vlp_main(["data", *argv])
    assert run(["stats", str(tmp_path / "nothere.tar")]) == 2
    err = capsys.readouterr().err  # besides the error, only tqdm's progress bar
    assert "Traceback" not in err and [line for line in err.splitlines() if "error" in line] == [
        f"error: cannot read shard {tmp_path / 'nothere.tar'}: no such file, or nothing could be read from it"]


def _folder(root, n):
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"{i}.png").write_bytes(png(i))
        (root / f"{i}.txt").write_text(f"a caption {i}")
    return root
