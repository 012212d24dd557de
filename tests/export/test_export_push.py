"""`vlp export --push-to-hub` against a loopback Hub that records the calls create_repo/upload_folder make."""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.runs import make_run_dir
from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main as vlp_main
from vlp.run_dir import EXPORT_MARKER
from vlp.recipe import dump_recipe, load_recipe

TOKEN = "hf_vlpTestSecretToken0123456789"
REPO = "vlp-org/tiny-clip"
SECRET = "sh4rdCredential"  # in shard specs: must stay in RUN_DIR/recipe.yaml and nowhere that is published


class FakeHub(BaseHTTPRequestHandler):
    """Answers the Hub API calls of an upload; every request is recorded on the server."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.server.fail_commit and "/commit/" in self.path:
            return self._reply(500, {"error": f"commit refused for {self.headers.get('Authorization')}"})
        if self.path == "/api/repos/create":
            return self._reply(200, {"url": f"{self.server.endpoint}/{REPO}", "name": REPO})
        if "/preupload/" in self.path:
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in json.loads(body)["files"]]
            return self._reply(200, {"files": files})
        if "/commit/" in self.path:
            return self._reply(200, {"commitUrl": f"{self.server.endpoint}/{REPO}/commit/{'a' * 40}",
                                     "commitOid": "a" * 40, "pullRequestUrl": None})
        if "/branch/" in self.path or self.path == "/api/validate-yaml":  # the Hub checks README metadata first
            return self._reply(200, {})
        return self._reply(404, {"error": "not handled by the fake hub"})

    def do_GET(self):  # noqa: N802
        self.server.calls.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": b""})
        self._reply(404, {"error": "not handled by the fake hub"})

    def _reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.calls, server.fail_commit = [], False
    server.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _hub_env(hub, home) -> dict:
    """huggingface_hub reads these at import time, hence a subprocess; debug verbosity logs every request."""
    return {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(home),
            "HF_HUB_VERBOSITY": "debug"}


def _export(run, out, hub, home, *extra):
    cmd = [sys.executable, "-m", "vlp", "export", str(run), str(out), "--push-to-hub", REPO, *extra]
    return subprocess.run(cmd, env=_hub_env(hub, home), capture_output=True, text=True, timeout=120)


def _committed_files(hub) -> dict[str, bytes]:
    commit = next(c for c in hub.calls if "/commit/" in c["path"])
    lines = [json.loads(line) for line in commit["body"].decode().splitlines() if line.strip()]
    return {item["value"]["path"]: base64.b64decode(item["value"]["content"]) for item in lines
            if item["key"] == "file"}


def _hub_readme(hub) -> str:
    return json.loads(next(c for c in hub.calls if c["path"] == "/api/validate-yaml")["body"])["content"]


def test_push_uploads_the_export_without_leaking_the_token(tmp_path, hub):
    run, _ = make_run_dir(tmp_path)
    recipe = load_recipe(run / "recipe.yaml")
    spec = f"https://user:{SECRET}@data.example.com/{{0..9}}.tar?X-Amz-Signature={SECRET}"
    (run / "recipe.yaml").write_text(dump_recipe(dataclasses.replace(recipe, data=dataclasses.replace(
        recipe.data, train=spec))))
    out = tmp_path / "export"
    result = _export(run, out, hub, tmp_path / "hf_home", "--revision", "dev")
    assert result.returncode == 0, result.stderr[-2000:]
    paths = [c["path"].split("?")[0] for c in hub.calls]
    assert paths[0] == "/api/repos/create"
    assert json.loads(hub.calls[0]["body"])["visibility"] == "private"  # the default, as in recipes and the API
    readme = _hub_readme(hub)
    assert "zero-shot-image-classification" in readme
    assert "https://***@data.example.com/{0..9}.tar?***" in readme and SECRET not in readme  # item 13
    assert SECRET in (run / "recipe.yaml").read_text()  # the local copy stays exact for --resume
    assert f"/api/models/{REPO}/branch/dev" in paths
    assert f"/api/models/{REPO}/commit/dev" in paths
    assert all(c["auth"] == f"Bearer {TOKEN}" for c in hub.calls)  # the token was sent, and only as the header
    sent = _committed_files(hub)
    on_disk = {p.name: p.read_bytes() for p in out.iterdir() if p.name != EXPORT_MARKER}  # the marker stays local
    assert sent == on_disk
    assert {"open_clip_config.json", "open_clip_model.safetensors", "config.json", "model.safetensors",
            "README.md", "tokenizer.json"} <= set(sent)
    assert TOKEN not in result.stdout + result.stderr
    assert not any(TOKEN.encode() in data for data in on_disk.values())


def test_failed_push_reports_without_the_token(tmp_path, hub):
    hub.fail_commit = True  # its error message quotes the Authorization header, as some proxies do
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\n---\n")
    code = f"from vlp.export.push import push_folder; push_folder({str(folder)!r}, {REPO!r}, True, None)"
    result = subprocess.run([sys.executable, "-c", code], env=_hub_env(hub, tmp_path / "hf_home"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "push to vlp-org/tiny-clip failed" in result.stderr
    assert any("/commit/" in c["path"] for c in hub.calls)
    assert "Bearer ***" in result.stderr  # the hub quoted the header; the token was scrubbed from the message
    assert TOKEN not in result.stdout + result.stderr


def test_public_is_the_only_way_to_a_public_repo(tmp_path, monkeypatch):
    import vlp.export.api

    calls = []
    monkeypatch.setattr(vlp.export.api, "export", lambda *args, **kwargs: calls.append(kwargs["private"]))
    for flags in ([], ["--public"]):
        assert vlp_main(["export", str(tmp_path / "run"), str(tmp_path / "out"), "--push-to-hub", REPO, *flags]) == 0
    assert calls == [True, False]
    with pytest.raises(SystemExit):  # there is no opt-in flag: private is the default
        vlp_main(["export", "run", "out", "--private"])


@pytest.mark.parametrize("flags", [["--public"], ["--revision", "dev"]])
def test_push_flags_without_a_push_are_refused(tmp_path, capsys, flags):
    assert vlp_main(["export", str(tmp_path / "run"), str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err == f"error: {flags[0]} applies to the Hub push: pass --push-to-hub ORG/NAME\n"


def test_recipe_push_without_formats_pushes_a_private_export_without_secrets(tmp_path, hub):
    """A recipe's export.push_to_hub alone pushes (what `vlp export --push-to-hub` writes), privately; shard-spec
    credentials reach neither the pushed card nor the TensorBoard hyperparameters, but stay in RUN_DIR/recipe.yaml."""
    folder = tmp_path / "shards"
    make_shards(folder, shards=2, per_shard=8)
    spec = f"pipe:curl -s -H 'Authorization: Bearer {SECRET}' file://{folder}/shard-{{000..001}}.tar"
    recipe = recipe_dict(spec, tmp_path / "runs", duration="2 steps")
    recipe["data"]["num_samples"] = 16  # pipe: shards have no sizes.json
    recipe["logging"]["trackers"] = ["tensorboard"]
    recipe["export"] = {"push_to_hub": REPO}
    path = write_recipe(tmp_path / "run.yaml", recipe)
    result = subprocess.run([sys.executable, "-m", "vlp", "train", str(path)], env=_hub_env(hub, tmp_path / "hf"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(hub.calls[0]["body"])["visibility"] == "private"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "README.md"} <= set(_committed_files(hub))
    card = _committed_files(hub)["README.md"].decode()
    assert "-H *** file://" in card and SECRET not in card
    run = tmp_path / "runs" / "run"
    hparams = b"".join(p.read_bytes() for p in run.rglob("events.out.tfevents*"))
    assert b"-H *** file://" in hparams and SECRET.encode() not in hparams
    assert SECRET in (run / "recipe.yaml").read_text()
