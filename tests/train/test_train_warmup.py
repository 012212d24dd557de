"""A warmup longer than the run trains (a short trial of a long recipe is legitimate, as in OpenCLIP) but says, in
one warning line, that the learning rate never reaches its peak."""
import sys
import warnings

from helpers.train_support import make_shards, recipe_dict, write_recipe
from vlp.cli import main


def warmup_warnings(tmp_path, capsys, warmup: int) -> list[str]:
    """The schedule.warmup lines `vlp train` prints (as it does outside pytest, whose own capture is set aside)."""
    recipe = recipe_dict(make_shards(tmp_path / f"shards{warmup}", shards=1, per_shard=16), tmp_path / f"runs{warmup}",
                         duration="2 steps")
    recipe["schedule"]["warmup"] = warmup
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning  # pytest records warnings instead of letting the CLI print them
        assert main(["train", str(write_recipe(tmp_path / "run.yaml", recipe))]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if "schedule.warmup" in line]


def _print_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def test_a_warmup_longer_than_the_run_is_one_warning(tmp_path, capsys):
    [line] = warmup_warnings(tmp_path, capsys, 10)
    assert line == (f"warning: {tmp_path / 'run.yaml'}: schedule.warmup: 10 steps is longer than the run (2 steps), "
                    "so the learning rate never reaches optim.lr; shorten the warmup or lengthen train.duration")
    assert warmup_warnings(tmp_path, capsys, 2) == []
