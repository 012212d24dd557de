"""`objective.distill`: the loss is OpenCLIP's `DistillClipLoss` (value and gradients), composes with other
objectives, and two gloo processes give the one-process full-batch result."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import DistillClipLoss

import vlp.objectives as objectives
from helpers.objective_inputs import join_gloo
from helpers.processes import free_port, spawn
from vlp.data.batch import Batch
from vlp.objectives.distill import Distilled, distill_loss
from vlp.objectives.teacher import Teacher, TeacherFeatures
from vlp.recipe import ConfigError
from vlp.recipe.schema import DistillConfig, ObjectiveConfig, RegularizerConfig

WORLD, LOCAL, DIM_IN, DIM, TOKENS = 2, 5, 6, 4, 3


class LinearTeacher(torch.nn.Module):
    """A dual encoder of linear maps: images (b, DIM_IN) and token ids (b, TOKENS) to normalised features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.image = torch.nn.Linear(DIM_IN, DIM + 1)
        self.text = torch.nn.Linear(TOKENS, DIM + 1)
        self.logit_scale = torch.nn.Parameter(torch.tensor(2.5))

    def forward(self, image, text):
        return {"image_features": F.normalize(self.image(image), dim=-1),
                "text_features": F.normalize(self.text(text.float()), dim=-1), "logit_scale": self.logit_scale.exp()}


def teacher() -> Teacher:
    return Teacher(LinearTeacher().eval().requires_grad_(False), None)


def features(n, dim, seed):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, dim, generator=g, dtype=torch.float64), dim=-1) for _ in range(2)]


def test_distill_loss_equals_open_clip_distill_clip_loss():
    x, y = (f.requires_grad_() for f in features(9, DIM, 0))
    tx, ty = features(9, DIM + 3, 1)
    t, ts = torch.tensor(13.0, dtype=torch.float64, requires_grad=True), torch.tensor(21.0, dtype=torch.float64)
    ours = distill_loss(x, y, t, TeacherFeatures(tx, ty, ts))
    want = DistillClipLoss()(x, y, t, tx, ty, ts, output_dict=True)["distill_loss"]
    torch.testing.assert_close(ours, want, atol=1e-6, rtol=0)
    got_grads = torch.autograd.grad(ours, (x, y, t))
    for got, ref in zip(got_grads, torch.autograd.grad(want, (x, y, t))):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_distilled_softmax_is_open_clip_total_and_logs_its_own_term():
    """softmax + distill at weight 1 is DistillClipLoss's contrastive + distill loss; the weight scales the term."""
    images, tokens = torch.randn(8, DIM_IN), torch.randint(0, 5, (8, TOKENS))
    x, y = (f.float().requires_grad_() for f in features(8, DIM, 2))
    t = torch.tensor(14.0, requires_grad=True)
    samples = Batch(images, tokens)
    mentor = teacher().features(samples)
    want = DistillClipLoss()(x, y, t, mentor.image, mentor.text, mentor.logit_scale, output_dict=True)
    for weight in (1.0, 0.3):
        objective = Distilled(objectives.build("softmax"), weight, teacher())
        out = objective(x, y, t, samples=samples)
        torch.testing.assert_close(out["distill_loss"], want["distill_loss"], atol=1e-6, rtol=0)
        torch.testing.assert_close(out["loss"], want["contrastive_loss"] + weight * want["distill_loss"], atol=1e-6,
                                   rtol=0)
    total = want["contrastive_loss"] + 0.3 * want["distill_loss"]
    for got, ref in zip(torch.autograd.grad(out["loss"], (x, y, t)), torch.autograd.grad(total, (x, y, t))):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_recipe_section_builds_a_distilled_objective_on_any_base(tmp_path):
    cfg = ObjectiveConfig(name="sigmoid", regularizers=[RegularizerConfig("align")],
                          distill=DistillConfig(teacher=str(tmp_path), weight=0.5))
    objective = objectives.build_from_config(cfg)
    assert isinstance(objective, Distilled) and objective.weight == 0.5
    assert objective.init_logit_bias == -10.0 and {"image", "text"} <= set(objective.reads)
    with pytest.raises(RuntimeError, match="no teacher loaded"):
        objective(*features(4, DIM, 0), 10.0, -10.0, samples=Batch(torch.zeros(4, DIM_IN), torch.zeros(4, TOKENS)))


@pytest.mark.parametrize("distill, key, message", [
    (DistillConfig(teacher="ViT-B-33"), "objective.distill.teacher", "did you mean 'ViT-B-32'"),
    (DistillConfig(teacher="ViT-B-32", weight=-1.0), "objective.distill.weight", "at least 0"),
    (DistillConfig(teacher="runs/x", pretrained="w.safetensors"), "objective.distill.pretrained", "remove"),
])
def test_invalid_distill_sections_name_their_key(distill, key, message):
    with pytest.raises(ConfigError, match=message) as e:
        objectives.check(ObjectiveConfig(distill=distill))
    assert e.value.key == key


