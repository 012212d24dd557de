"""The ONNX format: the image and the text encoder as two ONNX graphs, with the facts a runtime needs beside them.

`OUT_DIR/onnx/` holds `image_encoder.onnx` (pixel_values → image_embeds), `text_encoder.onnx` (input_ids →
text_embeds), `preprocess.json` and the tokenizer files, so that folder alone serves a runtime. Both graphs output the
projected embeddings unnormalised, as open_clip's `encode_image`/`encode_text` and transformers' `get_*_features` do:
the runtime L2-normalises them before cosine similarities (preprocess.json says so).
"""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from open_clip.hf_model import HFTextEncoder

from vlp.export.formats import open_clip_model
from vlp.export.onnx_preprocess import preprocess_facts, write_tokenizer_files

ONNX_DIR, IMAGE_FILE, TEXT_FILE, PREPROCESS_FILE = "onnx", "image_encoder.onnx", "text_encoder.onnx", "preprocess.json"
OPSET = 18
TRACE_BATCH = 2  # torch.export specialises sizes 0 and 1: a batch of 2 keeps the batch axis symbolic
INLINE_WEIGHTS = 2**30  # bytes of model weights above which they go to NAME.onnx.data (protobuf caps a file at 2 GiB)


class MissingExtra(RuntimeError):
    """An optional dependency the requested format needs is not installed."""


def require_onnx() -> None:
    """Checked before anything is written, so a missing package costs no half-written export."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise MissingExtra(f"--format onnx needs the {e.name} package: pip install vlp[onnx]") from None


class ImageEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)


class TextEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, open_clip.CLIP):
            # vlp's CLIP may trim padding by reading caption lengths from the tokens, a data-dependent shape that
            # cannot be traced; open_clip's own encoder computes the same embeddings over the full context
            return open_clip.CLIP.encode_text(self.model, input_ids)
        return self.model.encode_text(input_ids)


def dynamic_text_length(model: torch.nn.Module) -> bool:
    """HF text towers take any length (positions and the padding mask follow the input); open_clip's own text
    transformer is traced at its context length, its causal mask and positions being buffers of that size."""
    return isinstance(getattr(model, "text", None), HFTextEncoder)


def write_onnx(model: torch.nn.Module, tokenizer, out_dir: Path) -> None:
    model = open_clip_model(model)
    folder = out_dir / ONNX_DIR
    folder.mkdir()
    batch = torch.export.Dim("batch")
    size = model.visual.image_size
    height, width = (size, size) if isinstance(size, int) else size
    _export(ImageEncoder(model), torch.zeros(TRACE_BATCH, 3, height, width), "pixel_values", "image_embeds",
            {0: batch}, folder / IMAGE_FILE)
    dynamic = dynamic_text_length(model)
    text_axes = {0: batch, 1: torch.export.Dim("text_length")} if dynamic else {0: batch}
    prompts = ["a photo of a cat.", "two dogs playing in the snow"][:TRACE_BATCH]
    _export(TextEncoder(model), tokenizer(prompts), "input_ids", "text_embeds", text_axes, folder / TEXT_FILE)
    facts = preprocess_facts(model, tokenizer, dynamic)
    (folder / PREPROCESS_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    write_tokenizer_files(model, tokenizer, folder)


def _export(encoder: torch.nn.Module, example: torch.Tensor, input_name: str, output_name: str, axes: dict,
            path: Path) -> None:
    size = sum(t.numel() * t.element_size() for t in (*encoder.parameters(), *encoder.buffers()))
    with torch.no_grad():
        torch.onnx.export(encoder.eval(), (example,), str(path), dynamo=True, opset_version=OPSET, verbose=False,
                          input_names=[input_name], output_names=[output_name], dynamic_shapes={input_name: axes},
                          external_data=size > INLINE_WEIGHTS)
