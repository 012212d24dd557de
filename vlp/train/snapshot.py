"""Trainer state ↔ (safetensors tensors, JSON) without pickles: optimizer, random generators, EMA weights."""
from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch


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


def optimizer_from_flat(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(values) for i, values in structure["scalars"].items()}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": structure["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """This process's generator states: torch (and CUDA) as tensors, python and numpy as JSON metadata."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": json.dumps([version, list(internal), gauss]),
            "numpy": json.dumps([name, keys.tolist(), int(pos), int(has_gauss), float(cached)])}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class EMA:
    """Exponential moving average of a model's floating-point weights: ema ← d·ema + (1−d)·w after each step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        current = model.state_dict()
        for name, average in self.weights.items():
            average.mul_(self.decay).add_(current[name].detach(), alpha=1.0 - self.decay)

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, average in self.weights.items():
            average.copy_(tensors[name])
