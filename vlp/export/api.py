"""`export`: run dir / checkpoint / exported folder → open_clip folder (+ transformers files, + ONNX encoders) + model
card (+ push)."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator, Optional, Sequence

from safetensors import SafetensorError

from vlp import run_lock
from vlp.export.card import copy_pictures, model_card
from vlp.export.formats import (convert_transformers, open_clip_caveat, transformers_kind, write_open_clip,
                                write_transformers)
from vlp.export.layers import NotExportable
from vlp.run_dir import EXPORT_MARKER, RunDir
from vlp.write_errors import os_error, write_error

FORMATS = ("open_clip", "transformers", "onnx")
DEFAULT_FORMATS = ("open_clip", "transformers")  # onnx needs the optional extra: only when asked


def export(source, out_dir, formats: Optional[Sequence[str]] = None, overwrite: bool = False,
           license: str = "apache-2.0", push_to_hub: Optional[str] = None, private: bool = True,
           revision: Optional[str] = None, weights: str = "raw", log=print) -> dict:
    """Write the export; open_clip is always written, transformers when asked or (`formats=None`) when expressible,
    onnx (OUT_DIR/onnx: vlp.export.onnx_encoders) when asked.

    `weights`: "raw" or "ema" (the run's moving average; the model card says which), as in `load_pretrained`.
    Returns {"out_dir", "formats" (written), "skipped" (format → reason), "commit_url" (when pushed)}.
    Raises NotExportable when transformers is asked for explicitly and cannot express the model, ValueError when
    `out_dir` would replace (part of) the source, MissingExtra when onnx is asked for without the onnx packages.
    """
    from vlp.models import load_pretrained

    out_dir = Path(out_dir)
    wanted = set(formats) if formats is not None else set(DEFAULT_FORMATS)
    if not wanted <= set(FORMATS):
        raise ValueError(f"formats must be among {FORMATS}, got {sorted(wanted)}")
    if "onnx" in wanted:
        from vlp.export.onnx_encoders import require_onnx

        require_onnx()
    _refuse_live_run(out_dir)
    _refuse_overlap(Path(source), out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite (overwrite=True) to replace it")
        _refuse_replacing(out_dir)
    model, _, tokenizer, info = load_pretrained(source, weights=weights)
    converted, skipped = None, {}
    if "transformers" in wanted:
        try:
            converted = convert_transformers(model, tokenizer)
        except NotExportable as e:
            if formats is not None:
                raise
            skipped["transformers"] = str(e)
            log(f"transformers format skipped: {e}")
    caveat = open_clip_caveat(model)
    if caveat:
        log(caveat)
    written = ["open_clip"] + (["transformers"] if converted else []) + (["onnx"] if "onnx" in wanted else [])
    staging = out_dir.parent / f".{out_dir.name}.exporting"
    with _whole_or_not_at_all(out_dir, staging):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write_open_clip(model, tokenizer, staging)
        (staging / EXPORT_MARKER).write_text("written by `vlp export`, which may replace this folder (--overwrite)\n")
        if converted:
            write_transformers(converted, model, staging)
        if "onnx" in wanted:
            from vlp.export.onnx_encoders import write_onnx

            write_onnx(model, tokenizer, staging)
        card = model_card(info, license, push_to_hub, written, transformers_kind(model), copy_pictures(info, staging))
        (staging / "README.md").write_text(card)
        _replace(out_dir, staging)
    log(f"exported {', '.join(written)} to {out_dir}")
    result = {"out_dir": str(out_dir), "formats": written, "skipped": skipped}
    if push_to_hub:
        from vlp.export.push import push_folder

        result["commit_url"] = push_folder(out_dir, push_to_hub, private, revision)
        log(f"pushed to {push_to_hub}: {result['commit_url']}")
    return result


@contextlib.contextmanager
def _whole_or_not_at_all(out_dir: Path, staging: Path) -> Iterator[None]:
    """An OS error while the export is staged or put in place (a full disk, a read-only folder) removes what was
    staged, leaves `out_dir` as it was, and is raised as one line (WriteError)."""
    try:
        yield
    except (OSError, SafetensorError) as e:
        error = os_error(e)
        if error is None:
            raise
        shutil.rmtree(staging, ignore_errors=True)
        raise write_error(error, f"the export to {out_dir}", f"{out_dir} is as it was",
                          "run `vlp export` again") from None


def _replace(out_dir: Path, staging: Path) -> None:
    """`staging` becomes `out_dir`; a folder there is removed only once the export is in its place."""
    previous = staging.with_name(f".{out_dir.name}.replaced")
    shutil.rmtree(previous, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(previous)
    try:
        staging.rename(out_dir)
    except OSError:
        if previous.exists():
            previous.rename(out_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _refuse_replacing(out_dir: Path) -> None:
    """`--overwrite` deletes `out_dir`: only a folder an export wrote (it holds EXPORT_MARKER) may go, never a run."""
    if RunDir.of(out_dir) is not None or RunDir(out_dir).checkpoints.is_dir():
        raise FileExistsError(f"{out_dir} holds a training run; --overwrite replaces only a folder `vlp export` wrote: "
                              "export elsewhere")
    if not (out_dir / EXPORT_MARKER).is_file():
        raise FileExistsError(f"{out_dir} was not written by `vlp export` (it has no {EXPORT_MARKER}); --overwrite "
                              "replaces only such folders: export elsewhere or empty it first")


def _refuse_live_run(out_dir: Path) -> None:
    """Nothing is written into a run, or inside one, that another process is training (vlp.run_lock)."""
    for folder in (out_dir, *out_dir.resolve().parents):
        holder = run_lock.holder(RunDir(folder))
        if holder:
            raise run_lock.RunLocked(f"{folder} is in use by {holder}; export when it has finished, or elsewhere")


def _refuse_overlap(source: Path, out_dir: Path) -> None:
    """Replacing `out_dir` deletes it: it must not be, contain or lie inside the source (the whole run when the
    source is a run or one of its checkpoints), except RUN_DIR/export, where training itself exports."""
    run = RunDir.of(source)
    whole = run.root if run else source
    protected, out = whole.resolve(), out_dir.resolve()
    if run is not None and out == run.export.resolve():
        return
    if out == protected or out in protected.parents or protected in out.parents:
        raise ValueError(f"{out_dir} is, contains or lies inside the source {whole}; export elsewhere "
                         "(the run's own export folder is allowed)")
