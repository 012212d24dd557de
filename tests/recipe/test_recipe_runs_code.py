"""`vlp recipe show` heads a recipe that runs code on this machine (`pipe:` specs, `plugins:`) with one comment line
naming each key, and prints no such line for a recipe that runs none; the output still loads as the same recipe."""
import textwrap

import pytest
import yaml

from vlp.cli import main

MODEL = """
model:
  config:
    embed_dim: 32
    vision_cfg: {image_size: 32, layers: 1, width: 32, patch_size: 8}
    text_cfg: {context_length: 16, vocab_size: 49408, width: 32, heads: 4, layers: 1}
"""
HEADER = "# runs code on this machine: "


def show(tmp_path, capsys, body: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(MODEL + textwrap.dedent(body))
    assert main(["recipe", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["model"]["config"]["embed_dim"] == 32  # the header is a comment
    return out.splitlines()


@pytest.mark.parametrize("body,header", [
    ('data: {train: "pipe:curl -s https://host/{0..3}.tar"}', "pipe: in data.train"),
    ('data: {train: "local/{0..3}.tar::pipe:aws s3 cp s3://b/x.tar -"}', "pipe: in data.train"),
    ('data: {sources: [{shards: a.tar}, {shards: "pipe:cat b.tar"}]}', "pipe: in data.sources[1].shards"),
    ('eval: {datasets: [{name: x, task: zeroshot, path: "pipe:cat x"}]}', "pipe: in eval.datasets[0].path"),
    ("plugins: [json, os.path]", "plugins: json, os.path"),
    ('data: {train: "pipe:cat a.tar"}\nplugins: [json]', "pipe: in data.train; plugins: json"),
])
def test_recipe_show_names_what_runs_code(tmp_path, capsys, body, header):
    assert show(tmp_path, capsys, body)[0] == HEADER + header


def test_recipe_show_marks_nothing_in_a_recipe_that_runs_no_code(tmp_path, capsys):
    lines = show(tmp_path, capsys, 'data: {train: "shards/{0..3}.tar::https://host/pipe:x.tar"}')
    assert not any(line.startswith(HEADER) for line in lines)
