"""A per-sample input added from outside vlp: a plugin's source type yields a field (`SourceReader.fields`), its
objective declares it in `reads`, and the field travels on the step's `Batch` through the pipeline, GradCache and
a resume, with no vlp file edited; data without the field is refused when the recipe loads, in one line."""
import textwrap

import pytest
from safetensors.torch import load_file

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.recipe import RecipeError
from vlp.run_dir import Checkpoint
from vlp.train import train

PLUGIN = '''
import torch
import torch.nn.functional as F

from vlp.data import SampleField, SourceReader, register_source
from vlp.data.wds import READER
from vlp.objectives import Objective, register
from vlp.objectives.distributed import gather_with_grad


def caption_weight(sample):
    return 1.0 + sample["__index__"] % 2  # odd samples count twice


class WeightedShards(SourceReader):
    """webdataset shards whose samples carry a caption weight."""
    fields = (SampleField("caption_weight", caption_weight),)

    def shards(self, cfg):
        return READER.shards(cfg)

    def census(self, source):
        return READER.census(source)

    def read(self, source, piece, counts, findings):
        yield from READER.read(source, piece, counts, findings)


register_source("weighted", WeightedShards())


@register("weighted_softmax")
class WeightedSoftmax(Objective):
    """Symmetric InfoNCE with each pair's term weighted by its caption weight."""
    reads = ("caption_weight",)

    def compute(self, x, y, t, b=None, samples=None, **inputs):
        w = gather_with_grad(samples.caption_weight.to(x.dtype))
        all_x, all_y = gather_with_grad(x), gather_with_grad(y)
        logits, target = t * all_x @ all_y.T, torch.arange(len(w), device=x.device)
        pair = (F.cross_entropy(logits, target, reduction="none")
                + F.cross_entropy(logits.T, target, reduction="none")) / 2
        return {"loss": (w * pair).sum() / w.sum(), "caption_weight_mean": w.mean()}
'''
MODULE = "vlp_toy_caption_weight"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_field")
    (root / f"{MODULE}.py").write_text(textwrap.dedent(PLUGIN))
    return root, make_shards(root / "shards", shards=2, per_shard=24)


def _recipe(root, shards, name, sources=True, **train_keys):
    recipe = recipe_dict(shards, root / "runs", micro_batch_size=3, log_every=1, checkpoint_every="3 steps",
                         **train_keys)
    recipe["plugins"] = [MODULE]
    recipe["objective"] = {"name": "weighted_softmax"}
    if sources:
        recipe["data"] = {"sources": [{"type": "weighted", "shards": recipe["data"].pop("train")}],
                          **recipe["data"]}
    return write_recipe(root / f"{name}.yaml", recipe)


class Stop(Exception):
    pass


def stop_at(step):
    def callback(at, metrics):
        if at == step:
            raise Stop
    return callback


def test_a_plugin_field_trains_and_resumes(setup, monkeypatch):
    """3 steps, stopped after the step-3 checkpoint, resumed to 5: the same weights as 5 steps in one go."""
    root, shards = setup
    monkeypatch.syspath_prepend(str(root))
    seen = {}
    path = _recipe(root, shards, "weighted", duration="5 steps")
    with pytest.raises(Stop):
        train(path, callbacks=[lambda step, metrics: seen.update(metrics), stop_at(3)])
    # each batch holds odd and even samples: a weight that did not reach the objective could not average to this
    assert 1.0 < seen["objective/caption_weight_mean"] < 2.0
    resumed = train(path, resume="latest")
    whole = train(_recipe(root, shards, "weighted_whole", duration="5 steps"))
    assert resumed.step == whole.step == 5
    assert resumed.metrics["loss"] == whole.metrics["loss"]
    resumed_weights, whole_weights = (load_file(Checkpoint(run.checkpoint).model) for run in (resumed, whole))
    assert resumed_weights.keys() == whole_weights.keys()
    for key, value in whole_weights.items():
        assert resumed_weights[key].equal(value), key


def test_data_without_the_field_is_refused_at_load_in_one_line(setup, monkeypatch):
    root, shards = setup
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(RecipeError) as refused:
        train(_recipe(root, shards, "unweighted", sources=False, duration="3 steps"))
    message = str(refused.value)
    assert "\n" not in message
    assert all(part in message for part in ("data.sources", "'weighted_softmax'", "'caption_weight'", "(weighted)"))
