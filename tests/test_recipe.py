"""Recipe files: parsing, inheritance, overrides, durations, and the exact error for each kind of bad recipe."""
import subprocess
import sys
import textwrap

import pytest

from vlp.cli import main
from vlp.recipe import Duration, RecipeError, dump_recipe, load_recipe

TINY_MODEL = """
model:
  config:
    embed_dim: 32
    vision_cfg: {image_size: 32, layers: 1, width: 32, patch_size: 8}
    text_cfg: {context_length: 16, vocab_size: 49408, width: 32, heads: 4, layers: 1}
"""


def write(tmp_path, name, text, prefix=""):
    path = tmp_path / name
    path.write_text(prefix + textwrap.dedent(text))
    return path


@pytest.fixture
def base(tmp_path):
    return write(tmp_path, "base.yaml", prefix=TINY_MODEL, text="""
        data: {train: "shards/{000..003}.tar", workers: 0}
        optim: {lr: 1.0e-3}
        train: {duration: 100 steps, batch_size: 64}
    """)


def test_parses_into_typed_sections(base):
    r = load_recipe(base)
    assert r.model.config["embed_dim"] == 32
    assert r.optim.lr == 1e-3 and isinstance(r.optim.lr, float)
    assert r.train.duration == Duration(100, "steps")
    assert r.train.batch_size == 64
    assert r.objective.name == "softmax"  # default
    assert r.data.workers == 0


def test_inheritance_merges_sections_and_child_wins(tmp_path, base):
    child = write(tmp_path, "child.yaml", """
        base: base.yaml
        optim: {weight_decay: 0.05}
        objective: {name: sigmoid}
    """)
    r = load_recipe(child)
    assert r.optim.lr == 1e-3 and r.optim.weight_decay == 0.05  # merged key by key
    assert r.objective.name == "sigmoid"
    grandchild = write(tmp_path, "grandchild.yaml", "base: child.yaml\ntrain: {batch_size: 32}\n")
    r = load_recipe(grandchild)
    assert (r.train.batch_size, r.train.duration.value, r.objective.name) == (32, 100, "sigmoid")


def test_free_form_values_replace_rather_than_merge(tmp_path, base):
    child = write(tmp_path, "child.yaml", """
        base: base.yaml
        model:
          config: {embed_dim: 16, vision_cfg: {image_size: 16}, text_cfg: {hf_model_name: some/model}}
          lock_text: true
    """)
    r = load_recipe(child)
    assert r.model.config == {"embed_dim": 16, "vision_cfg": {"image_size": 16}, "text_cfg": {"hf_model_name": "some/model"}}
    assert r.model.lock_text is True


def test_overrides_apply_after_inheritance(base):
    r = load_recipe(base, ["optim.lr=3e-4", "objective.name=sigmoid", "train.duration=2M samples",
                           "optim.betas=[0.9, 0.95]", "train.precision=bf16"])
    assert r.optim.lr == 3e-4
    assert r.objective.name == "sigmoid"
    assert r.train.duration == Duration(2e6, "samples")
    assert r.optim.betas == [0.9, 0.95]
    assert r.train.precision == "bf16"


def test_override_into_list_element(tmp_path, base):
    path = write(tmp_path, "evals.yaml", """
        base: base.yaml
        eval:
          datasets: [{name: a, task: zeroshot, path: /data/a}]
    """)
    r = load_recipe(path, ["eval.datasets.0.path=/elsewhere"])
    assert r.eval.datasets[0].path == "/elsewhere"


def test_durations():
    assert Duration.parse("12.8M samples").to_steps(batch_size=32768) == 391
    assert Duration.parse(500).to_steps(batch_size=1) == 500
    assert Duration.parse("2 epochs").to_steps(batch_size=100, samples_per_epoch=1000) == 20
    assert Duration.parse("1k steps") == Duration(1000, "steps")
    with pytest.raises(ValueError, match="epoch size"):
        Duration.parse("1 epoch").to_steps(batch_size=10)


def test_dump_round_trips(tmp_path, base):
    r = load_recipe(base, ["train.checkpoint_every=50 steps"])
    again = write(tmp_path, "resolved.yaml", dump_recipe(r))
    assert load_recipe(again) == r


