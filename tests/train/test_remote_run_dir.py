"""`train.remote_dir` against a real S3 API (moto's server on a loopback port): each checkpoint is uploaded sealed by
its manifest, a run resumes bitwise from the remote alone (also after a kill mid-upload), and s3:// shards train as
the same local shards do."""
from __future__ import annotations

import json
import logging
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.killed_trainer import KILLED_TRAINER
from helpers.processes import forked_run
from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.cli import main
from vlp.recipe.redact import redact_text
from vlp.run_dir import RunDir
from vlp.train import remote, train

pytestmark = pytest.mark.faults
torch.set_num_threads(1)

TRAIN = dict(duration="14 steps", checkpoint_every="3 steps", ema_decay=0.9, keep_checkpoints=10)
SECRET = "hunter2-not-for-the-bucket"
STEPS = ["step_00000003", "step_00000006", "step_00000009", "step_00000012", "step_00000014"]

# `vlp train RECIPE`, SIGKILLed right after the first file of checkpoint NAME reached the remote (its manifest not).
KILLED_UPLOAD = """
import os, signal, sys
from vlp.cli import main
from vlp.train import remote

name, recipe = sys.argv[1], sys.argv[2]
real = remote.upload_file

def upload_file(fs, local, path):
    real(fs, local, path)
    if local.parent.name == name:
        os.kill(os.getpid(), signal.SIGKILL)

remote.upload_file = upload_file
sys.exit(main(["train", recipe]))
"""


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint with buckets `runs` and `data`, the environment pointing s3fs (botocore) at it."""
    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as env:
        for name, value in dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                                AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://{host}:{port}").items():
            env.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep another endpoint
        fs = s3fs.S3FileSystem()
        fs.mkdir("runs")
        fs.mkdir("data")
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(scope="module")
def setup(s3, tmp_path_factory):
    """The uninterrupted run, mirrored to s3://runs/reference."""
    root = tmp_path_factory.mktemp("remote")
    recipe = recipe_dict(make_shards(root / "shards", shards=2, per_shard=24), root / "runs", **TRAIN)
    recipe["description"] = f"shards fetched with AWS_SECRET_ACCESS_KEY={SECRET}"  # to be masked on the remote
    train(write_recipe(root / "reference.yaml", with_remote(recipe, "reference")))
    return root, recipe, s3


def with_remote(recipe: dict, name: str, **train_keys) -> dict:
    return {**recipe, "train": {**recipe["train"], "remote_dir": f"s3://runs/{name}", **train_keys}}


def final_weights(run_dir: Path, name: str = "model.safetensors") -> dict:
    return load_file(str(run_dir / "checkpoints" / "step_00000014" / name))


def logged(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def assert_resumes_from_the_remote_alone(root: Path, recipe: Path, run_dir: Path, monkeypatch,
                                         expected: set[str]) -> None:
    """Resumed from one of the `expected` remote checkpoints (not started over, which would end the same)."""
    shutil.rmtree(run_dir)  # another machine: nothing of the run on its disk
    fetched, fetch = [], remote.fetch_newest
    monkeypatch.setattr(remote, "fetch_newest", lambda *args: fetched.append(fetch(*args)))
    assert main(["train", str(recipe), "--resume", "latest"]) == 0
    assert len(fetched) == 1 and fetched[0].name in expected, fetched
    reference = root / "runs" / "reference"
    for weights in ("model.safetensors", "ema.safetensors"):
        assert state_dicts_equal(final_weights(run_dir, weights), final_weights(reference, weights)), weights
    # redone steps logged once (a record's values average its window, which a resume from an odd step cuts)
    assert [s for s, _ in logged(run_dir)] == [s for s, _ in logged(reference)]


def test_each_checkpoint_is_uploaded_sealed_with_equal_files(setup):
    root, _, fs = setup
    run_dir = root / "runs" / "reference"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()) == STEPS
    assert sorted(Path(p).name for p in fs.ls("runs/reference/checkpoints")) == ["latest", *STEPS]
    for name in STEPS:
        local = run_dir / "checkpoints" / name
        assert fs.exists(f"runs/reference/checkpoints/{name}/state.json")
        for file in local.iterdir():
            assert fs.cat_file(f"runs/reference/checkpoints/{name}/{file.name}") == file.read_bytes(), file
    assert fs.cat_file("runs/reference/checkpoints/latest") == (run_dir / "checkpoints" / "latest").read_bytes()
    assert fs.cat_file("runs/reference/metrics.jsonl") == (run_dir / "metrics.jsonl").read_bytes()
    uploaded = fs.cat_file("runs/reference/recipe.yaml").decode()
    assert uploaded == redact_text((run_dir / "recipe.yaml").read_text()) and SECRET not in uploaded


