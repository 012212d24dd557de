"""Tools to build, check and inspect webdataset shards and CLIP_benchmark-layout evaluation sets."""
from data_tools.build import split_items, write_retrieval_set, write_train_shards, write_zeroshot_set
from data_tools.bundled import build_digits
from data_tools.check import check_shards
from data_tools.inputs import Item, class_folder_items, folder_items, hf_items, table_items
from data_tools.stats import shard_stats
from data_tools.writer import ShardWriter

__all__ = ["ShardWriter", "Item", "folder_items", "class_folder_items", "table_items", "hf_items", "split_items",
           "write_train_shards", "write_zeroshot_set", "write_retrieval_set", "build_digits", "check_shards",
           "shard_stats"]
