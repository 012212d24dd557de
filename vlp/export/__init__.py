"""Export trained models: open_clip folder, transformers CLIPModel/SiglipModel folder, model card, Hub push.

Names load on first use, so `vlp --help` (which imports every subcommand) does not import torch/transformers.
"""
from importlib import import_module

_WHERE = {"export": "vlp.export.api", "FORMATS": "vlp.export.api", "NotExportable": "vlp.export.layers",
          "PushError": "vlp.export.push", "push_folder": "vlp.export.push", "model_card": "vlp.export.card"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'vlp.export' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
