"""Training data: sources (webdataset shards, HF datasets, registered readers) → deterministic, resumable batches
that skip and count bad samples."""
from vlp.lazy import lazy_names

__getattr__, __all__ = lazy_names(__name__, {
    "Batch": "batch", "SampleKeys": "decode", "DataError": "sources",
    "Piece": "sources", "Source": "sources", "SourceReader": "sources", "register_source": "sources",
    "SampleField": "fields",
    "source_types": "sources", "check": "config_check", "hub_datasets": "sources", "expand_shards": "wds",
    "SIZES_FILE": "sizes", "read_shard_sizes": "sizes", "write_shard_sizes": "sizes", "open_hf_dataset": "hf",
    "TrainData": "train_data", "TrainingData": "training_data", "build_train_data": "train_data",
    "TrainCrop": "augment", "train_crop": "augment"})
