"""Training data: webdataset shards or HF datasets → deterministic, resumable batches that skip and count bad samples."""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "SampleKeys": "decode", "DataError": "sources", "expand_shards": "sources", "read_shard_sizes": "sources",
    "TrainData": "train_data", "build_train_data": "train_data"})
