"""The frozen teacher of `objective.distill`: loaded from what `vlp eval --model` takes or an open_clip architecture,
and refused when it would read the student's preprocessed images or token ids differently from its own training."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from vlp.recipe.errors import ConfigError
from vlp.recipe.paths import require_path
from vlp.recipe.schema import DistillConfig, ModelConfig

if TYPE_CHECKING:
    from vlp.data.batch import Batch

KEY = "objective.distill"
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision -> the dtype the towers compute in
# captions whose token ids both tokenizers must agree on: case, punctuation, digits, accents, and one past any context
PROBE = ["A photo of a Cat.", "3.5 km/h, naïve café — 'quoted' & (bracketed)!", "a very long caption " * 40]


@dataclass
class TeacherFeatures:
    image: torch.Tensor  # (b, D) L2-normalised
    text: torch.Tensor  # (b, D)
    logit_scale: torch.Tensor  # t = exp(the teacher's log scale)


@dataclass
class Teacher:
    model: torch.nn.Module  # frozen, in eval mode, on the training device
    autocast: Optional[torch.dtype]  # the training precision's compute dtype, None for fp32

    def features(self, samples: Batch) -> TeacherFeatures:
        """The teacher's embeddings of the rows the student embeds, without a graph, computed as the student's are."""
        from vlp.models.text_trim import text_length_kwargs  # on use: it imports open_clip

        device = samples.image.device.type
        with torch.no_grad(), torch.autocast(device, self.autocast or torch.float32, enabled=self.autocast is not None):
            out = self.model(samples.image, samples.text,
                             **text_length_kwargs(self.model, samples.text_length))
        return TeacherFeatures(out["image_features"].float(), out["text_features"].float(),
                               torch.as_tensor(out["logit_scale"]).float().reshape(()))


def check(cfg: DistillConfig) -> None:
    """ConfigError for a teacher that is neither a path nor an open_clip architecture, or `pretrained` given with a
    path (whose weights it holds). Cheap: no file is read."""
    if _is_path(cfg.teacher):
        if cfg.pretrained is not None:
            raise ConfigError(f"{KEY}.pretrained", f"is for an open_clip architecture name; {cfg.teacher!r} is a path "
                                                   "that holds its weights: remove pretrained")
        return
    from vlp.models.config_check import check as check_model

    with _as_distill_keys():
        check_model(_arch_config(cfg))


def require_files(cfg: DistillConfig) -> None:
    """The teacher's files exist (checked before training, vlp.recipe.paths)."""
    from vlp.models.config_check import require_files as require_model_files

    if _is_path(cfg.teacher):
        require_path(f"{KEY}.teacher", cfg.teacher, "no run dir, checkpoint dir or exported folder at")
        return
    with _as_distill_keys():
        require_model_files(_arch_config(cfg))


def load_teacher(cfg: DistillConfig, student: torch.nn.Module, precision: str, device: torch.device) -> Teacher:
    """The teacher of `cfg`, frozen and in eval mode on `device`; ConfigError (one line) when its image size,
    mean/std or tokenizer differ from `student`'s."""
    check(cfg)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: the student's run draws as without
        model = _load(cfg)
    problem = preprocessing_mismatch(student, model)
    if problem:
        raise ConfigError(f"{KEY}.teacher", f"{cfg.teacher!r} reads the student's preprocessed images and token ids, "
                                            f"but {problem}; use a teacher preprocessing as the student does")
    model = model.to(device).eval().requires_grad_(False)
    return Teacher(model, AUTOCAST.get(precision))


def _load(cfg: DistillConfig) -> torch.nn.Module:
    if _is_path(cfg.teacher):
        from vlp.models import load_pretrained

        return load_pretrained(cfg.teacher)[0]
    from vlp.models import build_model

    with _as_distill_keys():
        try:
            return build_model(_arch_config(cfg))[0]
        except ConfigError:
            raise
        except ValueError as e:  # weights that are no open_clip tag, or that do not fit the architecture
            raise ConfigError(f"{KEY}.pretrained", str(e)) from None


def preprocessing_mismatch(student, teacher) -> Optional[str]:
    """What of image size, mean/std and tokenizer the teacher does differently from the student, or None."""
    mine, theirs = student.preprocess_cfg, teacher.preprocess_cfg
    for key in ("size", "mean", "std"):
        if _pair(mine[key]) != _pair(theirs[key]):
            return f"its image {key} is {theirs[key]}, the student's {mine[key]}"
    if not torch.equal(student.tokenizer(PROBE), teacher.tokenizer(PROBE)):
        return "its tokenizer gives other token ids than the student's"
    return None


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _is_path(teacher: str) -> bool:
    return os.sep in teacher or Path(teacher).exists()


def _arch_config(cfg: DistillConfig) -> ModelConfig:
    return ModelConfig(arch=cfg.teacher, pretrained=cfg.pretrained)


@contextlib.contextmanager
def _as_distill_keys():
    """Report a `model` section error of the teacher under its own keys (model.arch -> objective.distill.teacher)."""
    try:
        yield
    except ConfigError as e:
        if not e.key.startswith("model"):
            raise
        field = "pretrained" if e.key == "model.pretrained" else "teacher"
        raise ConfigError(f"{KEY}.{field}", e.message) from None
