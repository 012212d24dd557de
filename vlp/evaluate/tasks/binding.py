"""Binding tests (ARO / SugarCrepe style): per image, does the true caption score above each false caption that
breaks one binding (e.g. the digits swapped)? Reads a binding set (`vlp.evaluate.layout`: a retrieval set with the
true caption first, then one negative per kind of `binding_kinds.txt`). Geometry pairs each image with its true
caption.

`binding_<kind>_acc` = mean over images of [s(image, true) > s(image, negative)], a tie counting ½, so that a model
blind to the difference (a bag-of-words text encoder facing a swap) scores the chance level, 50%.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from vlp.evaluate import layout
from vlp.evaluate.tasks.base import register_task
from vlp.evaluate.tasks.paired import PairedTask
from vlp.recipe.schema import EvalConfig


def binding_metrics(image_emb, true_emb, negative_emb, kinds: list[str]) -> dict[str, float]:
    """`image_emb`, `true_emb` (N, D), `negative_emb` (N, K, D), L2-normalised; `kinds[k]` names negative k."""
    import torch

    true_score = (image_emb * true_emb).sum(-1, keepdim=True)
    negative_score = torch.einsum("nd,nkd->nk", image_emb, negative_emb)
    wins = (true_score > negative_score).double() + 0.5 * (true_score == negative_score).double()
    metrics = {f"binding_{kind}_acc": wins[:, k].mean().item() for k, kind in enumerate(kinds)}
    metrics["binding_mean_acc"] = wins.mean().item()
    return metrics


@register_task
class Binding(PairedTask):
    name = "binding"
    result_name = "binding"
    hub_type = "zero-shot-retrieval"  # the closest Hub task type: image-text matching
    targets = "captions"

    @classmethod
    def headline(cls, metrics: dict[str, float]) -> Optional[tuple[str, float]]:
        """The accuracy over every kind of negative (each kind's own is beside it in the results)."""
        return ("binding_mean_acc", metrics["binding_mean_acc"]) if "binding_mean_acc" in metrics else None

    def kinds(self) -> list[str]:
        kinds_file = Path(self.cfg.path) / layout.BINDING_KINDS_FILE
        if self.cfg.type != "wds" or not kinds_file.is_file():
            raise ValueError(f"eval set {self.cfg.name!r}: a binding set needs {kinds_file} (see vlp.evaluate.layout; "
                             f"`vlp data build scenes` writes one)")
        return layout.optional_lines(Path(self.cfg.path), layout.BINDING_KINDS_FILE)

    def score(self, model, tokenizer, eval_set, image_emb, targets: list, eval_cfg: EvalConfig, device: str,
              progress: bool):
        from vlp.evaluate.encode import encode_texts
        from vlp.evaluate.pictures import Evidence

        kinds = self.kinds()
        wrong = [i for i, captions in enumerate(targets) if len(captions) != 1 + len(kinds)]
        if wrong:
            raise ValueError(f"eval set {eval_set.name!r}: image {wrong[0]} has {len(targets[wrong[0]])} captions, "
                             f"expected the true one and {len(kinds)} negatives ({', '.join(kinds)})")
        text_emb = encode_texts(model, tokenizer, [c for captions in targets for c in captions], eval_cfg.batch_size,
                                device, progress, desc=f"{eval_set.name} captions")
        text_emb = text_emb.view(len(targets), 1 + len(kinds), -1)
        metrics = binding_metrics(image_emb, text_emb[:, 0], text_emb[:, 1:], kinds)
        return metrics, Evidence(eval_set, image_emb, text_emb[:, 0], image_emb)
