"""Shards as img2dataset writes them train, check and count without a conversion step: the real `img2dataset`
downloads images from an HTTP server started here (some URLs missing), and an epoch delivers every downloaded
sample exactly once."""
from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from helpers.shards import captions_read_back
from helpers.train_support import recipe_dict, write_recipe
from vlp.cli import main

IMAGES, MISSING, PER_SHARD = 300, 20, 64


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # 404s are the point, not news
        pass


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory) -> Path:
    """img2dataset's output folder for IMAGES served images and MISSING URLs that 404."""
    pytest.importorskip("img2dataset")
    root = tmp_path_factory.mktemp("img2dataset")
    (root / "site").mkdir()
    for i in range(IMAGES):
        Image.new("RGB", (20, 20), (i % 256, i // 256, 90)).save(root / "site" / f"{i}.png")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root / "site"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = [f"{base}/{i}.png" for i in range(IMAGES)] + [f"{base}/gone{i}.png" for i in range(MISSING)]
    pd.DataFrame({"url": urls, "caption": [f"image {i}" for i in range(len(urls))]}).to_parquet(root / "urls.parquet")
    try:
        # its own process: img2dataset starts its workers with `spawn`, which re-imports the caller's main module
        subprocess.run([sys.executable, "-c", "from img2dataset import main; main()",
                        "--url_list", str(root / "urls.parquet"), "--input_format", "parquet", "--url_col", "url", "--caption_col", "caption",
                        "--output_folder", str(root / "out"), "--output_format", "webdataset",
                        "--processes_count", "1", "--thread_count", "8", "--number_sample_per_shard", str(PER_SHARD),
                        "--image_size", "16", "--resize_mode", "no", "--enable_wandb", "False", "--retries", "0",
                        "--timeout", "5"], check=True, capture_output=True,
                       env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    finally:
        server.shutdown()
    return root / "out"


def test_the_layout_is_img2dataset_s_own(downloaded):
    names = sorted(p.name for p in downloaded.iterdir())
    assert "00000.tar" in names and "00000_stats.json" in names and "00000.parquet" in names
    assert "sizes.json" not in names
    stats = [json.loads(p.read_text()) for p in downloaded.glob("*_stats.json")]
    assert sum(s["successes"] for s in stats) == IMAGES and sum(s["failed_to_download"] for s in stats) == MISSING


def test_an_epoch_delivers_every_downloaded_sample_once(downloaded):
    spec = str(downloaded / "*.tar")
    assert captions_read_back(spec, IMAGES) == sorted(f"image {i}" for i in range(IMAGES))


def test_check_and_stats_count_no_damage(downloaded, capsys):
    spec = str(downloaded / "*.tar")
    assert main(["data", "check", spec]) == 0
    shards = len(list(downloaded.glob("*.tar")))
    assert f"{shards} shards, {IMAGES} samples, 0 damaged shard(s)" in capsys.readouterr().out
    assert main(["data", "stats", spec, "--json"]) == 0
    assert f'"samples": {IMAGES}' in capsys.readouterr().out


def test_vlp_trains_on_it(downloaded, tmp_path):
    recipe = recipe_dict(str(downloaded / "*.tar"), tmp_path, duration="3 steps", batch_size=8)
    assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 3
    assert json.loads((tmp_path / "run" / "bad_samples.json").read_text())["all_epochs"] == {}  # 404s are not damage
