"""Rules on the recipe's `data` section, in one place: the recipe loader calls `check` (and, for `vlp train`,
`require_training_data` and `require_training_files`); so does the data pipeline for a section built in Python.
Cheap to import (no torch)."""
from __future__ import annotations

import os

from vlp.recipe.bounds import check_section, field_interval, set_keys
from vlp.recipe.errors import ConfigError, describe
from vlp.recipe.paths import is_remote, missing
from vlp.recipe.schema import DataConfig, SourceConfig


def check(cfg: DataConfig) -> None:
    """Raise ConfigError naming the first key of `cfg` that is out of range or means nothing."""
    check_section(cfg, "data")
    if cfg.train and cfg.sources:
        raise ConfigError("data.sources", "set either data.train or data.sources, not both")
    if cfg.train_weights is not None:
        _check_train_weights(cfg)
    _check_source_types(cfg)
    _check_keys_read(cfg)
    if cfg.max_captions is not None and cfg.captions != "all":
        raise ConfigError("data.max_captions", "applies only with data.captions: all (one caption is drawn otherwise)")


def require_training_data(cfg: DataConfig) -> None:
    if not cfg.train and not cfg.sources:
        raise ConfigError("data.train", "missing required value: no training data (data.train or data.sources)")


def require_training_files(cfg: DataConfig) -> None:
    """Each local webdataset spec must match a file: one matching none is a wrong path, not a damaged source (a
    missing shard among others is damage, skipped and counted). HF sources name a folder or a Hub dataset and
    registered ones mean what their reader says: neither is checked here."""
    from vlp.data.sources import source_reader  # deferred: it imports torch (the recipe loader imports this module)
    from vlp.data.wds import READER, expand_shards

    specs = [("data.train", spec) for spec in cfg.train.split("::")] if cfg.train else [
        (f"data.sources[{i}].shards", s.shards) for i, s in enumerate(cfg.sources) if source_reader(s.type) is READER]
    for key, spec in specs:
        shards = expand_shards(spec)
        if not any(is_remote(url) or os.path.exists(url) for url in shards):
            raise missing(key, spec.strip(), "no file matches")


def _check_source_types(cfg: DataConfig) -> None:
    from vlp.data.sources import DataError, source_reader  # deferred: it imports torch

    for i, source in enumerate(cfg.sources):
        try:
            source_reader(source.type)
        except DataError as e:
            raise ConfigError(f"data.sources[{i}].type", str(e)) from None


WDS_ONLY = ("image_key", "caption_key", "caption_field")  # data.* keys of webdataset samples (HF: the columns)
HF_ONLY = ("split", "image_column", "caption_column", "streaming")  # data.sources[].* keys of HF datasets


def _check_keys_read(cfg: DataConfig) -> None:
    """A key set for one source type where no source is of that type would be ignored: refused, naming it."""
    from vlp.data import hf, wds  # deferred: they import torch
    from vlp.data.sources import source_configs, source_reader

    if not cfg.train and not cfg.sources:
        return
    readers = [source_reader(s.type) for s in source_configs(cfg)]
    if all(reader is hf.READER for reader in readers):
        for name in set_keys(cfg, WDS_ONLY):
            raise ConfigError(f"data.{name}", "applies to webdataset sources; an hf source reads its columns "
                                              "(data.sources[].image_column, caption_column)")
    for i, (source, reader) in enumerate(zip(cfg.sources, readers)):
        for name in set_keys(source, HF_ONLY) if reader is wds.READER else ():
            raise ConfigError(f"data.sources[{i}].{name}", "applies to type hf; a webdataset source does not read it")


def _check_train_weights(cfg: DataConfig) -> None:
    if not cfg.train:
        raise ConfigError("data.train_weights", "needs data.train (one weight per '::'-separated source)")
    weights, specs = cfg.train_weights.split("::"), cfg.train.split("::")
    if len(weights) != len(specs):
        raise ConfigError("data.train_weights", f"has {len(weights)} entries for {len(specs)} sources in data.train")
    weight_range = field_interval(SourceConfig, "weight")  # each becomes a source's weight: the same type and range
    for i, text in enumerate(weights):
        key = f"data.train_weights[{i}]"
        try:
            weight = float(text)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {describe(text)}") from None
        problem = weight_range.problem(weight)
        if problem:
            raise ConfigError(key, problem)
