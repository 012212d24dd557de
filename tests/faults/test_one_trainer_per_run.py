"""One trainer per run directory: while a trainer (a real process, paused mid-run) holds its run, a second trainer,
a second launcher or an export into the run is refused in one line naming the live process, and the run goes on
untouched. The lock dies with its holder: after a SIGKILL the run resumes with nothing cleaned up."""
from __future__ import annotations

import json
import os
import signal
import socket

import pytest

from helpers.paused_trainer import PausedTrainer
from helpers.processes import forked_run
from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main

pytestmark = pytest.mark.faults


def _recipe(tmp_path):
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration="6 steps", checkpoint_every="2 steps")
    return write_recipe(tmp_path / "run.yaml", recipe), tmp_path / "runs" / "run"


def _logged_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _contents(run_dir) -> tuple[str, list[str]]:
    return (run_dir / "metrics.jsonl").read_text(), sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def _refusal_names(err: str, trainer: PausedTrainer) -> str:
    """The one line of `err`, checked to name the live trainer."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"(pid {trainer.pid} on host {socket.gethostname()})" in lines[0], lines[0]
    return lines[0]


def test_a_second_trainer_or_an_export_into_a_live_run_is_refused_naming_it(tmp_path, capsys):
    recipe, run_dir = _recipe(tmp_path)
    trainer = PausedTrainer(tmp_path / "first", 4, recipe)
    try:
        trainer.wait_paused()
        before = _contents(run_dir)
        for args in (["--resume", "latest"], []):
            capsys.readouterr()
            assert main(["train", str(recipe), *args]) == 1
            line = _refusal_names(capsys.readouterr().err, trainer)
            assert f"{run_dir} is in use by vlp train" in line and "already holds a run" not in line
        for out in (run_dir / "export", run_dir):
            assert main(["export", str(run_dir), str(out), "--overwrite"]) == 1
            assert "export when it has finished" in _refusal_names(capsys.readouterr().err, trainer)
        assert _contents(run_dir) == before
        assert not (run_dir / "export").exists()
        assert trainer.go() == 0, trainer.output()
    finally:
        trainer.stop()
    assert _logged_steps(run_dir) == [2, 4, 6]


def test_a_killed_trainer_leaves_nothing_to_clean_up(tmp_path):
    recipe, run_dir = _recipe(tmp_path)
    trainer = PausedTrainer(tmp_path / "first", 4, recipe)
    try:
        trainer.wait_paused()
        os.kill(trainer.pid, signal.SIGKILL)
    finally:
        status = trainer.stop()
    assert status == -signal.SIGKILL
    assert (run_dir / ".vlp-lock").is_file()  # left behind, and held by no one
    assert main(["train", str(recipe), "--resume", "latest"]) == 0
    assert _logged_steps(run_dir) == [2, 4, 6]


@pytest.mark.distributed
def test_a_second_launcher_is_refused_by_every_process_in_one_line(tmp_path):
    recipe, run_dir = _recipe(tmp_path)
    trainer = PausedTrainer(tmp_path / "first", 4, recipe)
    try:
        trainer.wait_paused()
        second = forked_run(["-m", "vlp", "train", str(recipe)], processes=2)
        output = second.stdout + second.stderr
        assert second.returncode != 0, output
        _refusal_names("\n".join(line for line in output.splitlines() if line.startswith("error: ")), trainer)
        assert trainer.go() == 0, trainer.output()
    finally:
        trainer.stop()
    assert _logged_steps(run_dir) == [2, 4, 6]
