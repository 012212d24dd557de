"""Data sources are plug-ins: a reader registered from this file feeds training; unknown types stop at recipe load."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import yaml
from PIL import Image

from helpers.train_support import COLORS, make_shards, recipe_dict, write_recipe
from vlp.data import SourceReader, register_source, source_types
from vlp.data.open_sources import load_sources
from vlp.recipe import DataConfig, RecipeError, SourceConfig, load_recipe

torch.set_num_threads(1)


class ToySource(SourceReader):
    """Solid-colour 16px images captioned with their colour, made in memory: two shards of `shards` samples each.
    Its samples keep the image under "image" and the caption under "caption", which `sample_keys` says."""

    def __init__(self):
        self.read_keys: list[str] = []

    def shards(self, cfg):
        per_shard = int(cfg.shards)
        return ["toy-0", "toy-1"], [per_shard, per_shard]

    def read(self, source, piece, counts, findings):
        names = sorted(COLORS)
        for index in range(source.sizes[piece.shard]):
            if piece.takes(index):
                color = names[(3 * piece.shard + index) % len(names)]
                key = f"{source.shards[piece.shard]}/{index}"
                self.read_keys.append(key)
                yield {"__key__": key, "__url__": source.shards[piece.shard], "__index__": index,
                       "image": Image.new("RGB", (16, 16), COLORS[color]), "caption": f"a {color} square"}

    def sample_keys(self, data, cfg):
        return replace(super().sample_keys(data, cfg), image=("image",), caption="caption", caption_field=None)


TOY = ToySource()
register_source("toy", TOY)


def test_registered_toy_source_trains_three_steps(tmp_path):
    from vlp.train import train

    recipe = recipe_dict("unused", tmp_path / "runs", duration="3 steps", batch_size=8)
    recipe["data"] = {"sources": [{"type": "toy", "shards": "16"}], "workers": 0, "shuffle_buffer": 4}
    TOY.read_keys.clear()
    result = train(write_recipe(tmp_path / "toy.yaml", recipe))
    assert result.step == 3 and result.samples_seen == 24
    assert len(set(TOY.read_keys)) >= 24  # the batches came from the toy reader
    assert set(TOY.read_keys) <= {f"toy-{s}/{i}" for s in range(2) for i in range(16)}


def test_unknown_source_type_is_one_line_at_recipe_load(tmp_path):
    recipe = recipe_dict("unused", tmp_path / "runs")
    recipe["data"] = {"sources": [{"type": "tyo", "shards": "16"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(caught.value) == f"{path}: data.sources[0].type: unknown source type 'tyo' (did you mean 'toy'?)"
    assert {"webdataset", "wds", "hf", "toy"} <= set(source_types())


def test_wds_names_the_webdataset_reader(tmp_path):
    spec = make_shards(tmp_path, shards=2, per_shard=4)
    by_name = [load_sources(DataConfig(sources=[SourceConfig(shards=spec, type=t)]))[0]
               for t in ("webdataset", "wds")]
    assert by_name[0].reader is by_name[1].reader and by_name[0].shards == by_name[1].shards
    assert by_name[0].sizes == (4, 4)


def test_a_type_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_source("hf", TOY)
