"""`vlp report`: one self-contained page about a run, checked in a real (headless Chromium) browser."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vlp.cli import main
from vlp.evaluate.table import suite_table
from vlp.report.page import SCRIPT
from vlp.run_dir import RunDir

BROWSER = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def report(evaluated_digits, tmp_path_factory):
    run_dir, _ = evaluated_digits
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    return run_dir, out


def test_report_is_self_contained_and_shows_the_run(report):
    run_dir, out = report
    page = out.read_text()
    sources = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing fetched from disk
    pictures = list(RunDir(run_dir).picture_steps()[-1].rglob("*.png"))
    assert len(pictures) == 6  # zero-shot: gap, similarity, confusion; retrieval: gap, similarity, retrieval grid
    for picture in pictures:  # the newest evaluation's pictures, byte for byte
        assert picture.read_bytes() in [_decoded(s) for s in sources]
    records = json.loads(RunDir(run_dir).eval_results.read_text())
    columns, rows = suite_table(records)
    for row in rows:  # the suite table of the newest evaluation, every number of it
        assert all(f"{v:.4f}" in page for v in row[2:] if isinstance(v, float))
    final = [r for r in records if r["step"] == 60]
    assert f"{final[0]['metrics']['acc1']:.4f}" in page and "Evaluation (step 60)" in page
    assert "trained 60 steps, 3840 samples" in page
    assert "Bad samples" in page and "none skipped" in page and "Recipe" in page


def test_report_links_are_relative_to_the_page(evaluated_digits):
    run_dir, _ = evaluated_digits
    page = RunDir(run_dir).report
    assert main(["report", str(run_dir)]) == 0
    links = re.findall(r'<a href="([^"]*)"', page.read_text())
    assert "export" in links and "checkpoints/step_00000060" in links
    assert all((page.parent / link).exists() for link in links)


def test_report_renders_in_a_browser(report, tmp_path):
    """Chromium loads the page: every image decodes, nothing is logged to the console, the screenshot is not blank."""
    _need_browser()
    _, out = report
    shown = render(out, tmp_path)
    total = len(re.findall(r"<img ", out.read_text()))
    assert shown["images"] == f"{total}/{total}" and total >= 10
    assert shown["console"] == []
    assert shown["pixel_std"] > 20


def test_browser_check_catches_a_broken_page(tmp_path):
    """The checks above can fail: a broken image, a script error and an empty page are each caught."""
    _need_browser()
    broken = tmp_path / "broken.html"
    broken.write_text(f'<html><body><img src="data:image/png;base64,AAAA"><script>{SCRIPT}'
                      "undefinedFunction();</script></body></html>")
    shown = render(broken, tmp_path)
    assert shown["images"] == "0/1"
    assert any("Uncaught ReferenceError" in line for line in shown["console"])
    assert shown["pixel_std"] < 1  # a white page


def render(page, tmp_path) -> dict:
    """{"images": the page's data-images marker, "console": console lines, "pixel_std": of a 1200×1800 screenshot}."""
    base = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"file://{page}"]
    dom = subprocess.run(base[:-1] + ["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                                      "--dump-dom", base[-1]], capture_output=True, text=True, timeout=120)
    shot = tmp_path / "shot.png"
    subprocess.run(base[:-1] + [f"--screenshot={shot}", "--window-size=1200,1800", base[-1]],
                   capture_output=True, timeout=120, check=True)
    marker = re.search(r'<body[^>]*data-images="([^"]*)"', dom.stdout)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    return {"images": marker.group(1) if marker else None,
            "console": [line for line in dom.stderr.splitlines() if ":CONSOLE" in line],
            "pixel_std": float(pixels.std())}


def _need_browser() -> None:
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("no chromium on this machine (CI installs it)")


def _decoded(source: str) -> bytes:
    return base64.b64decode(source.split(",", 1)[1])


def test_exported_model_card_embeds_the_key_pictures(evaluated_digits):
    """The export made at the end of training carries the final evaluation's key pictures, referenced relatively from
    README.md so the Hub page shows them."""
    run_dir, _ = evaluated_digits
    export = RunDir(run_dir).export
    card = (export / "README.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)
    assert shown == ["images/digits_retrieval_modality_gap.png", "images/digits_retrieval_retrieval.png",
                     "images/digits_zeroshot_modality_gap.png", "images/digits_zeroshot_confusion.png"]
    final = RunDir(run_dir).pictures_at(60)
    sources = ["digits_retrieval/modality_gap.png", "digits_retrieval/retrieval.png",
               "digits_zeroshot/modality_gap.png", "digits_zeroshot/confusion.png"]
    for link, source in zip(shown, sources):
        assert (export / link).read_bytes() == (final / source).read_bytes()
