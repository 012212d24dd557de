"""Published model folders as `model.init_checkpoint`: open_clip's `hf-hub:` layout and transformers' CLIPModel
and SiglipModel (mapped by vlp.models.from_hf_clip / from_hf_siglip).

The recipe names the architecture as always (`model.arch` / `model.config`), so a run dir's recipe alone rebuilds
its model; the folder's must be the same architecture (vlp.models.architecture), else a one-line error lists the
differences. `published_config(folder)` is the folder's architecture as a `model.config` to put in the recipe.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from huggingface_hub import constants

from vlp.models.checkpoints import EXPORT_CONFIG, EXPORT_WEIGHTS, first_few, load_state, read_state_dict

HF_CONFIG, HF_WEIGHTS = constants.CONFIG_NAME, constants.SAFETENSORS_SINGLE_FILE  # transformers' folder layout
OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"  # read only as tensors (torch.load weights_only)
HF_KINDS = {"clip": "hf_clip", "siglip": "hf_siglip"}  # config.json model_type → kind
HF_MODELS = {"hf_clip": "CLIPModel", "hf_siglip": "SiglipModel"}  # kind → the transformers class, for messages


def published_kind(folder: Path) -> Optional[str]:
    """"open_clip", "hf_clip" or "hf_siglip" from the folder's files; None for anything else (a run dir, a file).

    open_clip's config comes first: vlp's exports hold both layouts, and their open_clip weights need no mapping.
    """
    if not folder.is_dir():
        return None
    if (folder / EXPORT_CONFIG).is_file():
        return "open_clip"
    if not ((folder / HF_CONFIG).is_file() and (folder / HF_WEIGHTS).is_file()):
        return None
    model_type = json.loads((folder / HF_CONFIG).read_text()).get("model_type")
    if model_type not in HF_KINDS:
        raise ValueError(f"{folder / HF_CONFIG}: model_type {model_type!r}; vlp starts from transformers folders of "
                         f"CLIPModel ('clip') and SiglipModel ('siglip') only")
    return HF_KINDS[model_type]


def published_config(folder) -> dict:
    """The open_clip model config of a published folder (open_clip's own, or CLIPModel's/SiglipModel's equivalent)."""
    folder = Path(folder)
    kind = published_kind(folder)
    if kind == "open_clip":
        config = json.loads((folder / EXPORT_CONFIG).read_text())
        if "model_cfg" not in config:
            raise ValueError(f"{folder / EXPORT_CONFIG}: no model_cfg")
        return config["model_cfg"]
    if kind in HF_MODELS:
        try:
            return _hf_config(folder, kind)
        except ValueError as e:
            raise ValueError(f"{folder}: {HF_MODELS[kind]} {e}") from None
    raise ValueError(f"{folder}: not a published folder ({EXPORT_CONFIG}, or {HF_CONFIG} + {HF_WEIGHTS})")


def _hf_config(folder: Path, kind: str) -> dict:
    if kind == "hf_clip":
        from transformers import CLIPConfig

        from vlp.models.from_hf_clip import open_clip_config

        return open_clip_config(CLIPConfig.from_pretrained(str(folder)))
    from transformers import SiglipConfig

    from vlp.models import from_hf_siglip

    return from_hf_siglip.open_clip_config(SiglipConfig.from_pretrained(str(folder)), folder)


def load_published(model: torch.nn.Module, folder: Path) -> None:
    """Load the folder's weights into `model`, an open_clip tower of the same architecture."""
    from vlp.models.architecture import differences  # on use: it imports open_clip, slow to import

    config = published_config(folder)
    own = getattr(model, "open_clip_config", None)
    if own is None:
        raise ValueError(f"{folder}: a published folder initialises open_clip towers only, not "
                         f"{type(model).__name__}")
    diffs = differences(config, own)
    if diffs:
        raise ValueError(f"model.init_checkpoint {folder}: its architecture differs from the recipe's (folder vs "
                         f"recipe) at {first_few(diffs, 3)}; set model.config to vlp.models.published_config(folder)")
    load_state(model, _open_clip_state(folder, config), folder)


def _open_clip_state(folder: Path, config: dict) -> dict[str, torch.Tensor]:
    kind = published_kind(folder)
    if kind == "open_clip":
        weights = folder / EXPORT_WEIGHTS
        return read_state_dict(weights if weights.is_file() else folder / OPEN_CLIP_BIN)
    from vlp.models import from_hf_clip, from_hf_siglip

    mapping = from_hf_clip if kind == "hf_clip" else from_hf_siglip
    hf = read_state_dict(folder / HF_WEIGHTS)
    try:
        state, unused = mapping.open_clip_state(hf, _layers(config, hf))
    except KeyError as e:
        raise ValueError(f"{folder / HF_WEIGHTS}: not a {HF_MODELS[kind]} state dict: no {e.args[0]}") from None
    if unused:
        raise ValueError(f"{folder / HF_WEIGHTS}: {HF_MODELS[kind]} weights with no open_clip counterpart: "
                         f"{first_few(unused, 3)}")
    return state


def _layers(config: dict, hf: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(vision, text) encoder layer counts: the config's for native towers; a timm trunk's depth is in its name, so
    it is the folder's own layer count (the timm model was chosen to have exactly that many)."""
    def count(tower: str) -> int:
        return len({k.split(".")[3] for k in hf if k.startswith(f"{tower}.encoder.layers.")})
    vision = config["vision_cfg"].get("layers") or count("vision_model")
    return vision, config["text_cfg"]["layers"]