def test_a_failed_upload_is_one_warning_with_credentials_masked(setup, monkeypatch):
    root, _, _ = setup
    run = RunDir(root / "runs" / "reference")

    def refused(fs, local, path):
        raise PermissionError(f"denied to https://user:{SECRET}@storage.example/{path}")

    monkeypatch.setattr(remote, "upload_file", refused)
    with pytest.warns(UserWarning) as caught:
        with remote.Mirror(remote.Remote("s3://runs/refused", run)) as mirror:
            mirror.upload(run.checkpoint(14).path)  # training goes on: the failure is a warning
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "uploading to s3://runs/refused failed" in messages[0], messages
    assert SECRET not in messages[0]


def test_resume_from_the_remote_alone_is_bitwise_identical(setup, monkeypatch):
    """Killed after step 10 (the upload of step 9 may still have been going), the local run dir deleted."""
    root, recipe, fs = setup
    path = write_recipe(root / "killed.yaml", with_remote(recipe, "killed", keep_checkpoints=2))
    proc = forked_run(["-c", KILLED_TRAINER, "step", "10", str(path)], timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert_resumes_from_the_remote_alone(root, path, root / "runs" / "killed", monkeypatch, set(STEPS[1:3]))
    # the remote keeps what the local run keeps
    assert sorted(Path(p).name for p in fs.ls("runs/killed/checkpoints")) == ["latest", *STEPS[-2:]]


def test_kill_during_an_upload_leaves_the_previous_remote_checkpoint_usable(setup, monkeypatch):
    root, recipe, fs = setup
    path = write_recipe(root / "torn.yaml", with_remote(recipe, "torn"))
    proc = forked_run(["-c", KILLED_UPLOAD, "step_00000006", str(path)], timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    torn = "runs/torn/checkpoints/step_00000006"
    fs.invalidate_cache()
    assert fs.ls(torn) and not fs.exists(f"{torn}/state.json")  # cut mid-upload, never sealed
    assert fs.exists("runs/torn/checkpoints/step_00000003/state.json")
    assert_resumes_from_the_remote_alone(root, path, root / "runs" / "torn", monkeypatch, {STEPS[0]})


def test_a_failed_download_is_one_line_with_credentials_masked(setup, monkeypatch, capsys):
    root, recipe, fs = setup
    path = write_recipe(root / "unreadable.yaml", with_remote(recipe, "reference"))

    def refused(rpath, lpath, **kwargs):
        raise PermissionError(f"denied to https://user:{SECRET}@storage.example/{rpath}")

    monkeypatch.setattr(fs, "get_file", refused)  # fsspec hands training this same (cached) client
    assert main(["train", str(path), "--resume", "latest"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "downloading from s3://runs/reference failed" in lines[0], lines
    assert SECRET not in lines[0]


def test_two_processes_upload_once_and_resume_from_the_remote(setup):
    """Rank 0 alone uploads; on `--resume latest` it alone downloads, and rank 1 waits for it."""
    root, recipe, fs = setup
    path = write_recipe(root / "two.yaml", with_remote(recipe, "two", duration="6 steps"))
    final = root / "runs" / "two" / "checkpoints" / "step_00000006"

    def launch(*extra: str) -> str:
        proc = forked_run(["-m", "vlp", "train", str(path), *extra], processes=2, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc.stderr

    launch()
    written = {file.name: file.read_bytes() for file in final.iterdir()}
    assert {Path(p).name for p in fs.ls("runs/two/checkpoints/step_00000006")} == set(written)
    shutil.rmtree(final.parent.parent)
    # the run is over: its last checkpoint comes down and nothing is left to train (not a start over)
    assert "starting from step 0" not in launch("--resume", "latest")
    assert {file.name: file.read_bytes() for file in final.iterdir()} == written


def test_s3_shards_train_as_the_same_local_shards(setup):
    root, recipe, fs = setup
    for file in (root / "shards").iterdir():  # the shards and their sizes.json
        fs.put_file(str(file), f"data/shards/{file.name}")
    short = {**recipe["train"], "duration": "6 steps", "checkpoint_every": None}
    runs = {}
    # the s3 run through DataLoader worker processes, each opening its own connections (batches do not depend on them)
    sources = {"local_shards": (recipe["data"]["train"], 0), "s3_shards": ("s3://data/shards/shard-{000..001}.tar", 2)}
    for name, (shards, workers) in sources.items():
        data = {**recipe["data"], "train": shards, "workers": workers}
        runs[name] = train(write_recipe(root / f"{name}.yaml", {**recipe, "data": data, "train": short}))
    local, remote = runs["local_shards"], runs["s3_shards"]
    assert remote.samples_seen == local.samples_seen == 48
    assert logged(remote.run_dir) == logged(local.run_dir)
    assert state_dicts_equal(load_file(str(remote.checkpoint / "model.safetensors")),
                             load_file(str(local.checkpoint / "model.safetensors")))
