"""Tiled objective at scale (bench/gpu.py): the largest global batch whose softmax / sigmoid loss forward + backward
fits, vlp tiled vs OpenCLIP dense (ClipLoss / SigLipLoss), and their time ratio where both fit.

Each case is bench/loss_memory.py's `run_case` (fp32 unit features of dimension D, loss + backward, median step time,
peak = max_memory_allocated above the inputs), run in this process: B doubles from a start size until the case runs
out of GPU memory, reaches the cap, or its predicted time (4× the last: the work is O(B²)) would overrun the budget.
fp32 matrix products may use TF32 on both sides (torch.set_float32_matmul_precision("high")).
"""
from __future__ import annotations

import time

import loss_memory


def _is_oom(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def _case(impl: str, loss: str, batch: int, settings: dict) -> dict:
    import torch

    reps = settings["loss_reps"] if batch <= settings["loss_reps_until"] else 1
    cuda = settings["device"] == "cuda"
    try:
        result = loss_memory.run_case(impl, loss, batch, settings["loss_dim"], reps, settings["loss_tile"],
                                      settings["device"], torch.get_num_threads())
    except Exception as error:  # out of memory ends the ladder; so does any other error, kept for the report
        problem = {"oom": True} if _is_oom(error) else {"error": f"{type(error).__name__}: {str(error)[-500:]}"}
        result = {"impl": impl, "loss": loss, "batch": batch, **problem}
    if cuda:
        torch.cuda.empty_cache()
    # on CPU the peak is the process's ru_maxrss, which never falls: meaningful only for a fresh process per case
    result["peak_gib"] = result.pop("peak_bytes") / 2 ** 30 if cuda and "peak_bytes" in result else None
    return result


def _ladder(impl: str, loss: str, settings: dict, budget, deadline: float) -> list[dict]:
    cases, batch, estimate = [], settings["loss_start"], 1.0
    while batch <= settings["loss_max"]:
        what = f"{impl} {loss} B={batch}"
        skip = budget.overrun(estimate, what)
        if not skip and time.perf_counter() + estimate > deadline:
            skip = f"{what} needs ≈{estimate:.0f} s, more than this loss's share of the loss section's time"
        if skip:
            cases.append({"impl": impl, "loss": loss, "batch": batch, "skipped": skip})
            break
        started = time.perf_counter()
        cases.append(_case(impl, loss, batch, settings))
        print(f"  {cases[-1]}", flush=True)
        if "seconds" not in cases[-1]:
            break
        estimate = 4 * (time.perf_counter() - started)
        batch *= 2
    return cases


def _stop(cases: list[dict], cap: int) -> str:
    """Why a ladder ended: its last case."""
    last = cases[-1] if cases else {}
    if "oom" in last:
        return f"out of memory at B={last['batch']}"
    if "skipped" in last or "error" in last:
        return f"{'skipped' if 'skipped' in last else 'error'} at B={last['batch']}"
    return f"cap {cap} reached"


def summary(cases: list[dict], cap: int) -> dict:
    """Per loss: the largest batch each side ran and why it stopped, and vlp/OpenCLIP time at the largest batch
    both ran."""
    out = {}
    for loss in loss_memory.LOSSES:
        ran = {impl: {c["batch"]: c["seconds"] for c in cases if c["loss"] == loss and c["impl"] == impl
                      and "seconds" in c} for impl in ("openclip", "vlp")}
        both = sorted(set(ran["openclip"]) & set(ran["vlp"]))
        at = both[-1] if both else None
        out[loss] = {"largest_openclip": max(ran["openclip"], default=None), "largest_vlp": max(ran["vlp"], default=None),
                     "stopped_openclip": _stop([c for c in cases if (c["loss"], c["impl"]) == (loss, "openclip")], cap),
                     "stopped_vlp": _stop([c for c in cases if (c["loss"], c["impl"]) == (loss, "vlp")], cap),
                     "ratio_batch": at, "openclip_s": ran["openclip"].get(at), "vlp_s": ran["vlp"].get(at),
                     "time_ratio_vlp_over_openclip": ran["vlp"][at] / ran["openclip"][at] if both else None}
    return out


def section(settings: dict, budget) -> dict:
    import torch

    if settings["device"] == "cuda":
        torch.set_float32_matmul_precision("high")
    deadline = time.perf_counter() + min(settings["loss_seconds"], budget.left())
    cases = []
    losses = list(loss_memory.LOSSES)
    for index, loss in enumerate(losses):
        # an even share of what is left, so one loss's long ladder cannot starve the other
        share = time.perf_counter() + (deadline - time.perf_counter()) / (len(losses) - index)
        for impl in ("openclip", "vlp"):
            cases += _ladder(impl, loss, settings, budget, share)
    return {"cases": cases, "summary": summary(cases, settings["loss_max"]), "cap": settings["loss_max"], "dim": settings["loss_dim"], "tile": settings["loss_tile"],
            "dtype": "float32 features (TF32 matrix products on GPU)"}
