"""vlp generate: captions from a trained CoCa's decoder (greedy equals a step-by-step argmax over open_clip's CoCa
reloaded from the export; beam search keeps the best-scoring hypothesis), from a run or an export, in Python and on
the command line; a model without a decoder is refused in one line."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from helpers.coca_support import coca_run
from helpers.runs import make_run_dir
from vlp.cli import main as vlp_main
from vlp.export import export
from vlp.generate import caption_images, generate
from vlp.generate.decode import beam_search
from vlp.models import load_pretrained

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("coca_generate")
    run = coca_run(root)
    export(run, root / "export", formats=["open_clip"], log=lambda line: None)
    images = []
    for i, color in enumerate(((220, 30, 30), (30, 40, 220))):
        path = root / f"image_{i}.png"
        Image.fromarray(np.full((16, 16, 3), color, dtype=np.uint8)).save(path)
        images.append(path)
    return run, root / "export", images


def open_clip_greedy(model, image: torch.Tensor, sot: int, eot: int, steps: int) -> list[int]:
    """Argmax of open_clip's own CoCa forward at the last position, the end token barred before 5 tokens."""
    tokens = torch.tensor([[sot]])
    with torch.no_grad():
        while tokens.shape[1] < steps and tokens[0, -1] != eot:
            logits = model(image[None], tokens, output_labels=False)["logits"][0, -1]
            if tokens.shape[1] < 5:
                logits[eot] = -torch.inf
            tokens = torch.cat([tokens, logits.argmax()[None, None]], dim=1)
    return tokens[0].tolist()


def test_greedy_captions_follow_open_clips_coca_token_by_token(folders):
    run, out, images = folders
    model, preprocess, tokenizer, _ = load_pretrained(out)
    theirs = open_clip.create_model(f"local-dir:{out}").eval()
    pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images])
    want = [open_clip_greedy(theirs, image, tokenizer.sot_token_id, tokenizer.eot_token_id, 16) for image in pixels]
    expected = [open_clip.decode(torch.tensor(ids)).split("<end_of_text>")[0].replace("<start_of_text>", "").strip()
                for ids in want]
    assert caption_images(model, pixels, "greedy", max_tokens=30) == expected
    assert generate(run, images, "greedy") == expected == generate(out, images, "greedy")


def test_beam_search_of_one_beam_is_greedy_and_wider_beams_score_no_worse(folders):
    _, out, images = folders
    model, preprocess, tokenizer, _ = load_pretrained(out)
    image = preprocess(Image.open(images[0]).convert("RGB"))
    limits = dict(sot=tokenizer.sot_token_id, eot=tokenizer.eot_token_id, max_tokens=16, min_tokens=5)
    assert caption_images(model, image[None], "beam", beams=1) == caption_images(model, image[None], "greedy")

    def score(tokens):  # summed log-probability of the generated tokens over their count, as beam search ranks
        with torch.no_grad():
            logits = model(image[None], torch.tensor([tokens]))["logits"][0].log_softmax(-1)  # predicts tokens[1:]
        return sum(logits[i, t].item() for i, t in enumerate(tokens[1:])) / (len(tokens) - 1)
    wide, narrow = (beam_search(model, image, beams=beams, **limits) for beams in (4, 1))
    assert score(wide) >= score(narrow) - 1e-5


def test_vlp_generate_prints_one_caption_per_image(folders, capsys):
    run, _, images = folders
    assert vlp_main(["generate", "--model", str(run), "--image", str(images[0]), "--image", str(images[1]),
                     "--method", "greedy"]) == 0
    assert capsys.readouterr().out.splitlines() == generate(run, images, "greedy")


def test_vlp_generate_on_a_model_without_a_decoder_is_one_line(folders, tmp_path, capsys):
    clip_run, _ = make_run_dir(tmp_path)
    assert vlp_main(["generate", "--model", str(clip_run), "--image", str(folders[2][0])]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: CLIP has no caption decoder: captions come from a CoCa (model.type coca)"


@pytest.mark.parametrize("flags,problem", [(["--method", "greedy", "--beams", "3"], "applies to --method beam, not greedy"),
                                           (["--beams", "0"], "is a width of 1 or more")])
def test_a_beam_width_greedy_would_not_apply_or_of_none_is_refused(flags, problem, tmp_path, capsys):
    assert vlp_main(["generate", "--model", str(tmp_path), "--image", "x.png", *flags]) == 2
    assert capsys.readouterr().err.strip() == f"error: --beams {problem}"
