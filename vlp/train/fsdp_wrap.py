"""`train.strategy: fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) applied by vlp, not by accelerate.

Why not accelerate's FSDP2 plugin (`FullyShardedDataParallelPlugin(fsdp_version=2)`): accelerate 1.15 switches to
FSDP only for GPU-like multi-device types; with `Accelerator(cpu=True)` (gloo) it ignores the plugin and `prepare`
wraps the model in DDP, even one whose parameters are already DTensors (its MULTI_CPU branch has no DTensor check).
So `shard_model` shards the model right after it is built and before the optimizer is built (a resume then loads the
checkpoint into the shards), and the training loop passes only the optimizer to `accelerator.prepare`. The same path
runs on GPUs.

Layout: every transformer block of each tower is its own FSDP unit (all-gathered just before it runs, resharded
after), the rest (embeddings, projections, final norms) forms the root unit. Scalar parameters (the logit scale and
bias: `fully_shard` cannot shard 0-d tensors) stay replicated; their gradients are averaged over the ranks by a hook,
as DDP would. Gradients are reduce-scattered after every backward, so GradCache's micro-batches accumulate sharded
gradients (more communication than one reduction per step, but never a full gradient in memory).

Under `bf16` the policy computes in bfloat16 (parameters all-gathered in bf16), reduces gradients in float32 and
returns float32 features to the objective, instead of accelerate's autocast. fp16 is refused (`strategy_problem`):
its loss scaler does not handle sharded gradients. `bench/sharded_memory.py` imports `shard_model`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

_OWN_GROUP = False  # whether vlp created the default process group (one process), so must destroy it


def shard_model(model: torch.nn.Module, precision: str, device: torch.device) -> torch.nn.Module:
    """Shard `model` in place over all processes (FSDP2 per transformer block, then the root); returns it.

    Its parameters become DTensors holding this rank's 1/W of each; its `forward`, `encode_image` and
    `encode_text` all-gather what they use.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    _ensure_process_group(device)
    model.to(device)  # whole, as ddp's prepare does (the scalars FSDP leaves alone included); sharding frees the rest
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=_policy(precision, root=False))
    scalars = {p for p in model.parameters() if p.ndim == 0}
    fully_shard(model, mesh=mesh, mp_policy=_policy(precision, root=True), ignored_params=scalars)
    for p in scalars:
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(_average_gradient)
    for name in ("encode_image", "encode_text"):
        if hasattr(model, name):
            register_fsdp_forward_method(model, name)
    return model


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks of every tower's layer stack: the children of each outermost ModuleList/Sequential whose children
    all share one class defined outside torch.nn (open_clip's `resblocks`, timm's `blocks`, HF's `encoder.layer`)."""
    blocks: list[torch.nn.Module] = []
    _collect_stacks(model, blocks)
    return blocks


def _collect_stacks(module: torch.nn.Module, into: list[torch.nn.Module]) -> None:
    for child in module.children():
        if _is_block_stack(child):
            into.extend(child.children())
        else:
            _collect_stacks(child, into)


def _is_block_stack(module: torch.nn.Module) -> bool:
    if not isinstance(module, (torch.nn.ModuleList, torch.nn.Sequential)):
        return False
    kinds = {type(child) for child in module.children()}
    if len(kinds) != 1:
        return False
    kind = kinds.pop()
    return not kind.__module__.startswith("torch.nn") and any(True for _ in module.parameters())


def _policy(precision: str, root: bool):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if precision != "bf16":
        return MixedPrecisionPolicy()
    # float32 features out of the root: the objective runs in float32, as after accelerate's autocast
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                output_dtype=torch.float32 if root else None)


def _average_gradient(param: torch.Tensor) -> None:
    # Linear in the accumulated gradient, so repeated backwards (GradCache) still average correctly.
    dist.all_reduce(param.grad, op=dist.ReduceOp.AVG)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(model, "_orig_mod", model), FSDPModule)


def replicated(value: Any) -> Any:
    """A DTensor (a gradient norm: already replicated on every rank) as a plain tensor; anything else as it is."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def laid_out_as(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A full tensor laid out as `like`: this rank's shard when `like` is a DTensor (cut locally, no communication);
    a DTensor (already laid out) as it is."""
    from torch.distributed.tensor import distribute_tensor

    if not isinstance(like, DTensor) or isinstance(full, DTensor):
        return full
    return distribute_tensor(full.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def strategy_problem(strategy: str, precision: str, compiles: bool, evaluates: bool) -> Optional[tuple[str, str]]:
    """(recipe key, one-line reason) when `train.strategy` cannot run with the rest of the recipe, else None."""
    if strategy != "fsdp":
        return None
    if precision == "fp16":
        return "train.precision", ("fp16 is not supported with train.strategy fsdp (its loss scaler does not "
                                   "unscale sharded gradients); use bf16 or no")
    if compiles:
        return "train.compile", "train.compile with train.strategy fsdp is not supported yet; set compile: false"
    if evaluates:
        return "eval.datasets", ("in-training evaluation with train.strategy fsdp is not supported yet (rank 0 alone "
                                 "cannot run the sharded model); remove eval.datasets and run vlp eval on the run")
    return None


def _ensure_process_group(device: torch.device) -> None:
    """FSDP needs a process group; a single process (accelerate starts none) gets one of its own: a world of 1."""
    global _OWN_GROUP
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    _OWN_GROUP = True


def release_process_group() -> None:
    """Destroy the process group `shard_model` created for a single process (never one a launcher started)."""
    global _OWN_GROUP
    if _OWN_GROUP and dist.is_initialized():  # accelerate's end_training may have destroyed it already
        dist.destroy_process_group()
        _OWN_GROUP = False
