"""A setting accepted but not applied is refused: each key set where nothing reads it fails the recipe's load with
one line naming it, and the same key where it applies loads (so the rule is not simply "refuse the key")."""
from __future__ import annotations

import pytest

from vlp.recipe import RecipeError, load_recipe

HF = "data.sources=[{type: hf, shards: some/set}]"
RESNET = ("model.config={embed_dim: 32, vision_cfg: {image_size: 32, layers: [1, 1, 1, 1], width: 32}, "
          "text_cfg: {context_length: 16, vocab_size: 49408, width: 32, heads: 4, layers: 1}}")


def eval_set(**keys) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in {"name": "a", "task": "zeroshot", "path": "p", **keys}.items())
    return f"eval.datasets=[{{{fields}}}]"


# (overrides, "key: message" of the refusal), then the overrides in which the same key applies
UNREAD = [
    (["data.label_key=cls"], "data.label_key: gives the batch 'labels', which objective 'softmax' does not read",
     ["data.label_key=cls", "objective.name=supcon"]),
    (["data.negative_key=neg.txt"], "data.negative_key: gives the batch 'negative_text', which objective 'softmax'",
     ["data.negative_key=neg.txt", "objective.name=hard_negative"]),
    (["data.train=", HF, "data.caption_key=json"], "data.caption_key: applies to webdataset sources",
     ["data.train=", "data.sources=[{shards: a.tar}, {type: hf, shards: s}]", "data.caption_key=json"]),
    (["data.train=", "data.sources=[{shards: a.tar, split: validation}]"],
     "data.sources[0].split: applies to type hf", ["data.train=", HF[:-2] + ", split: validation}]"]),
    (["model.init_checkpoint=runs/x", "model.pretrained=w.safetensors"],
     "model.pretrained: model.init_checkpoint's weights replace these", ["model.pretrained=w.safetensors"]),
    ([RESNET, "model.patch_dropout=0.5"], "model.patch_dropout: drops ViT patches", ["model.patch_dropout=0.5"]),
    ([RESNET, "model.type=coca", "model.patch_dropout=0.5"], "model.patch_dropout: drops ViT patches",
     ["model.type=coca", "model.patch_dropout=0.5"]),
    ([eval_set(task="retrieval", classnames="imagenet")], "eval.datasets[0].classnames: task 'retrieval' does not",
     [eval_set(classnames="imagenet")]),
    ([eval_set(train_split="train")], "eval.datasets[0].train_split: task 'zeroshot' does not read it",
     [eval_set(task="linear_probe", train_split="train")]),
    ([eval_set(task="linear_probe", train_split="train", templates="imagenet")],
     "eval.datasets[0].templates: task 'linear_probe' does not read it", [eval_set(templates="imagenet")]),
    ([eval_set(label_column="y")], "eval.datasets[0].label_column: applies to type hf",
     [eval_set(type="hf", label_column="y")]),
    (["objective.regularizer_features=local"], "objective.regularizer_features: 'softmax' has no regularizers",
     ["objective.regularizer_features=local", "objective.name=clip_cua"]),
    (["export.revision=dev"], "export.revision: applies to the Hub push", ["export.revision=dev",
                                                                            "export.push_to_hub=org/name"]),
    (["logging.wandb_project=p"], "logging.wandb_project: names the W&B project",
     ["logging.wandb_project=p", "logging.trackers=[wandb]"]),
]


def load(overrides):
    return load_recipe("recipes/tiny-digits.yaml", overrides, for_training=True, files=False)


@pytest.mark.parametrize("overrides,refusal,applies", UNREAD, ids=[case[1].split(":")[0] for case in UNREAD])
def test_a_key_nothing_reads_is_refused_in_one_line_naming_it(overrides, refusal, applies):
    with pytest.raises(RecipeError) as caught:
        load(overrides)
    message = str(caught.value)
    assert refusal in message and "\n" not in message
    assert f"--set {overrides[-1]}" in message and "***" not in message  # a field's name, not a secret: shown
    load(applies)


def test_eval_every_without_eval_sets_warns_that_nothing_is_evaluated():
    from vlp.train.setup import resolve_steps

    recipe = load(["eval.datasets=[]"])
    with pytest.warns(UserWarning, match="eval.every: there are no eval.datasets"):
        resolve_steps(recipe, 4000, "tiny-digits.yaml")
