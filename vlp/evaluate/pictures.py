"""Pictures of one evaluation, drawn from the embeddings the task already computed (nothing is encoded twice).

For an eval set, `draw_pictures(evidence, folder)` writes:
    modality_gap.png   paired image and text embeddings in the plane of the gap (gap direction × first principal
                       component of the rest), both centroids and the gap vector between them
                       (the figure of Liang et al. 2022 / Fahim et al. 2024)
    similarity.png     histograms of the cosine of matched vs unmatched image-text pairs (a text paired with several
                       images, such as a class embedding, is no unmatched pair for any of them)
    confusion.png      zero-shot confusion matrix, rows normalised (single-label classification sets)
    retrieval.png      query caption → its top-5 images, the true image framed green (retrieval sets)
The scatter and histograms use at most `SAMPLES` pairs and the retrieval grid a gallery of the set's first `GALLERY`
images, so a picture costs well under a second whatever the set's size.
"""
from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

SAMPLES = 500  # pairs in the scatter and histograms
GALLERY = 200  # images the retrieval grid searches
QUERIES, TOP = 4, 5
CELL, BAND, GAP = 96, 16, 8  # the retrieval grid's pixels: an image's square, the label band above it, the spacing
PITCH_X, PITCH_Y = CELL + GAP, BAND + CELL + GAP  # from one cell to the next across, down
HIT_FRAME, MISS_FRAME = (50, 205, 50), (211, 211, 211)  # limegreen 4 px around the true image, lightgray 1 px
PICTURES = {"modality_gap": "modality_gap.png", "similarity": "similarity.png", "confusion": "confusion.png",
            "retrieval": "retrieval.png"}


@dataclass
class Evidence:
    """What a task's run leaves for its pictures: the embeddings (L2-normalised, CPU) it computed anyway."""
    eval_set: Any
    paired_images: torch.Tensor  # (N, D), each with one text embedding in
    paired_texts: torch.Tensor
    image_emb: Optional[torch.Tensor] = None  # every image of the set, in set order
    classes: Optional[torch.Tensor] = None  # (C, D) zero-shot class embeddings
    labels: Optional[torch.Tensor] = None  # (N,) class of each image (single-label sets only)
    text_emb: Optional[torch.Tensor] = None  # every caption, image by image
    captions: Optional[list[str]] = None
    text_to_image: Optional[torch.Tensor] = None


def draw_pictures(evidence: Evidence, folder: str | Path, title: str = "") -> list[Path]:
    """Write the pictures `evidence` allows into `folder`; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = subsample(evidence.paired_images, evidence.paired_texts, SAMPLES)
    figures = {"modality_gap": gap_figure(x, y, title), "similarity": similarity_figure(x, y, title)}
    if evidence.classes is not None and evidence.labels is not None:
        predicted = torch.cat([(block @ evidence.classes.T).argmax(1) for block in evidence.image_emb.split(4096)])
        names = evidence.eval_set.classnames or [str(c) for c in range(len(evidence.classes))]
        figures["confusion"] = confusion_figure(confusion_counts(predicted, evidence.labels, len(names)), names, title)
    if evidence.text_emb is not None:
        figures["retrieval"] = retrieval_figure(evidence, title)
    written = []
    for name, figure in figures.items():
        path = folder / PICTURES[name]
        # zlib's fastest level: a third of the time of its default for files ~1.5x larger
        figure.savefig(path, dpi=80, pil_kwargs={"compress_level": 1})
        written.append(path)
    return written


# ---------------------------------------------------------------- the numbers behind the pictures

def subsample(x: torch.Tensor, y: torch.Tensor, limit: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    if len(x) <= limit:
        return x, y
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]
    return x[keep], y[keep]


def gap_plane(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x in 2-D, y in 2-D, share of the total variance along each axis) in the plane of the gap: axis 1 is the
    direction from the text centroid to the image centroid, axis 2 the first principal component of both modalities
    once that direction is removed. A plain 2-D PCA often hides the gap: it lies outside the top components (CLIP's
    gap direction carries little variance), so both centroids would land on top of each other."""
    both = torch.cat([x, y]).double()
    centered = both - both.mean(0)
    gap = x.double().mean(0) - y.double().mean(0)
    direction = gap / gap.norm().clamp_min(1e-12)
    along = centered @ direction
    rest = centered - along[:, None] * direction
    _, _, vt = torch.linalg.svd(rest, full_matrices=False)
    projected = torch.stack([along, rest @ vt[0]], dim=1)
    explained = projected.square().sum(0) / centered.square().sum()
    return projected[:len(x)], projected[len(x):], explained


