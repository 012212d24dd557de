"""Model card (README.md) with Hub metadata and model-index entries from the run's eval results."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

from huggingface_hub import EvalResult, ModelCardData

from vlp.data.sources import hub_datasets
from vlp.evaluate.tasks import hub_task_type
from vlp.run_dir import RunDir


def read_eval_results(run_dir: Optional[str]) -> list[dict]:
    path = RunDir(run_dir).eval_results if run_dir else None
    if path is None or not path.is_file():
        return []
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of eval records")
    return records


def _eval_entries(records: list[dict]) -> list[EvalResult]:
    entries = []
    for record in records:
        for metric, value in record.get("metrics", {}).items():
            if isinstance(value, (int, float)):
                entries.append(EvalResult(task_type=hub_task_type(record["task"]),
                                          dataset_type=record["dataset"], dataset_name=record["dataset"],
                                          metric_type=metric, metric_name=metric, metric_value=float(value)))
    return entries


def _results_table(records: list[dict]) -> str:
    if not records:
        return "No evaluation results were recorded for this run.\n"
    rows = ["| dataset | task | metric | value |", "|---|---|---|---|"]
    for record in records:
        for metric, value in record.get("metrics", {}).items():
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            rows.append(f"| {record['dataset']} | {record['task']} | {metric} | {shown} |")
    return "\n".join(rows) + "\n"


def _datasets(recipe) -> list[str]:
    """Hub dataset ids the model was trained on (HF sources); webdataset shard paths are described in the body."""
    return hub_datasets(recipe.data) if recipe else []


CARD_IMAGES = "images"  # the export's folder of pictures shown in the card
KEY_PICTURES = ("modality_gap", "confusion", "retrieval")  # of vlp.evaluate.pictures.PICTURES


def copy_pictures(info: dict, folder: Path) -> list[str]:
    """Copy the key pictures of the evaluation of the exported weights (a run's raw weights at an evaluated step)
    into folder/images/; their paths relative to `folder`. In-training evaluation sees the raw weights, so an EMA
    export shows none."""
    from vlp.evaluate.pictures import PICTURES

    if not info.get("run_dir") or info.get("weights") != "raw" or info.get("step") is None:
        return []
    evaluated = RunDir(info["run_dir"]).pictures_at(info["step"])
    if not evaluated.is_dir():
        return []
    copied = []
    for source in sorted(p for p in evaluated.iterdir() if p.is_dir()):
        for key in KEY_PICTURES:
            picture = source / PICTURES[key]
            if picture.is_file():
                target = folder / CARD_IMAGES / f"{source.name}_{picture.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(picture, target)
                copied.append(target.relative_to(folder).as_posix())
    return copied


def _pictures_section(pictures: list[str]) -> list[str]:
    if not pictures:
        return []
    shown = [f"![{Path(p).stem.replace('_', ' ')}]({p})" for p in pictures]
    return ["## Pictures\n", "From the evaluation of these weights: the modality gap (2-D PCA of paired image and text "
            "embeddings, both centroids and the gap between them), the zero-shot confusion matrix and retrieval "
            "examples.\n", "\n".join(shown) + "\n"]


def model_card(info: dict, license: str, repo_id: Optional[str], formats: list[str], kind: str,
               pictures: Sequence[str] = ()) -> str:
    """`pictures`: image paths relative to the card (`copy_pictures`), shown in a Pictures section."""
    from vlp.recipe import dump_recipe, redact

    recipe = redact(info["recipe"]) if info.get("recipe") else None  # the card is published: no shard credentials
    records = read_eval_results(info.get("run_dir"))
    name = repo_id or info["name"]
    tags = ["clip", "open_clip", "vlp", "vision-language"] + (["siglip"] if kind == "siglip" else [])
    data = ModelCardData(library_name="open_clip", pipeline_tag="zero-shot-image-classification", tags=tags,
                         license=license, datasets=_datasets(recipe) or None, model_name=name,
                         eval_results=_eval_entries(records) or None, **_weights_metadata(info))
    training = [f"- weights: {_weights(info)}",
                f"- objective: `{recipe.objective.name}`" if recipe else "- objective: unknown",
                f"- steps: {info.get('step') if info.get('step') is not None else 'unknown'}",
                f"- samples seen: {info.get('samples_seen') if info.get('samples_seen') is not None else 'unknown'}"]
    if recipe:
        training.append(f"- data: `{recipe.data.train or ', '.join(s.shards for s in recipe.data.sources) or '-'}`")
    sections = [f"# {name}\n", "A CLIP-style dual encoder trained with vlp.\n", "## Training\n", "\n".join(training),
                "\n## Evaluation\n", _results_table(records), *_pictures_section(list(pictures)),
                "## Usage\n", _usage(name, formats, kind)]
    if recipe:
        sections += ["## Recipe\n", f"```yaml\n{dump_recipe(recipe)}```\n"]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(sections)


def _weights(info: dict) -> str:
    if info.get("weights") == "ema":
        return f"EMA (decay {info['ema_decay']}), the exponential moving average of the trained weights"
    if info.get("weights") == "raw":
        return "raw (the trained weights, not an EMA)"
    return "those of the exported folder this was re-exported from (see its model card)"


def _weights_metadata(info: dict) -> dict:
    """Card metadata saying which weights were exported; none for a re-export, which cannot tell."""
    if info.get("weights") is None:
        return {}
    ema = {"vlp_ema_decay": info["ema_decay"]} if info["weights"] == "ema" else {}
    return {"vlp_weights": info["weights"], **ema}


def _usage(name: str, formats: list[str], kind: str) -> str:
    text = ("open_clip:\n\n```python\nimport open_clip\n"
            f"model, _, preprocess = open_clip.create_model_and_transforms('hf-hub:{name}')\n"
            f"tokenizer = open_clip.get_tokenizer('hf-hub:{name}')\n```\n")
    if "transformers" in formats:
        cls = "SiglipModel" if kind == "siglip" else "CLIPModel"
        text += ("\ntransformers:\n\n```python\n"
                 f"from transformers import AutoProcessor, {cls}\n"
                 f"model = {cls}.from_pretrained('{name}')\nprocessor = AutoProcessor.from_pretrained('{name}')\n```\n")
    if "onnx" in formats:
        text += ("\nONNX: `onnx/image_encoder.onnx` and `onnx/text_encoder.onnx` (unnormalised embeddings), with the "
                 "image preprocessing, tokenizer and logit scale a runtime needs in `onnx/preprocess.json`.\n")
    return text
