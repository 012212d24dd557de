"""A disk that refuses a write (full: ENOSPC; read-only: EROFS), at any of the writes of a checkpoint or an export,
costs nothing: one line says what happened, what is kept and what to do; no temporary file is left; the last
complete checkpoint (or the previous export) is intact and loads. A run directory that vanishes mid-run is said so
and never silently recreated."""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vlp
from helpers.processes import child_env, forked_run
from helpers.train_support import SoloAccelerator, make_shards, recipe_dict, state_dicts_equal, write_recipe
from helpers.write_faults import FAILING_WRITER, FULL_TMPFS, FailingWrites
from vlp.cli import main
from vlp.run_dir import Checkpoint, RunDir
from vlp.train import components as c
from vlp.train import loop
from vlp.train.state import Checkpointer
from vlp.write_errors import WriteError

pytestmark = pytest.mark.faults

CHECKPOINT_WRITES = 17  # of `Checkpointer.save` for the components below: mkdir, 4 files, fsyncs, state, renames
# what each refused write is called, and what to do about it
REFUSED = {errno.ENOSPC: ("no space left on device", "free space"),
           errno.EROFS: ("read-only file system", "make it writable (or move the folder to a writable disk)")}


class Trainables:
    """A small model with its EMA, optimizer, progress and generators, checkpointed as the trainer does."""

    def __init__(self, run: RunDir) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 3)
        self.optimizer = torch.optim.AdamW(self.model.parameters())
        self.step()
        components = {"model": c.ModelWeights(self.model), "ema": c.EMA(self.model, 0.9),
                      "optimizer": c.OptimizerState(self.model, self.optimizer), "progress": c.Progress(world_size=1),
                      "rng": c.Generators()}
        self.checkpointer = Checkpointer(run, SoloAccelerator(), components, keep=3)

    def step(self) -> dict[str, torch.Tensor]:
        self.model(torch.randn(2, 4)).sum().backward()
        self.optimizer.step()
        return {k: v.clone() for k, v in self.model.state_dict().items()}


def test_the_fault_injection_sees_every_write_of_a_checkpoint(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    trainables = Trainables(run)
    trainables.checkpointer.save(50)
    seen = FailingWrites(monkeypatch, run.root, None, errno.ENOSPC)
    trainables.checkpointer.save(60)
    assert len(seen.writes) == CHECKPOINT_WRITES, seen.writes


@pytest.mark.parametrize("code", sorted(REFUSED))
@pytest.mark.parametrize("nth", range(CHECKPOINT_WRITES))
def test_a_refused_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, nth, code):
    run = RunDir(tmp_path / "run")
    trainables = Trainables(run)
    weights = {50: {k: v.clone() for k, v in trainables.model.state_dict().items()}}
    trainables.checkpointer.save(50)
    weights[60] = trainables.step()
    with monkeypatch.context() as patch:
        FailingWrites(patch, run.root, nth, code)
        with pytest.raises(WriteError) as refused:
            trainables.checkpointer.save(60)
    newest = run.list_checkpoints()[0]  # step 60 is complete where only its pointer or a directory sync failed
    step = Checkpoint(newest).step
    happened, fix = REFUSED[code]
    assert str(refused.value) == (f"{happened} writing checkpoint step 60 to {run.checkpoints}; the last complete "
                                  f"checkpoint is step {step}; {fix} and run with `--resume latest`")
    assert run.temp_files() == []
    path, state = run.resume_from("latest")
    assert path == newest
    restored = Trainables(run)
    restored.checkpointer.restore(path, state)
    assert state_dicts_equal(restored.model.state_dict(), weights[step])


def _recipe(tmp_path, duration="6 steps", **train):
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), tmp_path / "runs",
                         duration=duration, checkpoint_every="2 steps", **train)
    return write_recipe(tmp_path / "run.yaml", recipe), tmp_path / "runs" / "run"


