"""bench/sharded_memory.py on a tiny model (`--smoke`): 2 gloo processes, DDP vs vlp's FSDP2 `shard_model`; each FSDP
rank holds about half of DDP's parameters + gradients + optimizer state, as the stated formula predicts."""
import json
from pathlib import Path

from helpers.processes import forked_run

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_fsdp_holds_half_of_ddp_per_rank(tmp_path):
    out = tmp_path / "summary.json"
    done = forked_run([str(ROOT / "bench" / "sharded_memory.py"), "--smoke", "--json", str(out)], timeout=600,
                      cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    ranks = {(r["strategy"], r["rank"]): r for r in summary["ranks"]}
    assert set(ranks) == {(s, r) for s in ("ddp", "fsdp") for r in (0, 1)} and summary["world"] == 2
    ddp, fsdp = ranks["ddp", 0], ranks["fsdp", 0]
    # DDP replicates everything: each rank holds the whole model's P + G + O, which is what FSDP shards.
    whole = fsdp["full_sharded_pgo"] + fsdp["leftover_pgo"]
    assert ddp["pgo"] == ranks["ddp", 1]["pgo"] == ddp["leftover_pgo"] == whole
    assert fsdp["leftover_pgo"] < 0.001 * ddp["pgo"]  # only the logit scale stays replicated
    for r in summary["ranks"]:
        assert r["grads"] == r["params"] > 0 and 2 * r["params"] <= r["optimizer"] < 2.01 * r["params"]  # AdamW
        assert r["rss_peak"] > r["rss_baseline"] > 0
    for rank in (0, 1):
        assert ranks["fsdp", rank]["pgo"] < 0.51 * ranks["ddp", rank]["pgo"]
    assert summary["pgo_ratio"] <= summary["target"] == 0.6 and summary["target_met"]
    assert abs(summary["formula_error"]) < 0.01 and summary["gathered_block_bound"] > 0
    assert "| fsdp | 1 |" in done.stdout and "target <= 0.6: met" in done.stdout