# ---------------------------------------------------------------- two processes equal one


CASES = {"softmax-global": ObjectiveConfig(name="softmax"),
         "softmax-local": ObjectiveConfig(name="softmax", gather="local_loss"),
         "sigmoid-ring": ObjectiveConfig(name="sigmoid", gather="ring"),
         "clip_cua-tiled": ObjectiveConfig(name="clip_cua", tiled=True, tile_size=3)}


class Student(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = torch.nn.Linear(DIM_IN, DIM, bias=False)
        self.text = torch.nn.Linear(TOKENS, DIM)
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.2))
        self.logit_bias = torch.nn.Parameter(torch.tensor(-1.0))


def global_batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(WORLD * LOCAL, DIM_IN, generator=g), torch.randint(0, 9, (WORLD * LOCAL, TOKENS), generator=g)


def run(name, rows, reduce_grads):
    cfg = CASES[name]
    objective = Distilled(objectives.build_from_config(cfg), 0.7, teacher())
    model, (images, tokens) = Student(), (v[rows] for v in global_batch())
    terms = objective(F.normalize(model.image(images), dim=-1), F.normalize(model.text(tokens.float()), dim=-1),
                      model.logit_scale.exp(), model.logit_bias, samples=Batch(images, tokens))
    terms["loss"].backward()
    return ({k: v.detach() for k, v in terms.items()},
            {k: reduce_grads(torch.zeros_like(p) if p.grad is None else p.grad) for k, p in model.named_parameters()})


def worker(rank, port, out_dir):
    ddp_average = join_gloo(rank, port, WORLD)
    try:
        rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
        torch.save({name: run(name, rows, ddp_average) for name in CASES}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("distill"))
    port = free_port()
    spawn(worker, (port, out_dir), WORLD)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


@pytest.mark.distributed
@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process(two_process_results, name):
    ref_terms, ref_grads = run(name, slice(0, WORLD * LOCAL), lambda g: g)
    assert ref_terms["distill_loss"] > 0 and ref_grads["image.weight"].abs().sum() > 0
    for rank_results in two_process_results:
        terms, grads = rank_results[name]
        for key in ref_terms:
            torch.testing.assert_close(terms[key], ref_terms[key], atol=1e-5, rtol=1e-5, msg=lambda m: f"{key}: {m}")
        for key in ref_grads:
            torch.testing.assert_close(grads[key], ref_grads[key], atol=1e-5, rtol=1e-5, msg=lambda m: f"{key}: {m}")


def test_an_open_clip_architecture_with_a_local_weights_file_is_a_frozen_teacher(tmp_path):
    import json

    import open_clip
    from safetensors.torch import save_file

    from helpers.runs import TINY
    from vlp.models import build_model
    from vlp.objectives.teacher import load_teacher
    from vlp.recipe import ModelConfig

    (tmp_path / "tiny-distill-teacher.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "tiny-distill-teacher.json")
    source, _ = build_model(ModelConfig(config=TINY))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    student, _ = build_model(ModelConfig(config=TINY))
    cfg = DistillConfig(teacher="tiny-distill-teacher", pretrained=str(tmp_path / "w.safetensors"))
    loaded = load_teacher(cfg, student, "bf16", torch.device("cpu"))
    assert loaded.autocast is torch.bfloat16 and not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    with pytest.raises(ConfigError, match="neither a file nor an open_clip tag") as e:
        load_teacher(DistillConfig(teacher="tiny-distill-teacher", pretrained="no_such_tag"), student, "no",
                     torch.device("cpu"))
    assert e.value.key == "objective.distill.pretrained"


def test_the_teacher_computes_in_the_training_precision_even_inside_the_fp32_objective():
    """Under `train.precision: bf16` the teacher's towers run in bf16, as the student's do, though the objective
    around them leaves autocast; its features reach the loss in fp32."""
    mentor, seen = Teacher(LinearTeacher().eval().requires_grad_(False), torch.bfloat16), []
    mentor.model.image.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    objective = Distilled(objectives.build("softmax"), 1.0, mentor)
    x, y = (f.float() for f in features(4, DIM, 0))
    samples = Batch(torch.randn(4, DIM_IN), torch.randint(0, 5, (4, TOKENS)))
    with torch.autocast("cpu", torch.bfloat16):
        out = objective(x, y, 10.0, samples=samples)
    assert seen == [torch.bfloat16] and out["distill_loss"].dtype == torch.float32
    assert mentor.features(samples).image.dtype == torch.float32
