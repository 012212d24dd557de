"""Eval set readers (CLIP_benchmark wds, image folder, HF), prompt overrides, errors, and the `vlp eval` CLI."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
import yaml
from helpers.eval_support import TINY_CFG, random_images, tiny_model, write_export, write_wds_set

from vlp.evaluate import evaluate, open_eval_set
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig

CLASSES = ["ant", "big cat", "cow"]  # sorted folder names "ant", "big_cat", "cow" keep this order
LABELS = [0, 2, 1, 1, 0, 2, 2, 1, 0, 1, 2]
CAPTIONS = [["a red ant", "an ant"], ["one big cat"], ["cow", "a cow", "the cow"], ["ant"], ["two cats", "cat"]]
TASK_KEYS = {"zeroshot": ["acc1", "acc5", "mean_per_class_recall"],
             "retrieval": ["image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_mean_rank"]}
ORDER_FREE_GEOMETRY = ["geometry_modality_gap", "geometry_alignment", "geometry_uniformity_image",
                       "geometry_uniformity_cross", "geometry_effective_rank_text", "geometry_matched_cosine"]


@pytest.fixture(scope="module")
def model_bundle():
    torch.set_num_threads(1)
    return tiny_model(seed=2)


def run(model_bundle, **dataset):
    model, preprocess, tokenizer = model_bundle
    cfg = EvalConfig(datasets=[EvalDatasetConfig(name="d", **dataset)], batch_size=4)
    return evaluate(model, preprocess, tokenizer, cfg, progress=False)[0]["metrics"]


def write_imagefolder(root, images, labels):
    for i, (image, y) in enumerate(zip(images, labels)):
        folder = root / "test" / CLASSES[y].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:03d}.png")
    return root


def write_hf(root, images, column, values, feature):
    import datasets

    features = datasets.Features({"image": datasets.Image(), column: feature})
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"image": images, column: values}, features=features)}
                         ).save_to_disk(str(root))
    return root


def assert_close(a: dict, b: dict, keys):
    for key in keys:
        assert a[key] == pytest.approx(b[key], abs=1e-6, nan_ok=True), key


def test_classification_readers_agree(tmp_path, model_bundle):
    import datasets

    images = random_images(len(LABELS), 4)
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {c}.\nart of a {c}.\n")
    wds_root = write_wds_set(tmp_path / "wds", [{"png": im, "cls": y} for im, y in zip(images, LABELS)],
                             classnames=CLASSES, nshards_file=False, shard_size=4)
    folder = write_imagefolder(tmp_path / "folder", images, LABELS)
    hf = write_hf(tmp_path / "hf", images, "label", LABELS, datasets.ClassLabel(names=CLASSES))
    folder_cfg = EvalDatasetConfig(name="f", task="zeroshot", path=str(folder), type="imagefolder")
    assert open_eval_set(folder_cfg, "labels").classnames == CLASSES
    results = [run(model_bundle, task="zeroshot", path=str(p), type=t, templates=str(templates))
               for p, t in ((wds_root, "wds"), (folder, "imagefolder"), (hf, "hf"))]
    for other in results[1:]:
        assert_close(results[0], other, TASK_KEYS["zeroshot"] + ORDER_FREE_GEOMETRY)


def test_retrieval_readers_agree(tmp_path, model_bundle):
    import datasets

    images = random_images(len(CAPTIONS), 5)
    wds_root = write_wds_set(tmp_path / "wds", [{"jpg": im, "txt": "\n".join(c)} for im, c in zip(images, CAPTIONS)],
                             dataset_type="retrieval")
    # The HF set holds the JPEG-decoded pixels the wds reader sees.
    wds_cfg = EvalDatasetConfig(name="w", task="retrieval", path=str(wds_root))
    decoded = [im for im, _ in open_eval_set(wds_cfg, "captions").samples()]
    hf = write_hf(tmp_path / "hf", decoded, "text", CAPTIONS, datasets.List(datasets.Value("string")))
    ours = run(model_bundle, task="retrieval", path=str(wds_root))
    assert_close(ours, run(model_bundle, task="retrieval", path=str(hf), type="hf"),
                 TASK_KEYS["retrieval"] + ORDER_FREE_GEOMETRY)


def test_prompt_overrides_and_max_samples(tmp_path):
    root = write_wds_set(tmp_path, [{"png": im, "cls": 0} for im in random_images(5)], classnames=["x"],
                         templates=["{c}"])
    (tmp_path / "names.json").write_text(json.dumps(["renamed"]))
    cfg = EvalDatasetConfig(name="d", task="zeroshot", path=str(root), classnames=str(tmp_path / "names.json"),
                            templates="imagenet", max_samples=3)
    eval_set = open_eval_set(cfg, "labels")
    assert eval_set.classnames == ["renamed"] and len(eval_set.templates) == 80
    assert len(list(eval_set.samples())) == 3


def test_empty_and_mismatched_sets_give_clear_errors(tmp_path, model_bundle):
    empty = write_wds_set(tmp_path / "empty", [], classnames=["x"], templates=["{c}"])
    with pytest.raises(ValueError, match="has no samples"):
        run(model_bundle, task="zeroshot", path=str(empty))
    with pytest.raises(ValueError, match="holds a classification set"):
        run(model_bundle, task="retrieval", path=str(empty))
    no_names = write_wds_set(tmp_path / "nonames", [{"png": random_images(1)[0], "cls": 0}])
    with pytest.raises(ValueError, match="no class names"):
        run(model_bundle, task="zeroshot", path=str(no_names))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(model_bundle, task="zeroshot", path=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="split directory"):
        run(model_bundle, task="zeroshot", path=str(empty), split="validation")


@pytest.fixture()
def export_and_sets(tmp_path, model_bundle):
    export = write_export(tmp_path / "export", model_bundle[0])
    labels = np.arange(12) % 6
    zs = write_wds_set(tmp_path / "zs", [{"png": im, "cls": int(y)} for im, y in zip(random_images(12, 6), labels)],
                       classnames=["ant", "bee", "cat", "dog", "eel", "fox"], templates=["a {c}.", "the {c}"])
    rt = write_wds_set(tmp_path / "rt", [{"png": im, "txt": "\n".join(c)} for im, c in
                                         zip(random_images(len(CAPTIONS), 7), CAPTIONS)], dataset_type="retrieval")
    return export, zs, rt


def evaluate_export(export, cfg: EvalConfig) -> list[dict]:
    """The evaluator API called directly on the exported folder: what `vlp eval` must reproduce."""
    from vlp.models import load_pretrained

    model, preprocess, tokenizer, _ = load_pretrained(export)
    return [record["metrics"] for record in evaluate(model, preprocess, tokenizer, cfg, progress=False)]


def test_cli_evaluates_an_exported_folder(tmp_path, export_and_sets, capsys):
    from vlp.cli import main

    export, zs, _ = export_and_sets
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(export), "--task", "zeroshot", "--data", str(zs), "--out", str(out),
                 "--no-progress", "--device", "cpu", "--batch-size", "5"]) == 0
    [record] = json.loads(out.read_text())
    assert record["dataset"] == "zs" and record["task"] == "zeroshot_classification" and record["model"] == "export"
    assert "acc1" in capsys.readouterr().out
    [direct] = evaluate_export(export, EvalConfig(datasets=[EvalDatasetConfig(name="zs", task="zeroshot",
                                                                              path=str(zs))]))
    assert_close(record["metrics"], direct, TASK_KEYS["zeroshot"] + ORDER_FREE_GEOMETRY + ["geometry_separability"])


def test_cli_reads_the_recipe_eval_section(tmp_path, export_and_sets, capsys):
    from vlp.cli import main

    export, zs, rt = export_and_sets
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"config": TINY_CFG}, "eval": {"recall_k": [1, 2], "datasets": [
        {"name": "zs", "task": "zeroshot", "path": str(zs)}, {"name": "rt", "task": "retrieval", "path": str(rt)}]}}))
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(export), "--recipe", str(recipe), "--set", "eval.batch_size=3",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    records = json.loads(out.read_text())
    assert [r["dataset"] for r in records] == ["zs", "rt"]
    assert "image_to_text_R@2" in records[1]["metrics"] and "image_to_text_R@5" not in records[1]["metrics"]
    for metrics in (r["metrics"] for r in records):  # NaN reaches the JSON file as null
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values()), metrics
        assert all(0 <= v <= 1 for k, v in metrics.items() if k.startswith("acc") or "_R@" in k), metrics
    expected = evaluate_export(export, EvalConfig(recall_k=[1, 2], batch_size=3, datasets=[
        EvalDatasetConfig(name="zs", task="zeroshot", path=str(zs)),
        EvalDatasetConfig(name="rt", task="retrieval", path=str(rt))]))
    for record, direct in zip(records, expected):
        assert record["metrics"].keys() == direct.keys()
        assert_close(record["metrics"], direct, direct)
    table = capsys.readouterr().out
    assert "text_to_image_R@1" in table and "geometry_modality_gap" in table


def test_cli_reports_bad_input_without_traceback(tmp_path, export_and_sets, capsys):
    from vlp.cli import main

    export = str(export_and_sets[0])
    assert main(["eval", "--model", export, "--no-progress", "--device", "cpu"]) == 2
    assert "no eval datasets" in capsys.readouterr().err
    assert main(["eval", "--model", export, "--data", str(tmp_path)]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--task", "zeroshot", "--data", "x"]) == 2
    empty = write_wds_set(tmp_path / "empty", [], classnames=["x"], templates=["{c}"])
    assert main(["eval", "--model", export, "--task", "zeroshot", "--data", str(empty), "--device", "cpu"]) == 1
    assert "has no samples" in capsys.readouterr().err


@pytest.mark.parametrize("flags,refusal", [
    (["--set", "eval.batch_size=7"], "error: --set overrides fields of --recipe: pass --recipe"),
    (["--max-samples", "10"], "error: --max-samples describes the set of --data: pass --data and --task"),
    (["--classnames", "imagenet"], "error: --classnames describes the set of --data"),
    (["--type", "hf"], "error: --type describes the set of --data"),
    (["--split", "val"], "error: --split describes the set of --data")])
def test_cli_refuses_a_flag_it_would_not_apply(export_and_sets, capsys, flags, refusal):
    from vlp.cli import main

    assert main(["eval", "--model", str(export_and_sets[0]), *flags, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(refusal) and err.count("\n") == 1


def test_run_recipe_supplies_default_datasets():
    from vlp.evaluate.cli import _eval_config
    from vlp.recipe.schema import ModelConfig, Recipe

    run_recipe = Recipe(model=ModelConfig(config=TINY_CFG), eval=EvalConfig(
        datasets=[EvalDatasetConfig(name="a", task="zeroshot", path="p")], batch_size=7))
    args = argparse.Namespace(recipe=None, overrides=[], data=None, task=None, batch_size=None, recall_k=[3])
    cfg = _eval_config(args, run_recipe)
    assert [d.name for d in cfg.datasets] == ["a"] and cfg.batch_size == 7 and cfg.recall_k == [3]