def matched_unmatched(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosines of the pairs (x_i, y_i), cosines of every (x_i, y_j) with y_j ≠ y_i). A text paired with several
    images (a zero-shot class embedding, a repeated caption) matches each of them, so it is no negative for them."""
    sims = x.double() @ y.double().T
    _, text_id = torch.unique(y, dim=0, return_inverse=True)
    return sims.diagonal(), sims[text_id[:, None] != text_id[None, :]]


def confusion_counts(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top_images(query_emb: torch.Tensor, image_emb: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, k) indices of each query's most similar images, best first (stable: earlier images win ties)."""
    sims = query_emb @ image_emb.T
    return torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]


# ---------------------------------------------------------------- figures (matplotlib's object API: no global state)

def _figure(width: float, height: float, left: float = 0.75, right: float = 0.2, bottom: float = 0.6,
            top: float = 0.55):
    """A figure whose axes leave fixed margins (inches) for their labels. Constrained layout would fit them
    exactly, but it measures every text of the figure at each save: most of an evaluation's picture time."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return fig


def gap_figure(x: torch.Tensor, y: torch.Tensor, title: str):
    px, py, explained = gap_plane(x, y)
    fig = _figure(5, 4.2)
    ax = fig.subplots()
    ax.scatter(px[:, 0], px[:, 1], s=6, alpha=0.5, c="tab:blue", label="image")
    ax.scatter(py[:, 0], py[:, 1], s=6, alpha=0.5, c="tab:orange", label="text")
    cx, cy = px.mean(0), py.mean(0)
    ax.scatter(*cx, s=120, marker="X", c="navy", edgecolors="white", label="image centroid", zorder=3)
    ax.scatter(*cy, s=120, marker="X", c="darkred", edgecolors="white", label="text centroid", zorder=3)
    ax.annotate("", xy=tuple(cy.tolist()), xytext=tuple(cx.tolist()),
                arrowprops={"arrowstyle": "->", "lw": 2, "color": "black"}, zorder=4)
    gap = (x.double().mean(0) - y.double().mean(0)).norm().item()
    ax.set_title(f"{title}\nmodality gap ‖mean(img) − mean(txt)‖ = {gap:.3f} ({len(x)} pairs)", fontsize=9)
    ax.set_xlabel(f"gap direction, text → image centroid ({explained[0]:.0%} of variance)")
    ax.set_ylabel(f"PC1 of the rest ({explained[1]:.0%})")
    ax.legend(fontsize=7, loc="upper right", framealpha=0.7)  # "best" scans every point: slow
    ax.grid(alpha=0.3)
    return fig


def similarity_figure(x: torch.Tensor, y: torch.Tensor, title: str):
    matched, unmatched = matched_unmatched(x, y)
    fig = _figure(5, 3.4)
    ax = fig.subplots()
    bins = torch.linspace(min(matched.min(), unmatched.min()).item(), max(matched.max(), unmatched.max()).item(), 41)
    # one filled outline a histogram, not a bar patch a bin (80 patches were a third of the picture's time)
    shape = {"bins": bins.numpy(), "density": True, "histtype": "stepfilled", "alpha": 0.6}
    ax.hist(unmatched.numpy(), color="tab:gray", label=f"unmatched (mean {unmatched.mean():.3f})", **shape)
    ax.hist(matched.numpy(), color="tab:green", label=f"matched (mean {matched.mean():.3f})", **shape)
    ax.set_xlabel("cosine similarity image · text")
    ax.set_ylabel("density")
    ax.set_title(f"{title}\nmatched vs unmatched pairs ({len(x)} images)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def confusion_figure(counts: torch.Tensor, classnames: list[str], title: str):
    rates = counts.double() / counts.sum(1, keepdim=True).clamp(min=1)
    n = len(classnames)
    side = min(3 + 0.35 * n, 9)
    labelled = n <= 30  # beyond that, labels would overlap; the matrix still shows where the errors are
    names = [c[:14] for c in classnames] if labelled else []
    label = 0.35 + 0.06 * max(map(len, names), default=0)  # inches a tick label of 7-point characters takes
    fig = _figure(side + 1 + label, side + label, left=0.3 + label, bottom=0.25 + label)
    ax = fig.subplots()
    shown = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="fraction of the true class")
    if labelled:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    accuracy = counts.diagonal().sum().item() / max(counts.sum().item(), 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}\nzero-shot confusion (top-1 {accuracy:.1%}, {counts.sum().item()} images)", fontsize=9)
    return fig


def retrieval_figure(evidence: Evidence, title: str):
    gallery = min(GALLERY, len(evidence.image_emb))
    owner = evidence.text_to_image
    candidates = (owner < gallery).nonzero().flatten()
    picks = candidates[torch.linspace(0, len(candidates) - 1, min(QUERIES, len(candidates))).long()]
    ranked = top_images(evidence.text_emb[picks], evidence.image_emb[:gallery], TOP).tolist()
    needed = {i for found in ranked for i in found}
    images = {i: image for i, (image, _) in enumerate(itertools.islice(evidence.eval_set.samples(), gallery))
              if i in needed}
    hits = [[index == owner[query].item() for index in found] for query, found in zip(picks.tolist(), ranked)]
    mosaic = retrieval_mosaic([[images[i] for i in found] for found in ranked], hits)
    return _mosaic_figure(mosaic, [evidence.captions[q] for q in picks.tolist()], hits,
                          f"{title}: caption → top-{TOP} of the first {gallery} images (true image framed green)")


def retrieval_mosaic(rows: list[list], hits: list[list[bool]]) -> "np.ndarray":
    """One uint8 RGB image of the retrieval grid: row r, column c holds `rows[r][c]` fitted into a CELL-pixel
    square below a BAND of white for its label, framed 4 px `HIT_FRAME` where `hits[r][c]`, else 1 px
    `MISS_FRAME`. One image drawn once, not an axes a cell: axes cost matplotlib ~10 ms each."""
    import numpy as np
    from PIL import Image, ImageOps

    canvas = np.full((len(rows) * PITCH_Y, TOP * PITCH_X, 3), 255, dtype=np.uint8)
    for r, (row, row_hits) in enumerate(zip(rows, hits)):
        for c, (image, hit) in enumerate(zip(row, row_hits)):
            y, x, frame = r * PITCH_Y + BAND, c * PITCH_X, 4 if hit else 1
            canvas[y:y + CELL, x:x + CELL] = HIT_FRAME if hit else MISS_FRAME
            canvas[y + frame:y + CELL - frame, x + frame:x + CELL - frame] = 255
            inner = CELL - 2 * frame
            image = image.convert("RGB")
            resample = Image.Resampling.NEAREST if max(image.size) < inner else Image.Resampling.BILINEAR
            fitted = np.asarray(ImageOps.contain(image, (inner, inner), method=resample))
            top, left = y + frame + (inner - fitted.shape[0]) // 2, x + frame + (inner - fitted.shape[1]) // 2
            canvas[top:top + fitted.shape[0], left:left + fitted.shape[1]] = fitted
    return canvas


def _mosaic_figure(mosaic: "np.ndarray", captions: list[str], hits: list[list[bool]], title: str):
    """The mosaic at its pixels' aspect beside a column of the queries' captions, each cell's rank above it."""
    from matplotlib.figure import Figure

    inch = 1.4 / PITCH_X  # a cell 1.4 inches wide
    caption_w, title_h = 2.6, 0.4
    height_px, width_px = mosaic.shape[:2]
    width, height = caption_w + width_px * inch + 0.1, height_px * inch + title_h
    fig = Figure(figsize=(width, height))
    box = height_px * inch / height
    text = fig.add_axes((0, 0, caption_w / width, box))
    grid = fig.add_axes((caption_w / width, 0, width_px * inch / width, box))
    grid.imshow(mosaic, aspect="auto", interpolation="nearest", extent=(0, width_px, height_px, 0))
    text.set_xlim(0, 1)
    text.set_ylim(height_px, 0)
    for ax in (text, grid):
        ax.axis("off")
    for r, (caption, row_hits) in enumerate(zip(captions, hits)):
        text.text(0.02, r * PITCH_Y + BAND + CELL / 2, textwrap.fill(caption, 24), fontsize=10, va="center")
        for c, hit in enumerate(row_hits):
            grid.text(c * PITCH_X + CELL / 2, r * PITCH_Y + BAND - 2, f"#{c + 1}" + (" ✓" if hit else ""),
                      fontsize=7, ha="center", va="bottom")
    fig.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    return fig
