"""`train.compile: true`: the towers compile without graph breaks, training matches eager, and caption lengths that
vary from batch to batch recompile at most once per length bucket."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torch._dynamo.utils import counters

from data_tools.writer import ShardWriter
from helpers.train_support import COLORS, TINY_MODEL, recipe_dict, write_recipe
from vlp.data import build_train_data
from vlp.data.batch import LENGTH_BUCKET, Batch, text_length
from vlp.models import build_model
from vlp.recipe import ModelConfig
from vlp.recipe.schema import DataConfig
from vlp.train import forward_features, train

torch.set_num_threads(1)

CONTEXT = 40  # five length buckets: 8, 16, 24, 32, 40
LONG_TEXT = {**TINY_MODEL, "text_cfg": {**TINY_MODEL["text_cfg"], "context_length": CONTEXT}}


def png(rgb: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def varied_shards(tmp_path_factory) -> str:
    """Colour squares whose captions run from 5 to 20 tokens (SOT and EOT included): batches fall into different
    length buckets."""
    rng = np.random.default_rng(0)
    names = list(COLORS)
    with ShardWriter(tmp_path_factory.mktemp("shards"), per_shard=48) as writer:
        for i in range(96):
            color = names[int(rng.integers(len(names)))]
            caption = f"a {color} square" + " really" * int(rng.integers(0, 16))
            writer.write(f"s{i:05d}", {"png": png(COLORS[color]), "txt": caption})
    return writer.spec


def captions_of_every_length(tokenizer, longest: int) -> list[torch.Tensor]:
    """One token batch per caption of 1..longest words, beside three short ones."""
    return [tokenizer(["x " * n, "a", "b c", "d"]) for n in range(1, longest + 1)]


def test_the_loader_measures_each_batchs_text_length(varied_shards):
    _, tokenizer = build_model(ModelConfig(config=LONG_TEXT))
    data = build_train_data(DataConfig(train=varied_shards, workers=1, shuffle_buffer=16), T.ToTensor(), tokenizer,
                            local_batch_size=4, seed=0, rank=0, world_size=1)
    lengths = [(batch.text_length, text_length(batch.text)) for batch in data.batches(0)]
    assert all(measured == expected for measured, expected in lengths)  # filled in before the trainer sees it
    assert len({measured for measured, _ in lengths}) > 1  # per batch: captions of 5 to 20 tokens


@pytest.mark.slow  # ~80 s on two CPU cores with an empty Inductor cache (as in CI): compiling
def test_compiled_training_matches_eager_for_ten_steps(tmp_path, varied_shards):
    losses = {}
    counters.clear()
    for compiled in (False, True):
        recipe = recipe_dict(varied_shards, tmp_path / "runs", duration="10 steps", log_every=1, compile=compiled,
                             micro_batch_size=4)  # GradCache: the no-grad and the grad forward both compiled
        recipe["model"]["config"] = LONG_TEXT
        seen = losses.setdefault(compiled, [])
        train(write_recipe(tmp_path / f"compile_{compiled}.yaml", recipe),
              callbacks=[lambda step, values: seen.append(values["loss"])])
    assert len(losses[True]) == 10 and counters["stats"]["unique_graphs"] >= 1  # it did compile
    # Inductor fuses and reorders float32 sums; observed: at most 2e-7 relative over the 10 steps.
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


def test_towers_compile_into_one_graph_with_the_measured_length():
    model, tokenizer = build_model(ModelConfig(config=LONG_TEXT))
    batch = Batch(torch.randn(4, 3, 16, 16), tokenizer(["a red square", "a", "a very long blue square", ""]))
    measured = batch.measured()
    explained = torch._dynamo.explain(model)(batch.image, measured.text, text_length=measured.text_length)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    # Without it the model reads the length from the tokens: a host sync, and a graph break under torch.compile.
    assert torch._dynamo.explain(model)(batch.image, batch.text).graph_break_count > 0


def test_varying_caption_lengths_recompile_at_most_once_per_bucket():
    """With static shapes, the strictest case: train.compile's default turns the length symbolic after its first
    change and compiles fewer graphs still."""
    model, tokenizer = build_model(ModelConfig(config=LONG_TEXT))
    graphs = []
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=False, backend=lambda gm, inputs: graphs.append(gm) or gm.forward)
    image = torch.randn(4, 3, 16, 16)
    buckets = set()
    for tokens in captions_of_every_length(tokenizer, CONTEXT - 2):
        batch = Batch(image, tokens).measured()
        buckets.add(batch.text_length)
        forward_features(compiled, batch)  # as training calls it
    assert buckets == set(range(LENGTH_BUCKET, CONTEXT + 1, LENGTH_BUCKET))
    assert 1 <= len(graphs) <= len(buckets)
    torch._dynamo.reset()
