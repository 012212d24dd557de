"""A weights file that is a pickle importing code (what `torch.save` of an arbitrary object writes) never runs: vlp
refuses it in one line naming the file and the formats it reads, wherever it takes a `.pt` (`model.init_checkpoint`,
`model.pretrained`); so does a file that is not weights at all."""
from __future__ import annotations

import os

import pytest
import torch

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main

pytestmark = pytest.mark.faults


class _Payload:
    """Unpickling calls os.mkdir(marker): the marker folder appears only if the pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _write_unsafe(path, marker) -> None:
    torch.save({"visual.proj": torch.zeros(2), "hook": _Payload(marker)}, path)


@pytest.mark.parametrize("key", ["init_checkpoint", "pretrained"])
def test_a_pickle_importing_code_is_refused_in_one_line_and_never_runs(tmp_path, capsys, key):
    weights, marker = tmp_path / "weights.pt", tmp_path / "ran"
    _write_unsafe(weights, marker)
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=8), tmp_path / "runs",
                         duration="2 steps")
    recipe["model"][key] = str(weights)
    assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {weights}: refused: its pickle imports "), err
    assert "os.mkdir" in err[0] or "posix.mkdir" in err[0]
    assert ".safetensors, or .pt/.pth/.bin holding only tensors" in err[0]
    assert not marker.exists()


def test_a_file_that_is_not_weights_is_refused_in_one_line(tmp_path, capsys):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"<html>404 not found</html>")  # what a failed download leaves
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=8), tmp_path / "runs",
                         duration="2 steps")
    recipe["model"]["init_checkpoint"] = str(weights)
    assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {weights}: not a weights file vlp can read (damaged, or another format); accepted: "
                   ".safetensors, or .pt/.pth/.bin holding only tensors (what torch.load(weights_only=True) reads)"]
