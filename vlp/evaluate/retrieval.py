"""Image↔text retrieval metrics on L2-normalised embeddings (pure torch, no model).

Names and their CLIP_benchmark equivalents:
    image_to_text_R@k  (an image finds one of its captions in the top k) = CLIP_benchmark `text_retrieval_recall@k`
    text_to_image_R@k  (a caption finds its image in the top k)          = CLIP_benchmark `image_retrieval_recall@k`
An image with several captions is a hit if ANY of them is in its top k (as in CLIP_benchmark and CLIP papers); its
rank is the rank of its best-ranked caption. Mean/median ranks are 1-based; the median of an even count is the mean
of the two middle ranks. Ties: see `vlp.evaluate.ranking`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from vlp.evaluate.ranking import BLOCK_ELEMENTS, blocked_best_positive_rank, blocked_target_rank


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                      recall_k: Sequence[int] = (1, 5, 10), block_elements: int = BLOCK_ELEMENTS) -> dict[str, float]:
    """`text_to_image[j]` is the index of the image caption j describes; every image needs at least one caption."""
    text_to_image = text_to_image.long()
    _check_inputs(image_emb, text_emb, text_to_image, recall_k)
    i2t = blocked_best_positive_rank(image_emb, text_emb, text_to_image, block_elements)
    t2i = blocked_target_rank(text_emb, image_emb, text_to_image, block_elements)
    metrics: dict[str, float] = {}
    for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        for k in recall_k:
            metrics[f"{name}_R@{k}"] = (ranks <= k).double().mean().item()
        metrics[f"{name}_mean_rank"] = ranks.double().mean().item()
        metrics[f"{name}_median_rank"] = ranks.double().quantile(0.5).item()
    return metrics


def _check_inputs(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                  recall_k: Sequence[int]) -> None:
    if len(image_emb) == 0 or len(text_emb) == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if text_to_image.shape != (len(text_emb),):
        raise ValueError(f"text_to_image has shape {tuple(text_to_image.shape)}, expected ({len(text_emb)},)")
    if text_to_image.min() < 0 or text_to_image.max() >= len(image_emb):
        raise ValueError("text_to_image holds an index outside the image range")
    captions_per_image = torch.bincount(text_to_image, minlength=len(image_emb))
    if (captions_per_image == 0).any():
        missing = (captions_per_image == 0).nonzero().flatten()[:5].tolist()
        raise ValueError(f"images without any caption (first: {missing}); every image needs one")
    if any(k < 1 for k in recall_k):
        raise ValueError(f"recall_k must be positive integers, got {list(recall_k)}")
