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


def test_recipe_show_applies_the_objectives_own_rules_with_check(tmp_path, capsys):
    path = write(tmp_path, "r.yaml", TINY_MODEL + "objective: {name: softmax, params: {temperature: 2}}\n")
    assert main(["recipe", "show", str(path)]) == 0  # showing imports no torch; building the objective would
    assert main(["recipe", "show", "--check", str(path)]) == 2
    assert "objective 'softmax' has no parameter 'temperature'" in capsys.readouterr().err
    with pytest.raises(RecipeError, match="no parameter 'temperature'"):
        load_recipe(path, ["train.duration=10", "data.train=x.tar"], for_training=True, objective=False)


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
    ("", ["optim.lr"], "optim.lr: expected KEY=VALUE, got 'optim.lr'"),
    ("data: [a, b]", [], "data: expected a section (mapping), got list ['a', 'b']"),
    ("objective: {name: hard_negative, tiled: true}", [], "objective.tiled: 'hard_negative' has no tiled form; tiled "
     "exists for clip_cua, clip_cuaxu, debiased, isogclr, macl, masked_softmax, multi_caption, sigmoid, softmax, "
     "supcon, uniformity"),
    ("logging: {trackers: [tensorbord]}", [],
     "logging.trackers[0]: expected one of 'tensorboard', 'wandb'; got 'tensorbord'"),
]


@pytest.mark.parametrize("body,overrides,expected", BAD_RECIPES)
def test_bad_recipe_gives_one_clear_line_and_exit_2(tmp_path, capsys, body, overrides, expected):
    path = write(tmp_path, "bad.yaml", TINY_MODEL + body + "\n")
    argv = ["recipe", "show", "--check", str(path)] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    source = f"--set {overrides[-1]}" if overrides else path  # an override's error names the --set at fault
    assert err.startswith(f"error: {source}: {expected}")
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


