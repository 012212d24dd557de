"""Export trained models: open_clip folder, transformers CLIPModel/SiglipModel folder, model card, Hub push."""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "export": "api", "FORMATS": "api", "NotExportable": "layers", "PushError": "push", "push_folder": "push",
    "model_card": "card"})
