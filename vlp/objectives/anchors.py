"""The two directions of a contrastive batch under every gather mode, and per-sample keys gathered alongside.

Every false-negative, temperature and several-caption objective is "rows (anchors) against all columns of the other
modality": image→text rows are images, text→image rows are texts.  With `gather: global` the rows are the whole global
batch (offset 0); with `local_loss` they are this rank's rows, whose positives sit at columns offset … offset + b of the
gathered batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from vlp.objectives.distributed import gather_with_grad, world


@dataclass
class Directions:
    x: torch.Tensor  # image rows this rank computes (all of them with gather: global)
    y: torch.Tensor  # text rows
    all_x: torch.Tensor  # the global batch's images (columns of text→image)
    all_y: torch.Tensor  # the global batch's texts (columns of image→text)
    offset: int  # row i's positive is column i + offset

    def pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, rows, columns) of image→text and text→image."""
        return [("image_to_text", self.x, self.all_y), ("text_to_image", self.y, self.all_x)]

    def rows(self, column_values: torch.Tensor) -> torch.Tensor:
        """The entries of a per-column (global batch) tensor that belong to this rank's rows."""
        return column_values[self.offset:self.offset + self.x.shape[0]]


def directions(x: torch.Tensor, y: torch.Tensor, gather: str) -> Directions:
    all_x, all_y = gather_with_grad(x), gather_with_grad(y)
    if gather == "global":
        return Directions(all_x, all_y, all_x, all_y, 0)
    rank, _ = world()
    return Directions(x, y, all_x, all_y, rank * x.shape[0])


def same_key_means(row_keys: torch.Tensor, col_keys: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """For each row, the mean of the columns whose (integer) key equals the row's; every row key must occur among
    the columns.  O(B log B + B·D) by sorting, without a device sync; the sums are fp64 prefix sums, exact enough
    to subtract at any batch size."""
    order = col_keys.argsort()
    ordered = col_keys[order]
    sums = columns[order].double().cumsum(0)  # sums[k] = Σ of the first k+1 sorted columns
    low = torch.searchsorted(ordered, row_keys)
    high = torch.searchsorted(ordered, row_keys, right=True)
    before = torch.where((low > 0)[:, None], sums[(low - 1).clamp_min(0)], 0.0)
    return ((sums[high - 1] - before) / (high - low)[:, None]).to(columns.dtype)


def required(value: Optional[torch.Tensor], name: str, objective: str, how: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"objective {objective!r} needs {name} ({how})")
    return value
