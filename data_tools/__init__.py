"""Tools to build, check and inspect webdataset shards and CLIP_benchmark-layout evaluation sets."""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "ShardWriter": "writer", "Item": "inputs", "folder_items": "inputs", "class_folder_items": "inputs",
    "table_items": "inputs", "hf_items": "inputs", "split_items": "build", "write_train_shards": "build",
    "write_zeroshot_set": "build", "write_retrieval_set": "build", "build_digits": "bundled", "build_scenes": "scenes",
    "check_shards": "check", "shard_stats": "stats"})
