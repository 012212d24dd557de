"""`vlp export --overwrite` replaces only a folder `vlp export` wrote: never another run, never a folder of the
user's own; each refusal is one line and leaves every file as it was."""
from __future__ import annotations

import hashlib
import shutil

import pytest

from helpers.runs import make_run_dir
from vlp.cli import main as vlp_main
from vlp.run_dir import EXPORT_MARKER


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("overwrite"))[0]


def contents(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused_line(capsys, argv) -> str:
    capsys.readouterr()
    assert vlp_main(argv) == 1
    [line] = capsys.readouterr().err.splitlines()
    return line


def test_overwrite_refuses_another_run_and_leaves_it_whole(run, tmp_path, capsys):
    other = tmp_path / "run_b"
    shutil.copytree(run, other)
    before = contents(other)
    line = refused_line(capsys, ["export", str(run), str(other), "--overwrite"])
    assert "holds a training run" in line and str(other) in line
    assert contents(other) == before


def test_overwrite_refuses_a_folder_export_did_not_write(run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    line = refused_line(capsys, ["export", str(run), str(mine), "--overwrite"])
    assert "not written by `vlp export`" in line and EXPORT_MARKER in line
    assert contents(mine) == {"notes.txt": hashlib.sha256(b"my notes").hexdigest()}
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    assert "not written by `vlp export`" in refused_line(capsys, ["export", str(run), str(a_file), "--overwrite"])
    assert a_file.read_text() == "keep"


def test_overwrite_replaces_a_folder_export_wrote(run, tmp_path):
    out = tmp_path / "out"
    assert vlp_main(["export", str(run), str(out), "--format", "open_clip"]) == 0
    assert (out / EXPORT_MARKER).is_file()
    (out / "stale.txt").write_text("from before")
    assert vlp_main(["export", str(run), str(out), "--overwrite", "--format", "open_clip"]) == 0
    assert (out / EXPORT_MARKER).is_file() and not (out / "stale.txt").exists()