RANGE_ERRORS = [
    # (override, expected "key: message") -- each would otherwise fail deep inside training, or silently mislead
    ("train.log_every=0", "train.log_every: must be at least 1, got 0"),
    ("optim.lr=-1", "optim.lr: must be greater than 0, got -1.0"),
    ("optim.lr=nan", "optim.lr: must be a finite number, got nan"),
    ("optim.betas=[1.5, 0.9]", "optim.betas[0]: must be in [0, 1), got 1.5"),
    ("optim.betas=[0.9]", "optim.betas: expected 2 numbers, got 1"),
    ("optim.eps=0", "optim.eps: must be greater than 0, got 0.0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay: must be at least 0, got -0.1"),
    ("optim.grad_clip=0", "optim.grad_clip: must be greater than 0, got 0.0"),
    ("model.patch_dropout=1.5", "model.patch_dropout: must be in [0, 1), got 1.5"),
    ("model.max_logit_scale=0", "model.max_logit_scale: must be greater than 0, got 0.0"),
    ("model.logit_scale_init=.inf", "model.logit_scale_init: must be a finite number, got inf"),
    ("model.lock_text_unlocked_layers=-1", "model.lock_text_unlocked_layers: must be at least 0, got -1"),
    ("data.workers=-1", "data.workers: must be at least 0, got -1"),
    ("data.shuffle_buffer=-5", "data.shuffle_buffer: must be at least 0, got -5"),
    ("data.num_samples=0", "data.num_samples: must be at least 1, got 0"),
    ("data.num_negatives=0", "data.num_negatives: must be at least 1, got 0"),
    ("data.augment_scale=[1.0, 0.5]", "data.augment_scale: expected [low, high] with low <= high, got [1.0, 0.5]"),
    ("data.augment_scale=[0.5, 1.5]", "data.augment_scale[1]: must be in (0, 1], got 1.5"),
    ("data.augment_ratio=[0, 1]", "data.augment_ratio[0]: must be greater than 0, got 0.0"),
    ("data.train_weights=1::2", "data.train_weights: has 2 entries for 1 sources in data.train"),
    ("objective.tile_size=0", "objective.tile_size: must be at least 1, got 0"),
    ("objective.regularizers=[{name: align, weight: -1}]",
     "objective.regularizers[0].weight: must be at least 0, got -1.0"),
    ("schedule.min_lr_ratio=1.5", "schedule.min_lr_ratio: must be in [0, 1], got 1.5"),
    ("schedule.warmup=-10", "schedule.warmup: must be at least 0, got -10 steps"),
    ("train.duration=0", "train.duration: must be greater than 0, got 0 steps"),
    ("train.batch_size=0", "train.batch_size: must be at least 1, got 0"),
    ("train.micro_batch_size=0", "train.micro_batch_size: must be at least 1, got 0"),
    ("train.ema_decay=7", "train.ema_decay: must be in (0, 1), got 7.0"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints: must be at least 1, got 0"),
    ("train.max_nonfinite_steps=0", "train.max_nonfinite_steps: must be at least 1, got 0"),
    ("train.seed=-1", "train.seed: must be at least 0, got -1"),
    ("train.checkpoint_every=0", "train.checkpoint_every: must be greater than 0, got 0 steps"),
    ("eval.batch_size=0", "eval.batch_size: must be at least 1, got 0"),
    ("eval.recall_k=[1, 0]", "eval.recall_k[1]: must be at least 1, got 0"),
    ("eval.geometry_max_samples=1", "eval.geometry_max_samples: must be at least 2, got 1"),
    ("eval.datasets=[{name: a, task: zeroshot, path: /a, max_samples: 0}]",
     "eval.datasets[0].max_samples: must be at least 1, got 0"),
]


@pytest.mark.parametrize("override,expected", RANGE_ERRORS)
def test_out_of_range_value_stops_vlp_train_before_any_work(tmp_path, base, capsys, override, expected):
    runs = tmp_path / "runs"
    assert main(["train", str(base), "--set", f"train.output_dir={runs}", "--set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --set {override}: {expected}"
    assert not runs.exists()  # nothing was started: no run directory


def test_train_weights_are_numbers_in_range_and_exclusive_with_sources(tmp_path, base, capsys):
    two = ["--set", "data.train=a/{0..3}.tar::b/{0..3}.tar"]
    cases = {"data.train_weights=1::x": "data.train_weights[1]: expected a number, got str 'x'",
             "data.train_weights=1::0": "data.train_weights[1]: must be greater than 0, got 0.0",
             "data.sources=[{shards: c.tar}]": "data.sources: set either data.train or data.sources, not both"}
    for override, expected in cases.items():
        assert main(["recipe", "show", str(base), *two, "--set", override]) == 2
        assert capsys.readouterr().err.strip() == f"error: --set {override}: {expected}"
    assert main(["recipe", "show", str(base), *two, "--set", "data.train_weights=3::1"]) == 0


def test_every_numeric_key_declares_its_range():
    import dataclasses
    import types
    import typing

    from vlp.recipe import Recipe

    def element(tp):
        """What a key holds through Optional and list: Optional[int] -> int, list[float] -> float."""
        if typing.get_origin(tp) in (list, typing.Union, types.UnionType):
            return element(next(a for a in typing.get_args(tp) if a is not type(None)))
        return tp

    unbounded, sections, numeric = [], [Recipe], 0
    while sections:
        cls = sections.pop()
        for f in dataclasses.fields(cls):
            held = element(typing.get_type_hints(cls)[f.name])
            if held in (int, float, Duration):
                numeric += 1
                unbounded += [] if "interval" in f.metadata else [f"{cls.__name__}.{f.name}"]
            elif dataclasses.is_dataclass(held):
                sections.append(held)
    assert numeric > 30 and unbounded == []


SECRET_SPECS = [
    # (spec as a user writes it, what must not leave the machine, what must stay readable)
    ("https://alice:s3cr3t@data.example.com/shards/{000..009}.tar", ["alice", "s3cr3t"],
     "https://***@data.example.com/shards/{000..009}.tar"),
    ("https://bucket.s3.amazonaws.com/s/{0..9}.tar?X-Amz-Credential=AKIAXYZ&X-Amz-Signature=f00d&token=abc",
     ["AKIAXYZ", "f00d", "abc"], "https://bucket.s3.amazonaws.com/s/{0..9}.tar?***"),
    ("/data/a/{0..9}.tar::https://u:pw@h/b.tar?sig=k1::https://h/c/{0..3}.tar?tok=k2", ["pw", "k1", "k2"],
     "/data/a/{0..9}.tar::https://***@h/b.tar?***::https://h/c/{0..3}.tar?***"),
    ("pipe:curl -s -L -H 'Authorization: Bearer hf_abcdefghijklmnopqrstuvwxyz0123456789' https://h/{0..9}.tar",
     ["hf_abc", "Bearer"], "pipe:curl -s -L -H *** https://h/{0..9}.tar"),
    ("pipe:curl -s --header=Authorization:Bearer-t0ken https://h/a.tar", ["t0ken"],
     "pipe:curl -s --header=*** https://h/a.tar"),
    ("pipe:curl -u alice:s3cr3t https://h/a.tar", ["s3cr3t"], "pipe:curl -u *** https://h/a.tar"),
    ("pipe:HF_TOKEN=t1 fetch --token t2 --api-key=t3 gs://b/a.tar", ["t1", "t2", "t3"],
     "pipe:HF_TOKEN=*** fetch --token *** --api-key=*** gs://b/a.tar"),
]


@pytest.mark.parametrize("spec,secrets,shown", SECRET_SPECS)
def test_redaction_removes_credentials_from_shard_specs(spec, secrets, shown):
    from vlp.recipe.redact import redact_text

    assert redact_text(spec) == shown
    assert not any(s in shown for s in secrets)


def test_redaction_keeps_ordinary_values_and_the_original_recipe(base):
    from vlp.recipe import redact

    ordinary = ["ViT-H-14", "hf-hub:timm/ViT-B-16", "/data/shards/{00000..00139}.tar", "json:caption",
                "pipe:aws s3 cp s3://bucket/shards/{0..9}.tar -", "pipe:python -u read.py /data/x.tar",
                "accelerate launch --config_file accelerate.yaml -m vlp train recipes/x.yaml"]
    assert [redact(v) for v in ordinary] == ordinary
    spec = SECRET_SPECS[0][0]
    recipe = load_recipe(base, [f"data.train={spec}", "eval.datasets=[{name: a, task: zeroshot, path: /a}]"])
    clean = redact(recipe)
    assert clean.data.train == SECRET_SPECS[0][2] and recipe.data.train == spec  # a copy; the recipe is untouched
    assert clean.eval.datasets == recipe.eval.datasets and clean.train == recipe.train
