"""`vlp export --format onnx`: the two encoders run in onnxruntime on inputs prepared only from preprocess.json and
the exported tokenizer files, and give the PyTorch embeddings and zero-shot answers; any batch size, and any text
length for an HF text tower."""
from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import open_clip
import pytest
import torch
import transformers
from PIL import Image

from helpers.runs import MINILM, TINY, make_run_dir
from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main as vlp_main
from vlp.evaluate import layout
from vlp.export import export
from vlp.models import load_pretrained

torch.set_num_threads(1)
IMAGES = 40  # held-out digits encoded in one batch: not the trace batch of 2
TOLERANCE = 1e-5
PICTURE = Image.effect_mandelbrot((61, 45), (-2, -1.2, 1, 1.2), 50).convert("RGB")  # not square, not the model size
RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def _preprocess(picture: Image.Image, facts: dict) -> np.ndarray:
    """What a runtime without torch does with preprocess.json's "image" section (resize_mode "shortest")."""
    assert facts["resize_mode"] == "shortest"
    height, width = facts["size"]
    scale = height / min(picture.size)
    resized = picture.resize((max(height, int(picture.width * scale)), max(height, int(picture.height * scale))),
                             RESAMPLE[facts["interpolation"]])
    left, top = int(round((resized.width - width) / 2)), int(round((resized.height - height) / 2))
    pixels = np.asarray(resized.crop((left, top, left + width, top + height)).convert("RGB"), np.float32) / 255
    return ((pixels - np.float32(facts["mean"])) / np.float32(facts["std"])).transpose(2, 0, 1)


def _tokenize(folder, facts: dict, texts: list[str], padding: str = "max_length") -> np.ndarray:
    """preprocess.json's "text" section and the tokenizer files beside it, without vlp."""
    tokenizer = facts["tokenizer"]
    if tokenizer["type"] == "open_clip.SimpleTokenizer":
        bpe = str(folder / tokenizer["bpe_file"])
        return open_clip.SimpleTokenizer(bpe, context_length=facts["context_length"])(texts).numpy()
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    return hf(texts, padding=padding, truncation=True, max_length=facts["context_length"], return_tensors="np")[
        "input_ids"].astype(np.int64)


