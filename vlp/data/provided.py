"""Which per-sample fields of `Batch` a recipe's data section fills: what an objective's `reads` is checked against
once, when the recipe loads, so that a missing input is a recipe error rather than a failure at the first step."""
from __future__ import annotations

from typing import Optional

from vlp.data.batch import row_fields
from vlp.data.sources import field_sources, source_configs, source_fields
from vlp.recipe.schema import DataConfig

# Sample ids come from shard sizes, which only opening the data tells: an objective that reads them refuses data
# without them when the trainer opens it.
ALWAYS = frozenset({"image", "text", "sample_ids"})


def missing_field(cfg: DataConfig, name: str) -> Optional[tuple[str, str]]:
    """None when the data section `cfg` fills batch field `name`; else the recipe key that would and what to set."""
    if name in ALWAYS:
        return None
    if name == "labels":
        return None if cfg.label_key else ("data.label_key", "name the field that holds them, e.g. 'cls'")
    if name in ("captions", "caption_mask"):
        return None if cfg.captions == "all" else ("data.captions", "set 'all'")
    if name == "negative_text":
        return None if cfg.negative_key else ("data.negative_key", "name the field that holds the hard negatives")
    if name not in row_fields():
        return "objective.name", f"a batch has no field {name!r}; its fields: {', '.join(row_fields())}"
    if any(f.name == name for f in source_fields([sc.type for sc in source_configs(cfg)])):
        return None
    types = field_sources(name)
    return "data.sources", (f"read every source with a type that yields it ({', '.join(types)})" if types
                            else "no registered source type yields it (`SourceReader.fields`)")