def test_recipe_show_prints_resolved_recipe(base, capsys):
    assert main(["recipe", "show", str(base), "--set", "optim.lr=0.01"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.01" in out and "duration: 100 steps" in out


def test_for_training_needs_duration_and_data(tmp_path):
    path = write(tmp_path, "r.yaml", TINY_MODEL)
    load_recipe(path)  # fine for showing or evaluating
    with pytest.raises(RecipeError, match=r"train\.duration: missing required value"):
        load_recipe(path, for_training=True)
    with pytest.raises(RecipeError, match=r"data\.train: missing required value"):
        load_recipe(path, ["train.duration=10"], for_training=True)


BAD_RECIPES = [
    # (recipe body appended to the tiny model, overrides, expected "key: message")
    ("modle: {}", [], "modle: unknown key (did you mean 'model'?)"),
    ("optim: {lrr: 0.1}", [], "optim.lrr: unknown key (did you mean 'lr'?)"),
    ("train: {batch_size: big}", [], "train.batch_size: expected an integer, got str 'big'"),
    ("optim: {lr: fast}", [], "optim.lr: expected a number, got str 'fast'"),
    ("objective: {name: softmx}", [], "objective.name: unknown objective 'softmx' (did you mean 'softmax'?)"),
    ("train: {precision: fp8}", [], "train.precision: expected one of 'no', 'fp16', 'bf16'; got 'fp8'"),
    ("eval: {datasets: [{name: x, task: zeroshot}]}", [], "eval.datasets[0].path: missing required value"),
    ("train: {duration: forever}", [],
     "train.duration: expected a duration like '1000 steps', '5M samples' or '2 epochs', got 'forever'"),
    ("objective: {name: softmax, params: {temperature: 2}}", [],
     "objective.params: objective 'softmax' has no parameter 'temperature'"),
    ("data: {workers: 2}", ["data.worker=4"], "data.worker: unknown key (did you mean 'workers'?)"),
    ("", ["optim.lr"], "optim.lr: --set expects KEY=VALUE, got 'optim.lr'"),
    ("data: [a, b]", [], "data: expected a section (mapping), got list ['a', 'b']"),
    ("objective: {name: hard_negative, tiled: true}", [], "objective.tiled: 'hard_negative' has no tiled form; tiled exists for sigmoid, softmax"),
    ("logging: {trackers: [tensorbord]}", [],
     "logging.trackers[0]: expected one of 'tensorboard', 'wandb'; got 'tensorbord'"),
]


@pytest.mark.parametrize("body,overrides,expected", BAD_RECIPES)
def test_bad_recipe_gives_one_clear_line_and_exit_2(tmp_path, capsys, body, overrides, expected):
    path = write(tmp_path, "bad.yaml", TINY_MODEL + body + "\n")
    argv = ["recipe", "show", str(path)] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: {expected}")
    assert "\n" not in err


def test_unknown_arch_and_arch_plus_config(tmp_path, capsys):
    path = write(tmp_path, "arch.yaml", "model: {arch: ViT-B-33}\n")
    assert main(["recipe", "show", str(path)]) == 2
    assert "model.arch: unknown open_clip architecture 'ViT-B-33' (did you mean 'ViT-B-32'?)" in capsys.readouterr().err
    path = write(tmp_path, "both.yaml", TINY_MODEL + "  arch: ViT-B-32\n")
    assert main(["recipe", "show", str(path)]) == 2
    assert "model: set exactly one of model.arch" in capsys.readouterr().err


def test_file_level_errors(tmp_path, capsys):
    cases = {
        write(tmp_path, "syntax.yaml", "model: {arch: [unclosed\n"): "invalid YAML (line",
        write(tmp_path, "nobase.yaml", "base: missing.yaml\n"): "base: base recipe 'missing.yaml' not found",
        write(tmp_path, "cycle_a.yaml", "base: cycle_b.yaml\n"): "base: inheritance cycle",
        tmp_path / "absent.yaml": "absent.yaml: file not found",
    }
    write(tmp_path, "cycle_b.yaml", "base: cycle_a.yaml\n")
    for path, expected in cases.items():
        assert main(["recipe", "show", str(path)]) == 2
        assert expected in capsys.readouterr().err, path


def test_yaml_tags_are_not_executed(tmp_path, capsys):
    path = write(tmp_path, "evil.yaml", "model: !!python/object/apply:os.system ['echo pwned']\n")
    assert main(["recipe", "show", str(path)]) == 2
    assert "invalid YAML" in capsys.readouterr().err


def test_cli_error_has_no_traceback(tmp_path):
    path = write(tmp_path, "bad.yaml", TINY_MODEL + "optim: {lrr: 0.1}\n")
    proc = subprocess.run([sys.executable, "-m", "vlp", "recipe", "show", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: optim.lrr: unknown key (did you mean 'lr'?)"