def _normalized(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _held_out_digits(zeroshot_dir, count: int) -> tuple[list[Image.Image], list[int]]:
    images, labels = {}, {}
    for shard in sorted((zeroshot_dir / "test").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.rsplit(".", 1)
                data = tar.extractfile(member).read()
                if ext == "png":
                    images[key] = Image.open(io.BytesIO(data)).convert("RGB")
                elif ext == layout.LABEL_KEY:
                    labels[key] = int(data)
    keys = sorted(images)[:count]
    return [images[k] for k in keys], [labels[k] for k in keys]


@pytest.fixture(scope="module")
def digits_onnx(trained_digits, tmp_path_factory):
    run, paths = trained_digits
    out = tmp_path_factory.mktemp("onnx") / "out"
    assert vlp_main(["export", str(run), str(out), "--format", "onnx"]) == 0
    return out, paths


def test_onnx_encoders_match_pytorch_on_held_out_digits(digits_onnx):
    out, paths = digits_onnx
    folder = out / "onnx"
    facts = json.loads((folder / "preprocess.json").read_text())
    model, preprocess, tokenizer, _ = load_pretrained(out)  # the open_clip-format export written beside it
    zeroshot = Path(paths["zeroshot"])
    pictures, labels = _held_out_digits(zeroshot, IMAGES)
    np.testing.assert_allclose(_preprocess(PICTURE, facts["image"]), preprocess(PICTURE).numpy(), rtol=0, atol=1e-6)
    pixels = np.stack([_preprocess(p, facts["image"]) for p in pictures])
    classes = layout.optional_lines(zeroshot, layout.CLASSNAMES_FILE)
    templates = layout.optional_lines(zeroshot, layout.TEMPLATES_FILE)
    prompts = [t.replace("{c}", c) for c in classes for t in templates]
    tokens = _tokenize(folder, facts["text"], prompts)
    np.testing.assert_array_equal(tokens, tokenizer(prompts).numpy())

    image_session = onnxruntime.InferenceSession(str(folder / "image_encoder.onnx"))
    text_session = onnxruntime.InferenceSession(str(folder / "text_encoder.onnx"))
    ours_i = image_session.run(None, {"pixel_values": pixels})[0]
    ours_t = text_session.run(None, {"input_ids": tokens})[0]
    with torch.no_grad():
        theirs_i = model.encode_image(torch.stack([preprocess(p) for p in pictures])).numpy()
        theirs_t = model.encode_text(tokenizer(prompts)).numpy()
    assert facts["outputs"]["normalized"] is False and not np.allclose(np.linalg.norm(ours_i, axis=-1), 1)
    diff_i = np.abs(_normalized(ours_i) - _normalized(theirs_i)).max()
    diff_t = np.abs(_normalized(ours_t) - _normalized(theirs_t)).max()
    assert diff_i <= TOLERANCE and diff_t <= TOLERANCE, (diff_i, diff_t)

    def top1(image_embeds, text_embeds):
        per_class = _normalized(_normalized(text_embeds).reshape(len(classes), len(templates), -1).mean(axis=1))
        return (facts["logit_scale"] * _normalized(image_embeds) @ per_class.T).argmax(axis=1)

    assert (top1(ours_i, ours_t) == top1(theirs_i, theirs_t)).all()
    assert (top1(ours_i, ours_t) == np.array(labels)).mean() > 0.3  # a trained model: chance is 0.1
    one = image_session.run(None, {"pixel_values": pixels[:1]})[0]  # batch 1: the batch axis is not the trace's 2
    assert np.abs(_normalized(one) - _normalized(theirs_i[:1])).max() <= TOLERANCE


def test_onnx_files_state_their_axes_and_preprocessing(digits_onnx):
    out, _ = digits_onnx
    folder = out / "onnx"
    facts = json.loads((folder / "preprocess.json").read_text())
    model, _, _, _ = load_pretrained(out)
    image, text = (onnx.load(str(folder / name)) for name in ("image_encoder.onnx", "text_encoder.onnx"))
    assert min(o.version for o in image.opset_import if o.domain in ("", "ai.onnx")) >= 17
    image_dims = image.graph.input[0].type.tensor_type.shape.dim
    text_dims = text.graph.input[0].type.tensor_type.shape.dim
    assert image_dims[0].dim_param and [d.dim_value for d in image_dims[1:]] == [3, 16, 16]
    # open_clip's own text transformer: the length is the context length, and preprocess.json says so
    assert text_dims[0].dim_param and text_dims[1].dim_value == facts["text"]["context_length"] == 16
    assert facts["text"]["length"] == "fixed"
    assert facts["image"]["size"] == [16, 16] and facts["image"]["interpolation"] == "bicubic"
    assert facts["image"]["mean"] == list(open_clip.OPENAI_DATASET_MEAN)
    assert facts["logit_scale"] == pytest.approx(float(model.logit_scale.detach().exp()))
    assert facts["logit_bias"] is None
    assert facts["text"]["tokenizer"]["bpe_file"] == "bpe_simple_vocab_16e6.txt.gz"
    assert (folder / "bpe_simple_vocab_16e6.txt.gz").read_bytes() == open(open_clip.tokenizer.default_bpe(),
                                                                           "rb").read()
    assert "onnx" in (out / "README.md").read_text()


def test_hf_text_tower_takes_any_text_length(tmp_path):
    run, _ = make_run_dir(tmp_path, config=MINILM)
    out = tmp_path / "out"
    assert export(run, out, formats=["onnx"])["formats"] == ["open_clip", "onnx"]
    folder = out / "onnx"
    facts = json.loads((folder / "preprocess.json").read_text())
    assert facts["text"]["length"] == "dynamic" and facts["text"]["tokenizer"]["type"] == "huggingface"
    model, _, tokenizer, _ = load_pretrained(run)
    prompts = ["a cat", "three small dogs playing in the snow", "red"]
    full = _tokenize(folder, facts["text"], prompts)
    np.testing.assert_array_equal(full, tokenizer(prompts).numpy())
    shortest = _tokenize(folder, facts["text"], prompts, padding="longest")
    assert shortest.shape[1] < full.shape[1] == 16
    session = onnxruntime.InferenceSession(str(folder / "text_encoder.onnx"))
    with torch.no_grad():
        theirs = _normalized(model.encode_text(tokenizer(prompts)).numpy())
    for tokens in (full, shortest, shortest[:1]):
        ours = _normalized(session.run(None, {"input_ids": tokens})[0])
        assert np.abs(ours - theirs[:len(tokens)]).max() <= TOLERANCE


def test_a_recipe_exports_onnx_at_the_end_of_training(tmp_path):
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=8), tmp_path, duration="2 steps",
                         batch_size=4)
    recipe["model"]["config"], recipe["export"] = TINY, {"formats": ["onnx"]}
    from vlp.train import train

    run = train(write_recipe(tmp_path / "run.yaml", recipe)).run_dir
    assert {p.name for p in (run / "export" / "onnx").iterdir()} == {
        "image_encoder.onnx", "text_encoder.onnx", "preprocess.json", "bpe_simple_vocab_16e6.txt.gz"}


def test_onnx_without_its_packages_is_one_line(trained_digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    run, _ = trained_digits
    assert vlp_main(["export", str(run), str(tmp_path / "out"), "--format", "onnx"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: --format onnx needs the onnxscript package: pip install vlp[onnx]"]
    assert not (tmp_path / "out").exists()
