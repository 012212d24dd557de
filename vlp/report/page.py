"""The run report: one HTML file with every image inlined as a data URI, so it opens anywhere without the run dir.

Sections: summary and links (checkpoints, export, raw files), evaluation (suite table, every metric of the newest
evaluation), the newest evaluation's pictures, training and eval curves, the bad-sample counts and the recipe
(credentials redacted). A script at the end marks the body `data-images="LOADED/TOTAL"` once the page has loaded,
so a headless browser can tell that every image decoded.
"""
from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

from vlp.run_dir import RunDir

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
img{box-sizing:border-box;max-width:100%;border:1px solid #eee;margin:.3em 0}
.pics img{max-width:49%;vertical-align:top;margin-right:.5%}
.muted{color:#777}.wide{overflow-x:auto}"""
SCRIPT = """window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", loaded + "/" + images.length);
});"""


def write_report(run_dir: str | Path, out: Optional[str | Path] = None) -> Path:
    """Write the report (default RUN_DIR/report.html); returns its path."""
    run = RunDir(run_dir)
    if not run.recipe.is_file():
        raise FileNotFoundError(f"{run_dir}: no {run.recipe.name} (not a vlp run directory?)")
    path = Path(out) if out else run.report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(run, path.parent))
    return path


def report_html(run: RunDir, where: Path) -> str:
    """The page for `run`; links are relative to `where`, the folder the page is written to."""
    title = html.escape(run.root.resolve().name)
    sections = [f"<h1>{title}</h1>", _summary(run, where), _evaluation(run), _pictures(run), _curves(run),
                _bad_samples(run), _recipe(run)]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vlp report: {title}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(sections) +
            f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def _summary(run: RunDir, where: Path) -> str:
    found = run.newest_good()
    items = []
    if found:
        path, state = found
        state = state.get("progress", {})
        items.append(f"trained {state.get('step', '?')} steps, {state.get('samples_seen', '?')} samples; newest "
                     f"checkpoint {_link(path, where)}")
    else:
        items.append("no complete checkpoint")
    items += [f"{len(run.list_checkpoints())} checkpoint(s) in {_link(run.checkpoints, where)}"]
    if run.export.is_dir():
        items.append(f"export: {_link(run.export, where)}")
    items += [f"{p.name}: {_link(p, where)}" for p in (run.metrics, run.eval_results, run.bad_samples) if p.exists()]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _recipe(run: RunDir) -> str:
    from vlp.recipe.redact import redact_text

    text = redact_text(run.recipe.read_text())  # the page may be shared: no shard credentials
    return f"<h2>Recipe</h2><details><summary>recipe.yaml (redacted)</summary><pre>{html.escape(text)}</pre>" \
           "</details>"


def _curves(run: RunDir) -> str:
    from vlp.train.plot import plot_run

    if not run.metrics.is_file():
        return "<h2>Training curves</h2><p class=muted>no metrics logged</p>"
    with tempfile.TemporaryDirectory() as tmp:
        files = plot_run(run.root, tmp)
        train = "".join(_image(p) for p in files if not p.name.startswith("eval_"))
        evals = "".join(_image(p) for p in files if p.name.startswith("eval_"))
    return (f"<h2>Evaluation curves</h2>{evals}" if evals else "") + f"<h2>Training curves</h2>{train}"


def _evaluation(run: RunDir) -> str:
    from vlp.evaluate.table import newest, suite_table

    records = json.loads(run.eval_results.read_text()) if run.eval_results.is_file() else []
    if not records:
        return "<h2>Evaluation</h2><p class=muted>no evaluation recorded</p>"
    latest = newest(records)
    steps = sorted({r.get("step") for r in latest if r.get("step") is not None})
    when = f" (step {', '.join(map(str, steps))})" if steps else ""
    columns, rows = suite_table(records)
    names = list(dict.fromkeys(m for r in latest for m in r["metrics"]))
    every = [[name] + [r["metrics"].get(name) for r in latest] for name in names]
    return (f"<h2>Evaluation{when}</h2><p>Each set's headline metric (zero-shot: top-1, retrieval: mean R@1, "
            f"binding: accuracy) and main metrics, the last row averaging each metric over its sets (the suite table "
            f"of <code>vlp eval</code>):</p>{_table(columns, rows)}"
            f"<details><summary>every metric</summary>{_table(['metric'] + [r['dataset'] for r in latest], every)}"
            "</details>")


def _pictures(run: RunDir) -> str:
    steps = run.picture_steps()
    if not steps:
        return "<h2>Pictures</h2><p class=muted>no evaluation pictures</p>"
    parts = [f"<h2>Pictures of the newest evaluation ({html.escape(steps[-1].name)})</h2>"]
    for folder in sorted(p for p in steps[-1].iterdir() if p.is_dir()):
        images = "".join(_image(p) for p in sorted(folder.glob("*.png")))
        parts.append(f"<h3>{html.escape(folder.name)}</h3><div class=pics>{images}</div>")
    return "".join(parts)


def _bad_samples(run: RunDir) -> str:
    if not run.bad_samples.is_file():
        return "<h2>Bad samples</h2><p class=muted>not recorded</p>"
    counts = json.loads(run.bad_samples.read_text()).get("all_epochs", {})
    if not counts:
        return "<h2>Bad samples</h2><p>none skipped</p>"
    return "<h2>Bad samples (all epochs)</h2>" + _table(["reason", "samples skipped"], sorted(counts.items()))


def _table(columns: list, rows: list) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<div class=wide><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _cell(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"<td>{html.escape('' if value is None else str(value))}</td>"
    return f"<td class=n>{value:.4f}</td>" if isinstance(value, float) else f"<td class=n>{value}</td>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _link(target: Path, where: Path) -> str:
    href = os.path.relpath(target, where)
    return f'<a href="{html.escape(href)}">{html.escape(href)}</a>'
