"""Training data: webdataset shards or HF datasets → deterministic, resumable batches that skip and count bad samples."""
from vlp.data.decode import SampleKeys
from vlp.data.sources import DataError, expand_shards, read_shard_sizes
from vlp.data.train_data import TrainData, build_train_data

__all__ = ["build_train_data", "TrainData", "DataError", "SampleKeys", "expand_shards", "read_shard_sizes"]
