"""vlp export of a CoCa: the open_clip folder reloads in open_clip with equal embeddings and caption logits; the
transformers format, which has no CoCa, is skipped or (asked for) refused in one line."""
from __future__ import annotations

import open_clip
import pytest
import torch

from helpers.coca_support import coca_run
from vlp.cli import main as vlp_main
from vlp.export import export
from vlp.models import load_pretrained

torch.set_num_threads(1)
CAPTIONS = ["a red square", "a blue square", "", "x" * 100]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return coca_run(tmp_path_factory.mktemp("coca_export"))


def test_coca_export_reloads_in_open_clip_with_equal_embeddings_and_logits(run, tmp_path):
    out = tmp_path / "export"
    result = export(run, out, log=lambda line: None)
    assert result["formats"] == ["open_clip"] and "no CoCa" in result["skipped"]["transformers"]
    ours, _, tokenizer, _ = load_pretrained(run)
    theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    assert type(theirs) is open_clip.CoCa
    theirs.eval()
    tokens = tokenizer(CAPTIONS)
    torch.testing.assert_close(open_clip.get_tokenizer(f"local-dir:{out}")(CAPTIONS), tokens, rtol=0, atol=0)
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        mine, reference = ours(images, tokens), theirs(images, tokens)
        torch.testing.assert_close(ours.encode_image(images), theirs.encode_image(images), rtol=0, atol=0)
        torch.testing.assert_close(ours.encode_text(tokens), theirs.encode_text(tokens), rtol=0, atol=0)
    for key in ("image_features", "text_features", "logits", "logit_scale"):
        torch.testing.assert_close(mine[key], reference[key], rtol=0, atol=0)


def test_coca_export_to_transformers_is_refused_in_one_line(run, tmp_path, capsys):
    assert vlp_main(["export", str(run), str(tmp_path / "hf"), "--format", "transformers"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: transformers has no CoCa model") and "\n" not in err
    assert not (tmp_path / "hf").exists()
