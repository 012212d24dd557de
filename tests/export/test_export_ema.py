"""`--weights ema|raw` for `vlp eval` and `vlp export` (and `weights=` for load_pretrained / export): the EMA a run kept
with `train.ema_decay` is what gets evaluated and exported, the model card says which, the manifest covers it, and a
run without an EMA is refused in one line."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from helpers.eval_support import write_wds_set
from helpers.train_support import COLORS, make_shards, recipe_dict, write_recipe

from vlp.cli import main
from vlp.evaluate import evaluate
from vlp.models import CheckpointError, load_pretrained
from vlp.recipe.schema import EvalConfig, EvalDatasetConfig
from vlp.run_dir import RunDir

torch.set_num_threads(1)
DECAY = 0.9
EVAL_ARGS = ["--task", "retrieval", "--no-progress", "--device", "cpu", "--batch-size", "8"]


def _train(root, **train):
    from vlp.train import train as run_training

    recipe = recipe_dict(make_shards(root / "shards", shards=1, per_shard=16), root, duration="6 steps",
                         checkpoint_every="3 steps", **train)
    run_training(write_recipe(root / "run.yaml", recipe))
    return root / "run"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(run with an EMA, run without one, retrieval eval set of coloured squares)."""
    root = tmp_path_factory.mktemp("ema")
    rng = np.random.default_rng(0)
    samples = [{"jpg": Image.fromarray(np.clip(np.array(rgb) + rng.normal(0, 12, (16, 16, 3)), 0, 255)
                                       .astype(np.uint8)), "txt": f"a {name} square"}
               for name, rgb in COLORS.items()]
    eval_set = write_wds_set(root / "colours", samples, dataset_type="retrieval")
    return _train(root / "with", ema_decay=DECAY), _train(root / "without"), eval_set


def _last_checkpoint(run):
    return RunDir(run).list_checkpoints()[0]


def _ema_model(run):
    """The raw model with the checkpoint's EMA tensors copied in by hand: what `--weights ema` must evaluate."""
    model, preprocess, tokenizer, _ = load_pretrained(run)
    ema = load_file(str(_last_checkpoint(run) / "ema.safetensors"))
    own = model.state_dict()
    assert set(ema) == {k for k, v in own.items() if v.is_floating_point()}
    with torch.no_grad():
        for name, tensor in ema.items():
            own[name].copy_(tensor)
    return model, preprocess, tokenizer


def _cli_metrics(run, eval_set, tmp_path, weights):
    out = tmp_path / f"{weights}.json"
    assert main(["eval", "--model", str(run), "--data", str(eval_set), "--weights", weights, "--out", str(out),
                 *EVAL_ARGS]) == 0
    [record] = json.loads(out.read_text())
    return record


def test_eval_weights_ema_evaluates_the_ema(runs, tmp_path):
    run, _, eval_set = runs
    raw, ema = (_cli_metrics(run, eval_set, tmp_path, w) for w in ("raw", "ema"))
    assert ema["pretrained"].endswith("ema.safetensors") and raw["pretrained"].endswith("model.safetensors")
    assert ema["metrics"] != raw["metrics"]
    cfg = EvalConfig(datasets=[EvalDatasetConfig(name=eval_set.name, task="retrieval", path=str(eval_set))],
                     batch_size=8)
    [direct] = evaluate(*_ema_model(run), cfg, progress=False)
    for key, value in direct["metrics"].items():
        assert ema["metrics"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


def test_export_weights_ema_writes_the_ema_and_says_so(runs, tmp_path):
    run, _, _ = runs
    assert main(["export", str(run), str(tmp_path / "ema"), "--weights", "ema", "--format", "open_clip"]) == 0
    assert main(["export", str(run), str(tmp_path / "raw"), "--format", "open_clip"]) == 0
    exported = load_file(str(tmp_path / "ema" / "open_clip_model.safetensors"))
    ema = load_file(str(_last_checkpoint(run) / "ema.safetensors"))
    raw = load_file(str(_last_checkpoint(run) / "model.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in ema.items())
    assert not all(torch.equal(exported[k], raw[k]) for k in ema)
    card = ModelCard.load(tmp_path / "ema" / "README.md")
    assert f"- weights: EMA (decay {DECAY})" in card.text
    assert card.data.vlp_weights == "ema" and card.data.vlp_ema_decay == DECAY
    raw_card = ModelCard.load(tmp_path / "raw" / "README.md")
    assert "- weights: raw" in raw_card.text and raw_card.data.vlp_weights == "raw"
    assert getattr(raw_card.data, "vlp_ema_decay", None) is None


def test_ema_without_an_ema_is_one_line_error(runs, tmp_path, capsys):
    with_ema, without, eval_set = runs
    assert main(["eval", "--model", str(without), "--data", str(eval_set), "--weights", "ema", *EVAL_ARGS]) != 0
    assert main(["export", str(without), str(tmp_path / "out"), "--weights", "ema"]) != 0
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") and "train.ema_decay" in e for e in errors), errors
    assert not (tmp_path / "out").exists()
    exported = tmp_path / "exported"
    assert main(["export", str(with_ema), str(exported), "--format", "open_clip"]) == 0
    with pytest.raises(FileNotFoundError, match="exported folder"):
        load_pretrained(exported, weights="ema")
    with pytest.raises(ValueError, match="weights must be one of"):
        load_pretrained(with_ema, weights="average")


def test_ema_file_is_verified_by_the_manifest(runs, tmp_path):
    run, _, _ = runs
    copy = shutil.copytree(run, tmp_path / "run")
    checkpoint = _last_checkpoint(copy)
    ema = checkpoint / "ema.safetensors"
    assert "ema.safetensors" in json.loads((checkpoint / "state.json").read_text())["files"]
    data = bytearray(ema.read_bytes())
    data[-1] ^= 0xFF
    ema.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="ema.safetensors"):
        load_pretrained(checkpoint, weights="ema")
