"""The components of training state, each a torch `Stateful` (`state_dict()` / `load_state_dict()`) that the trainer
registers in one block (vlp.train.loop) and the one checkpointer (vlp.train.state) writes and reads.

A component's state_dict holds tensors at its top level and JSON values beside them. Two optional class attributes
say how it is stored: `per_process` (every process keeps its own: the random generators) and `consolidated` (sharded
tensors are also written whole, for eval and export: the weights). An optional `after_step(applied)` is called after
every optimizer step with a 0-d bool device tensor, False when the step was skipped as non-finite. `load_state_dict`
gets `{}` when the checkpoint holds nothing of the component; each says what it then keeps.

A plugin adds state to every run with `register_component(name)`: its factory gets the recipe and the training data.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.checkpoint.stateful import Stateful

from vlp.train.fsdp_wrap import is_sharded, laid_out_as
from vlp.train.optim import torch_optimizer  # DCP's state-dict API steps and reads the unwrapped optimizer

ComponentFactory = Callable[[Any, Any], Stateful]  # (recipe, training data) → a component
_PLUGIN_COMPONENTS: dict[str, ComponentFactory] = {}
VLP_COMPONENTS = ("model", "ema", "optimizer", "scheduler", "scaler", "progress", "objective", "rng")  # the trainer's


def register_component(name: str) -> Callable[[ComponentFactory], ComponentFactory]:
    """Decorator: every training run registers `factory(recipe, data)` under `name`, saved and restored with the rest
    (`name.safetensors` for its tensors, state.json's `name` for the rest)."""
    def decorate(factory: ComponentFactory) -> ComponentFactory:
        if name in _PLUGIN_COMPONENTS or name in VLP_COMPONENTS:
            raise ValueError(f"training component {name!r} is registered already; choose another name")
        _PLUGIN_COMPONENTS[name] = factory
        return factory
    return decorate


def plugin_components(recipe, data) -> dict[str, Stateful]:
    return {name: factory(recipe, data) for name, factory in _PLUGIN_COMPONENTS.items()}


@dataclass
class Progress:
    step: int = 0  # optimizer iterations done (skipped non-finite steps included)
    epoch: int = 0
    batches_in_epoch: int = 0  # batches of `epoch` already consumed: data.batches(epoch, skip=this) resumes
    tail_start: Optional[int] = None  # where `epoch`'s tail starts, once a batch told (`vlp.data.epoch`)
    samples_seen: int = 0  # global samples
    nonfinite_in_row: int = 0  # the non-finite counter's host copy (vlp.train.nonfinite keeps it on the device)
    nonfinite_total: int = 0
    bad_samples: dict[str, dict[str, int]] = field(default_factory=dict)  # global skipped samples: epoch → kind → n
    world_size: int = 1

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batches_in_epoch = 0
        self.tail_start = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # world_size stays this run's; `layouts`, what checkpoints before world-size-invariant data order recorded,
        # is needed no more
        for name in ({f.name for f in fields(self)} - {"world_size"}) & state.keys():
            setattr(self, name, state[name])


class EMA:
    """Exponential moving average of a model's floating-point weights: ema ← d·ema + (1−d)·w after each step."""
    consolidated = True

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, applied: torch.Tensor | bool = True) -> None:
        """`applied` (a device tensor, not read on the host) False leaves the average as it is: a skipped step."""
        current = model.state_dict()
        rate = (1.0 - self.decay) * applied
        for name, average in self.weights.items():
            average.lerp_(current[name].detach(), rate)

    def after_step(self, applied: torch.Tensor) -> None:
        self.update(self.model, applied)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not state:  # a run resumed with an EMA it did not keep before
            warnings.warn("the checkpoint has no EMA; the EMA restarts from the current weights", stacklevel=2)
            state = self.model.state_dict()
        for name, average in self.weights.items():  # full tensors (a ddp checkpoint) into sharded ones too
            average.copy_(laid_out_as(state[name], average))


