"""Zero-shot classification on L2-normalised embeddings (pure torch, no model).

Metrics use CLIP_benchmark's names: `acc1`, `acc5` (NaN with fewer than 5 classes), `mean_per_class_recall`
(balanced accuracy: recall averaged over the classes present in the labels) and, for multi-label sets,
`mean_average_precision` (classes without any positive count as AP 0, as in CLIP_benchmark).
Ties: see `vlp.evaluate.ranking`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp.evaluate.ranking import BLOCK_ELEMENTS, blocked_target_rank, rows_per_block


def class_embeddings(prompt_emb: torch.Tensor, prompt_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """normalise(mean over a class's prompts of normalise(prompt embedding)) for each class → (num_classes, D)."""
    counts = torch.bincount(prompt_class, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"classes without prompts: {(counts == 0).nonzero().flatten()[:5].tolist()}")
    summed = torch.zeros(num_classes, prompt_emb.shape[1], dtype=prompt_emb.dtype, device=prompt_emb.device)
    summed.index_add_(0, prompt_class, F.normalize(prompt_emb, dim=-1))
    return F.normalize(summed / counts[:, None].to(prompt_emb.dtype), dim=-1)


def zeroshot_metrics(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor,
                     block_elements: int = BLOCK_ELEMENTS) -> dict[str, float]:
    """`labels`: (N,) class indices, or (N, C) multi-hot for a multi-label set."""
    if len(image_emb) == 0:
        raise ValueError("zero-shot classification needs at least one image")
    if labels.dim() == 2:
        if labels.shape != (len(image_emb), len(class_emb)):
            raise ValueError(f"multi-label targets have shape {tuple(labels.shape)}, "
                             f"expected ({len(image_emb)}, {len(class_emb)})")
        scores = _blocked_scores(image_emb, class_emb, block_elements)
        return {"mean_average_precision": average_precision(scores, labels.bool()).mean().item()}
    labels = labels.long()
    if labels.min() < 0 or labels.max() >= len(class_emb):
        raise ValueError(f"labels must lie in [0, {len(class_emb)}), got range [{labels.min()}, {labels.max()}]")
    ranks = blocked_target_rank(image_emb, class_emb, labels, block_elements)
    acc5 = (ranks <= 5).double().mean().item() if len(class_emb) >= 5 else float("nan")
    return {"acc1": (ranks == 1).double().mean().item(), "acc5": acc5,
            "mean_per_class_recall": mean_per_class_recall(ranks == 1, labels)}


def mean_per_class_recall(correct: torch.Tensor, labels: torch.Tensor) -> float:
    """Recall of each class that has samples, averaged (sklearn's balanced_accuracy_score)."""
    per_class_total = torch.bincount(labels)
    per_class_hits = torch.bincount(labels[correct], minlength=len(per_class_total))
    present = per_class_total > 0
    return (per_class_hits[present].double() / per_class_total[present]).mean().item()


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """AP of each column: mean precision at the rank of each positive, over a descending (stable) sort."""
    order = torch.sort(scores, dim=0, descending=True, stable=True).indices
    truth = positive.gather(0, order).double()
    precision = truth.cumsum(0) / torch.arange(1, len(scores) + 1, dtype=torch.float64, device=scores.device)[:, None]
    return (precision * truth).sum(0) / truth.sum(0).clamp(min=1)


def _blocked_scores(image_emb: torch.Tensor, class_emb: torch.Tensor, block_elements: int) -> torch.Tensor:
    step = rows_per_block(len(class_emb), block_elements)
    return torch.cat([image_emb[i:i + step] @ class_emb.T for i in range(0, len(image_emb), step)])
