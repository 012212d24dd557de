"""`train(..., data=...)` takes any `vlp.data.TrainingData`: an in-memory source trains, is told ahead which epoch
it will read next and resumes where it stopped; an object lacking a member is refused in one line before the run
directory exists."""
from __future__ import annotations

import open_clip
import pytest
import torch

from helpers.train_support import make_shards, recipe_dict, state_dicts_equal, write_recipe
from vlp.data import Batch, TrainingData
from vlp.train import train

torch.set_num_threads(1)


class InMemory:
    """Three batches of four an epoch, the same every time they are asked for."""

    samples_per_epoch, batches_per_epoch = 12, 3

    def __init__(self):
        self.asked: list[tuple[int, int]] = []  # (epoch, skip) of each `batches` call
        self.told: list[int] = []  # `will_read` epochs

    def batches(self, epoch: int, skip: int = 0):
        self.asked.append((epoch, skip))
        for position in range(skip, self.batches_per_epoch):
            generator = torch.Generator().manual_seed(epoch * 100 + position)
            images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=generator)
            colours = ["red", "green", "blue", "black"]
            text = open_clip.tokenize([f"a {colours[(position + i) % 4]} square" for i in range(4)], context_length=16)
            yield Batch(images, text)

    def will_read(self, epoch: int) -> None:
        self.told.append(epoch)


class Stop(Exception):
    pass


@pytest.fixture
def recipe(tmp_path):
    # the shards only satisfy the recipe's data section: `data=` replaces them
    shards = make_shards(tmp_path / "shards", shards=1, per_shard=8)
    return lambda name: write_recipe(tmp_path / f"{name}.yaml", recipe_dict(
        shards, tmp_path / "runs", batch_size=4, duration="2 epochs", run_name=name, checkpoint_every="2 steps"))


def final_weights(result):
    from safetensors.torch import load_file

    return load_file(str(result.checkpoint / "model.safetensors"))


def test_an_in_memory_source_trains_is_told_the_next_epoch_and_resumes_where_it_stopped(recipe):
    data = InMemory()
    assert isinstance(data, TrainingData)
    whole = train(recipe("whole"), data=data)
    assert whole.step == 6 and data.asked == [(0, 0), (1, 0)] and data.told == [1]

    def stop_after_four(step, metrics):
        if step == 4:
            raise Stop
    with pytest.raises(Stop):
        train(recipe("stopped"), data=InMemory(), callbacks=[stop_after_four])
    again = InMemory()
    resumed = train(recipe("stopped"), resume="latest", data=again)
    assert again.asked == [(1, 1)] and resumed.step == 6
    assert state_dicts_equal(final_weights(resumed), final_weights(whole))


def test_an_object_lacking_a_member_is_refused_in_one_line_before_the_run_directory_exists(recipe, tmp_path):
    class Bare:
        def batches(self, epoch, skip=0):
            return iter(())

    with pytest.raises(TypeError) as e:
        train(recipe("bare"), data=Bare())
    assert str(e.value) == ("data: a Bare is not training data (vlp.data.TrainingData): it lacks samples_per_epoch, "
                            "batches_per_epoch, will_read")
    assert not (tmp_path / "runs").exists()
