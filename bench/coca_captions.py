"""Whether the demo's CoCa (recipes/tiny-digits-coca.yaml) learns to caption: `vlp demo tiny-digits-coca.yaml`
trained in bench/work/coca (or a finished run given with --run, from the folder it was started in), then its
export captions every held-out zero-shot digit. Prints the zero-shot top-1 and, per decoding method, the share of
captions that name the image's digit (as a word or a numeral), that name only it, and how many distinct captions
there are.
Usage: python bench/coca_captions.py [--run RUN_DIR] [--methods greedy beam]
"""
from __future__ import annotations

import argparse
import json
import tarfile
import time
from collections import Counter
from pathlib import Path

import yaml

from data_tools.bundled import DIGIT_NAMES

WORK = Path(__file__).resolve().parent / "work" / "coca"


def held_out(zeroshot: Path, out: Path) -> tuple[list[Path], list[int]]:
    """The zero-shot set's images written out as files (what `vlp generate` takes) and their labels."""
    out.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for shard in sorted((zeroshot / "test").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name in sorted(n for n in members if n.endswith(".png")):
                path = out / name
                path.write_bytes(tar.extractfile(members[name]).read())
                paths.append(path)
                labels.append(int(tar.extractfile(members[name[:-len(".png")] + ".cls"]).read()))
    return paths, labels


def named_digits(caption: str) -> set[int]:
    words = caption.replace(",", " ").split()
    return {d for d in range(10) if DIGIT_NAMES[d] in words or str(d) in words}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run of tiny-digits-coca.yaml (default: train one)")
    parser.add_argument("--methods", nargs="+", default=["greedy", "beam"])
    args = parser.parse_args()
    from vlp.demo import run_demo
    from vlp.generate import generate

    if args.run is None:
        report = run_demo("tiny-digits-coca.yaml", data_dir=WORK / "data",
                          overrides=[f"train.output_dir={WORK / 'runs'}"])
        args.run = Path(report["run_dir"])
    final = [r for r in json.loads((args.run / "eval_results.json").read_text()) if r.get("final")]
    print(f"run {args.run}: zero-shot top-1 " + ", ".join(f"{r['dataset']} {r['metrics']['acc1']:.1%}"
                                                        for r in final if "acc1" in r["metrics"]))
    recipe = yaml.safe_load((args.run / "recipe.yaml").read_text())
    zeroshot = next(d["path"] for d in recipe["eval"]["datasets"] if d["task"] == "zeroshot")
    paths, labels = held_out(Path(zeroshot), WORK / "held_out")  # a relative path: from where the run was started
    print(f"\n| decoding | images | names the digit | names only the digit | distinct captions | s |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        start = time.perf_counter()
        captions = generate(args.run / "export", paths, method)
        seconds = time.perf_counter() - start
        named = [named_digits(c) for c in captions]
        right = sum(label in n for n, label in zip(named, labels)) / len(labels)
        only = sum(n == {label} for n, label in zip(named, labels)) / len(labels)
        print(f"| {method} | {len(labels)} | {right:.1%} | {only:.1%} | {len(set(captions))} | {seconds:.1f} |")
        print("  most common: " + "; ".join(f"{c!r} ×{k}" for c, k in Counter(captions).most_common(4)))


if __name__ == "__main__":
    main()