class ModelWeights:
    """The weights of the unwrapped model: this rank's shards under FSDP2 (DCP's names), else its state_dict."""
    consolidated = True

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return get_model_state_dict(self.model) if is_sharded(self.model) else self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not is_sharded(self.model):
            self.model.load_state_dict(state)
            return
        current = get_model_state_dict(self.model)
        set_model_state_dict(self.model, {name: laid_out_as(value, current[name]) for name, value in state.items()})


class OptimizerState:
    """The optimizer's tensors flat ("<parameter>.<state name>"), with its param groups and scalars as JSON: keyed by
    parameter index (torch's state_dict), or under FSDP2 by parameter name (DCP's, this rank's shards)."""

    def __init__(self, model: torch.nn.Module, optimizer: Any):
        self.model, self.optimizer = model, torch_optimizer(optimizer)

    def state_dict(self) -> dict[str, Any]:
        sharded = is_sharded(self.model)
        tensors, structure = optimizer_to_flat(get_optimizer_state_dict(self.model, self.optimizer) if sharded
                                               else self.optimizer.state_dict())
        return {**tensors, **structure}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        structure = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        if any(isinstance(p, str) for group in structure["param_groups"] for p in group["params"]):
            # keyed by name (written sharded): DCP lays it out for this model, sharded or not. Not strict: a
            # parameter that never had a gradient has no optimizer state, in the checkpoint or here.
            set_optimizer_state_dict(self.model, self.optimizer, optimizer_from_flat(tensors, structure, str),
                                     options=StateDictOptions(strict=False))
        elif is_sharded(self.model):  # a ddp checkpoint resumed under fsdp
            self._load_full_by_index(optimizer_from_flat(tensors, structure))
        else:
            self.optimizer.load_state_dict(optimizer_from_flat(tensors, structure))

    def _load_full_by_index(self, saved: dict[str, Any]) -> None:
        """torch's full state_dict (keyed by parameter index) into the optimizer of a sharded model: re-keyed by
        parameter name, which DCP then cuts into this rank's shards."""
        names = {id(p): name for name, p in self.model.named_parameters()}
        order = [names[id(p)] for group in self.optimizer.param_groups for p in group["params"]]
        full = {"state": {order[index]: values for index, values in saved["state"].items()},
                "param_groups": [{**group, "params": [order[i] for i in group["params"]]}
                                 for group in saved["param_groups"]]}
        set_optimizer_state_dict(self.model, self.optimizer, full,
                                 options=StateDictOptions(full_state_dict=True, strict=False))


class SchedulerState:
    """The learning-rate schedule's position, as JSON (LambdaLR keeps None for its lambdas)."""

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler

    def state_dict(self) -> dict[str, Any]:
        return _plain(self.scheduler.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


class ScalerState:
    """fp16's loss scale and its growth counter; a checkpoint of a run without one leaves the scaler fresh."""

    def __init__(self, scaler: Any):
        self.scaler = scaler

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)


class Generators:
    """This process's random generators: torch (and CUDA) as tensors, python's and numpy's as JSON. On another world
    size the checkpointer restores none, and none is needed: every step reseeds (`loop._step_seed`) and the data's
    positions are global batch indices on any layout."""
    per_process = True

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        version, internal, gauss = random.getstate()
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state.update(python=[version, list(internal), gauss],
                     numpy=[name, keys.tolist(), int(pos), int(has_gauss), float(cached)])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            warnings.warn("the checkpoint has no generator state of this process: random draws differ from an "
                          "uninterrupted run", stacklevel=2)
            return
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---- optimizer state ↔ (tensors, JSON), without pickles ----

def optimizer_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors ("<param index>.<name>") and a JSON structure (everything else)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        scalars[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[str(index)][name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], structure: dict[str, Any], key: type = int) -> dict:
    """`key`: int for torch's state_dict (parameter indices), str for DCP's (parameter names, which hold dots)."""
    state: dict[Any, dict[str, Any]] = {key(i): dict(values) for i, values in structure["scalars"].items()}
    for flat, value in tensors.items():
        index, name = flat.rsplit(".", 1)
        state.setdefault(key(index), {})[name] = value
    return {"state": state, "param_groups": structure["param_groups"]}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value
