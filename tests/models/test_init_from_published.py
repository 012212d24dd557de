"""`model.init_checkpoint` naming a published folder: a transformers CLIPModel folder or an open_clip `hf-hub:` folder
initialises the open_clip tower of the same architecture, which then computes what the published model computes."""
from __future__ import annotations

import dataclasses
import json

import open_clip
import pytest
import torch
from helpers.train_support import TINY_MODEL, make_shards, recipe_dict, write_recipe
from open_clip.push_to_hf_hub import save_for_hf
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, SiglipConfig

from vlp.cli import main
from vlp.models import build_model, load_pretrained, published_config
from vlp.recipe import ModelConfig

torch.set_num_threads(1)
TOL = dict(atol=1e-5, rtol=0)
CAPTIONS = ["a red square", "a photo of a small dog on the grass", "x"]


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (layer norms and biases too), so every mapped entry shows in the outputs."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def save_hf_clip(folder, eos_token_id: int = 2, hidden_act: str = "quick_gelu") -> CLIPModel:
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 hidden_act=hidden_act)
    config = CLIPConfig(text_config={**tower, "vocab_size": 49408, "max_position_embeddings": 16,
                                     "eos_token_id": eos_token_id},
                        vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=16)
    hf = perturbed(CLIPModel(config))
    hf.save_pretrained(folder)
    return hf


def init_from(folder, **model) -> torch.nn.Module:
    cfg = ModelConfig(config=published_config(folder), init_checkpoint=str(folder), **model)
    return build_model(cfg)[0].eval()


def features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 may return an output


@pytest.mark.parametrize("eos_token_id,hidden_act", [(2, "quick_gelu"), (49407, "gelu")])
def test_clip_model_folder_computes_what_transformers_computes(tmp_path, eos_token_id, hidden_act):
    hf = save_hf_clip(tmp_path, eos_token_id, hidden_act)
    model = init_from(tmp_path)
    images = torch.randn(3, 3, 32, 32)
    tokens = model.tokenizer(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), features(hf.get_image_features(pixel_values=images)),
                                   **TOL)
        torch.testing.assert_close(model.encode_text(tokens), features(hf.get_text_features(input_ids=tokens)),
                                   **TOL)
        out = model(images, tokens)
        logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
        torch.testing.assert_close(logits, hf(input_ids=tokens, pixel_values=images).logits_per_image, **TOL)


def open_clip_model() -> torch.nn.Module:
    """A CLIP as open_clip's factory makes it: save_for_hf reads the preprocessing the factory sets."""
    model = open_clip.CLIP(**TINY_MODEL, output_dict=True)
    open_clip.model.set_model_preprocess_cfg(model, dataclasses.asdict(open_clip.transform.PreprocessCfg()))
    return model


class BpeNeedsNoFiles:
    """open_clip's BPE tokenizer is named by the config; it has no files for save_for_hf to write."""

    def save_pretrained(self, dest):
        pass


@pytest.mark.parametrize("serialization", [True, False])  # open_clip_model.safetensors / open_clip_pytorch_model.bin
def test_open_clip_hub_folder_computes_what_open_clip_computes(tmp_path, serialization):
    published = perturbed(open_clip_model())
    save_for_hf(published, BpeNeedsNoFiles(), TINY_MODEL, tmp_path, safe_serialization=serialization)
    model = init_from(tmp_path)
    images, tokens = torch.randn(2, 3, 16, 16), model.tokenizer(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), published.encode_image(images), **TOL)
        torch.testing.assert_close(model.encode_text(tokens), published.encode_text(tokens), **TOL)


def test_another_architecture_is_refused_in_one_line(tmp_path):
    save_hf_clip(tmp_path)
    config = published_config(tmp_path)
    config["vision_cfg"]["width"] = 64
    with pytest.raises(ValueError, match=r"architecture differs .* vision_cfg\.width: 32 vs 64") as error:
        build_model(ModelConfig(config=config, init_checkpoint=str(tmp_path)))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("change,message", [("extra", "no open_clip counterpart: extra.weight"),
                                            ("drop", "no text_model.final_layer_norm.bias")])
def test_clip_weights_that_do_not_map_are_named_in_one_line(tmp_path, change, message):
    save_hf_clip(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    if change == "extra":
        state["extra.weight"] = torch.zeros(1)
    else:
        del state["text_model.final_layer_norm.bias"]
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=message) as error:
        init_from(tmp_path)
    assert "\n" not in str(error.value)


def test_open_clip_folder_with_other_shapes_is_named_in_one_line(tmp_path):
    published = open_clip_model()
    save_for_hf(published, BpeNeedsNoFiles(), TINY_MODEL, tmp_path, safe_serialization=True)
    state = load_file(str(tmp_path / "open_clip_model.safetensors"))
    state["text_projection"] = torch.zeros(32, 8)
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(ValueError, match=r"do not match the model config: shape text_projection \(32, 8\)") as error:
        init_from(tmp_path)
    assert "\n" not in str(error.value)


def test_siglip_model_folder_is_refused_in_one_line(tmp_path):
    SiglipConfig().save_pretrained(tmp_path)
    save_file({}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="SiglipModel folders are not supported") as error:
        build_model(ModelConfig(config=TINY_MODEL, init_checkpoint=str(tmp_path)))
    assert "\n" not in str(error.value)


def test_vlp_train_starts_from_a_clip_model_folder(tmp_path, capsys):
    folder = tmp_path / "published"
    hf = save_hf_clip(folder)
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="2 steps", log_every=1)
    recipe["model"] = {"config": json.loads(json.dumps(published_config(folder))), "init_checkpoint": str(folder)}
    assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 0, capsys.readouterr().err
    trained, _, _, info = load_pretrained(tmp_path / "runs" / "run")
    assert info["step"] == 2
    # Two AdamW steps at lr <= 2e-3 move a weight by at most ~4e-3: it started from the folder's weights
    start = hf.vision_model.embeddings.patch_embedding.weight
    assert 0 < (trained.visual.conv1.weight - start).abs().max() < 1e-2
