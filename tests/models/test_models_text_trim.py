"""Trimming the padding after a batch's longest caption changes nothing for causal EOT-pooled text towers."""
import open_clip
import pytest
import torch

from vlp.data.batch import LENGTH_BUCKET, Batch, text_length
from vlp.models import build_model
from vlp.models.text_trim import needed_length, supports_trimming, text_length_kwargs
from vlp.recipe import ModelConfig
from vlp.train import forward_features

torch.set_num_threads(1)

TEXT = {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
          "text_cfg": TEXT}
CAPTIONS = ["a seven", "the handwritten number seven, written quickly by hand", "7", ""]


def full_context(model, tokens):
    """open_clip's own encode_text: always the whole context."""
    return open_clip.CLIP.encode_text(model, tokens, normalize=True)


def lengths_seen(model) -> list[int]:
    """Sequence length of every call of the text transformer: what trimming shortens."""
    seen = []
    model.transformer.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[1]))
    return seen


@pytest.mark.parametrize("pool_type", ["argmax", "eos"])
def test_trimmed_embeddings_and_gradients_equal_full_context(pool_type):
    torch.manual_seed(0)
    model, tokenizer = build_model(ModelConfig(config={**CONFIG, "text_cfg": {**TEXT, "pool_type": pool_type}}))
    assert supports_trimming(model)
    if pool_type == "eos":
        model.text_eos_id = tokenizer.eot_token_id
    tokens = tokenizer(CAPTIONS)
    seen = lengths_seen(model)
    weights = torch.randn(len(CAPTIONS), CONFIG["embed_dim"])  # a loss whose gradient is not ~0
    trimmed = model.encode_text(tokens, normalize=True)
    (trimmed * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    full = full_context(model, tokens)
    (full * weights).sum().backward()
    assert seen[0] == int(tokens.argmax(-1).max()) + 1 < TEXT["context_length"]  # really shorter
    assert seen[1] == TEXT["context_length"]
    torch.testing.assert_close(trimmed, full, atol=1e-6, rtol=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, atol=1e-5, rtol=1e-5, msg=name)  # float32 sum order


def test_model_forward_uses_trimming_and_can_be_disabled():
    model, tokenizer = build_model(ModelConfig(config=CONFIG))
    plain, _ = build_model(ModelConfig(config=CONFIG, trim_text_padding=False))
    plain.load_state_dict(model.state_dict())
    image, tokens = torch.randn(len(CAPTIONS), 3, 16, 16), tokenizer(CAPTIONS)
    trimmed_lengths, plain_lengths = lengths_seen(model), lengths_seen(plain)
    out, reference = model(image, tokens), plain(image, tokens)  # the training forward, not encode_text alone
    longest = int((tokens != 0).sum(-1).max())  # [SOT] caption [EOT], then zero padding
    assert trimmed_lengths == [longest] and longest < TEXT["context_length"]
    assert plain_lengths == [TEXT["context_length"]]
    torch.testing.assert_close(out["text_features"], reference["text_features"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["image_features"], reference["image_features"], atol=0, rtol=0)


def test_bidirectional_last_token_tower_is_not_trimmed():
    config = {**CONFIG, "text_cfg": {**TEXT, "no_causal_mask": True, "pool_type": "last"}}
    model, _ = build_model(ModelConfig(config=config))
    assert not supports_trimming(model) and "encode_text" not in vars(model)


def tensor_reads_forbidden(monkeypatch):
    """Make every tensor → Python read raise: on a GPU each one waits for the device."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host")
    for name in ("__int__", "__index__", "__bool__", "__float__", "item", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)


@pytest.mark.parametrize("pool_type", ["argmax", "eos"])
def test_the_data_loaders_length_is_exact_bucketed_and_read_from_no_tensor(pool_type, monkeypatch):
    torch.manual_seed(0)
    model, tokenizer = build_model(ModelConfig(config={**CONFIG, "text_cfg": {**TEXT, "pool_type": pool_type}}))
    model.text_eos_id = tokenizer.eot_token_id
    batch = Batch(torch.randn(len(CAPTIONS), 3, 16, 16), tokenizer(CAPTIONS)).measured()  # as the loader does
    exact = needed_length(batch.text, pool_type, tokenizer.eot_token_id)
    assert batch.text_length == LENGTH_BUCKET * 2 and exact <= batch.text_length < TEXT["context_length"]
    seen = lengths_seen(model)
    reference = full_context(model, batch.text)
    with monkeypatch.context() as patched:
        tensor_reads_forbidden(patched)
        out = forward_features(model, batch)  # the training forward: takes the batch's length, reads no token
    assert seen[-1] == batch.text_length
    torch.testing.assert_close(out.text, reference, atol=1e-6, rtol=1e-5)
    with pytest.raises(AssertionError, match="read back"):  # without the length, the model reads the tokens
        tensor_reads_forbidden(monkeypatch)
        forward_features(model, Batch(batch.image, batch.text))


def test_length_needs_no_pad_id_and_covers_negatives():
    ids = torch.tensor([[5, 9, 7, 7, 7, 7, 7, 7, 7, 7], [5, 6, 9, 0, 0, 0, 0, 0, 0, 0]])  # row 0 pads with its EOT 7
    assert text_length(ids) == 8  # keeps row 0's EOT at 2 (the first of its run), rounded up to the bucket
    assert text_length(ids[:, :6]) == 6  # never past the context
    negatives = torch.zeros(2, 3, 10, dtype=torch.long)
    negatives[1, 2, :9] = 4  # a hard negative whose padding starts at 9
    assert text_length(ids, negatives) == 10
    assert Batch(torch.zeros(2, 3, 4, 4), ids, negatives).measured().text_length == 10
    assert [part.text_length for part in Batch(torch.zeros(2, 3, 4, 4), ids, text_length=8).split(1)] == [8, 8]


def test_the_length_reaches_vlps_towers_through_wrappers_and_only_them():
    model, _ = build_model(ModelConfig(config=CONFIG))
    for wrapped in (model, torch.compile(model), torch.nn.DataParallel(torch.compile(model)),
                    torch.compile(torch.nn.DataParallel(model))):  # DataParallel: DDP's unwrapping, on a CPU
        assert text_length_kwargs(wrapped, 8) == {"text_length": 8}
    assert text_length_kwargs(model, None) == {}
    assert text_length_kwargs(open_clip.CLIP(**CONFIG), 8) == {}  # DualEncoder's plain forward(image, text)
