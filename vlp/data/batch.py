"""What the data pipeline hands the trainer (`Batch`) and what a worker hands the loader (`Item`)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from vlp.data.sources import Findings


@dataclass
class Batch:
    """One process's batch of a training step."""
    image: torch.Tensor  # (b, 3, H, W), augmented
    text: torch.Tensor  # (b, L) caption token ids
    negative_text: Optional[torch.Tensor] = None  # (b, K, L) hard-negative caption token ids
    bad_samples: dict[str, int] = field(default_factory=dict)  # skipped since the previous batch, by kind
    resume_skip: Optional[int] = None  # `batches(epoch, skip=resume_skip)` continues right after this batch
    position: Optional[int] = None  # this batch's place in its rank's epoch

    def __len__(self) -> int:
        return self.text.shape[0]

    def to(self, device: torch.device) -> "Batch":
        def move(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t.to(device, non_blocking=True)
        return replace(self, image=move(self.image), text=move(self.text), negative_text=move(self.negative_text))

    def split(self, size: int) -> list["Batch"]:
        """Micro-batches of `size` samples (the last may be smaller); the bookkeeping stays with the whole batch."""
        images, texts = torch.split(self.image, size), torch.split(self.text, size)
        negatives = torch.split(self.negative_text, size) if self.negative_text is not None else [None] * len(texts)
        return [Batch(i, t, n) for i, t, n in zip(images, texts, negatives)]


@dataclass
class Item:
    """What a worker produces at one position of its epoch: a batch, or (batch None) the end of its data, or an
    error; with the bad samples met since its previous item and the shards found to differ from sizes.json."""
    position: int = -1
    batch: Optional[Batch] = None
    bad_samples: dict[str, int] = field(default_factory=dict)
    shards: Findings = field(default_factory=dict)
    error: Optional[str] = None