def _logged_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("code", sorted(REFUSED))
def test_vlp_train_on_a_refusing_disk_says_it_in_one_line_and_resumes(tmp_path, monkeypatch, capsys, code):
    recipe, run_dir = _recipe(tmp_path)
    checkpoints = run_dir / "checkpoints"
    with monkeypatch.context() as patch:
        real_save = Checkpointer.save

        def save(self, step):  # the disk refuses from the checkpoint of step 4 on
            if step == 4:
                FailingWrites(patch, self.run.root, 1, code)
            return real_save(self, step)

        patch.setattr(Checkpointer, "save", save)
        assert main(["train", str(recipe)]) == 1
    happened, fix = REFUSED[code]
    assert capsys.readouterr().err.splitlines() == [
        f"error: {happened} writing checkpoint step 4 to {checkpoints}; the last complete checkpoint is step 2; "
        f"{fix} and run with `--resume latest`"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000002"]
    assert main(["train", str(recipe), "--resume", "latest"]) == 0
    assert _logged_steps(run_dir) == [2, 4, 6]


def test_a_run_directory_that_vanishes_is_said_and_never_recreated(tmp_path, monkeypatch, capsys):
    recipe, run_dir = _recipe(tmp_path, log_every=100)
    real_step = loop._step

    def step(run, batch):  # the folder goes (removed, or its disk unmounted) after step 3
        values = real_step(run, batch)
        if run.progress.step == 3:
            shutil.rmtree(run_dir)
        return values

    monkeypatch.setattr(loop, "_step", step)
    assert main(["train", str(recipe)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: folder gone (removed, or its disk unmounted) writing checkpoint step 4 to {run_dir / 'checkpoints'}; "
        f"{run_dir} no longer exists; restore it and run with `--resume latest`"]
    assert not run_dir.exists()


@pytest.mark.distributed
@pytest.mark.parametrize("rank, nth", [(1, 0), (0, 3)], ids=["rank1-write0", "rank0-write3"])
def test_a_write_refused_on_one_fsdp_rank_stops_both_in_one_line(tmp_path, rank, nth):
    """Under FSDP every rank writes its shards: a full disk under any one of them stops both ranks after the same
    step, exit status 1, with one line, no temporary file, and the previous checkpoint as the newest."""
    recipe, run_dir = _recipe(tmp_path, strategy="fsdp", ema_decay=0.9)
    failed = forked_run(["-c", FAILING_WRITER, str(rank), str(nth), "4", str(errno.ENOSPC), str(recipe)],
                        processes=2, timeout=300)
    assert failed.returncode != 0
    checkpoints = run_dir / "checkpoints"
    errors = [line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("error: ")]
    assert errors == [f"error: no space left on device writing checkpoint step 4 to {checkpoints}; the last "
                      "complete checkpoint is step 2; free space and run with `--resume latest`"], failed.stderr[-3000:]
    assert f'File "{Path(vlp.__file__).parent}' not in failed.stderr  # no rank printed a traceback
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000002"]


EXPORT_WRITES = 11  # of `export` (open_clip and transformers): staging folder, 8 files, 2 renames


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from helpers.runs import make_run_dir

    return make_run_dir(tmp_path_factory.mktemp("write_errors"))[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _quiet(*_) -> None:
    pass


def test_the_fault_injection_sees_every_write_of_an_export(trained_run, tmp_path, monkeypatch):
    from vlp.export.api import export

    export(trained_run, tmp_path / "out", log=_quiet)
    seen = FailingWrites(monkeypatch, tmp_path, None, errno.ENOSPC)
    export(trained_run, tmp_path / "out", overwrite=True, log=_quiet)
    assert len(seen.writes) == EXPORT_WRITES, seen.writes


@pytest.mark.parametrize("code", sorted(REFUSED))
@pytest.mark.parametrize("nth", range(EXPORT_WRITES))
def test_a_refused_export_write_is_one_line_and_leaves_the_previous_export(trained_run, tmp_path, monkeypatch, nth,
                                                                            code):
    from vlp.export.api import export
    from vlp.models import load_pretrained

    out = tmp_path / "out"
    export(trained_run, out, log=_quiet)
    before = _files(out)
    with monkeypatch.context() as patch:
        FailingWrites(patch, tmp_path, nth, code)
        with pytest.raises(WriteError) as refused:
            export(trained_run, out, overwrite=True, log=_quiet)
    happened, fix = REFUSED[code]
    assert str(refused.value) == f"{happened} writing the export to {out}; {out} is as it was; {fix} and run " \
                                 "`vlp export` again"
    assert _files(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]
    load_pretrained(out)


def test_vlp_export_on_a_full_disk_says_it_in_one_line(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    FailingWrites(monkeypatch, tmp_path, 2, errno.ENOSPC)  # the weights
    assert main(["export", str(trained_run), str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: no space left on device writing the export to {out}; {out} is as it was; free space and run "
        "`vlp export` again"]
    assert list(tmp_path.iterdir()) == []


def test_a_real_disk_filling_up_mid_checkpoint_is_one_line_and_the_run_resumes(tmp_path):
    """A tmpfs one and a half checkpoints large: the second checkpoint meets a real ENOSPC (from safetensors' own
    writer). Needs a mount namespace (`unshare -rm`: root, or unprivileged user namespaces)."""
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot make a mount namespace to mount a tmpfs in (unshare -rm: {probe.stderr.strip()})")
    sized, _ = _recipe(tmp_path / "sized", duration="2 steps")
    assert main(["train", str(sized)]) == 0
    checkpoint = tmp_path / "sized" / "runs" / "run" / "checkpoints" / "step_00000002"
    size = sum(p.stat().st_size for p in checkpoint.iterdir()) * 3 // 2
    mount = tmp_path / "disk"
    mount.mkdir()
    recipe = recipe_dict(make_shards(tmp_path / "shards", shards=1, per_shard=16), mount, duration="6 steps",
                         checkpoint_every="2 steps")
    path = write_recipe(tmp_path / "run.yaml", recipe)
    done = subprocess.run(["unshare", "-rm", sys.executable, "-c", FULL_TMPFS, str(mount), str(size), str(path),
                           str(mount / "run")], env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    if "unmountable" in report:
        pytest.skip(f"cannot mount a tmpfs here: {report['unmountable']}")
    assert report["status"] == 1
    assert report["errors"] == [f"error: no space left on device writing checkpoint step 4 to {mount / 'run'}"
                                "/checkpoints; the last complete checkpoint is step 2; free space and run with "
                                "`--resume latest`"]
    assert report["left"] == ["latest", "step_00000002"] and report["newest"] == "step_00000002"
    assert report["resumed"] == 0 and report["steps"] == [2, 4, 6]
