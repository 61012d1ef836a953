"""Foundation: layer convention, early exit, pooled capture, steering hooks, layer specs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ARCHITECTURES, tiny_lm

from emolens import hooks
from emolens.errors import ArchitectureError, LayerError, ModelLoadError
from emolens.lens import LanguageModel
from emolens.loading import load_model

TEXTS = ["The quick brown fox jumps over the lazy dog again and again.",
         "I feel calm.", "She was furious when the letter arrived late!"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_capture_equals_hidden_states_plus_one(arch):
    lm = tiny_lm(arch)
    batch = lm.encode(TEXTS)
    with torch.inference_mode():
        ref = lm.model(**batch, output_hidden_states=True).hidden_states
    got = lm.residuals(batch, list(range(lm.n_layers)), early_exit=False)
    real = batch["attention_mask"].bool()  # pad positions are never read
    for i in range(lm.n_layers - 1):
        torch.testing.assert_close(got[i][real], ref[i + 1][real], rtol=0, atol=0)
    # HF replaces the last hidden state by its final-normed version; ours is the raw block output
    last = lm.n_layers - 1
    with torch.inference_mode():
        torch.testing.assert_close(lm.parts.final_norm(got[last])[real], ref[last + 1][real])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_early_exit_gives_identical_activations_and_skips_deeper_blocks(arch):
    lm = tiny_lm(arch)
    batch = lm.encode(TEXTS)
    full = lm.residuals(batch, [0, 2], early_exit=False)
    calls = []
    handle = lm.layers[3].register_forward_hook(lambda *a: calls.append(1))
    try:
        early = lm.residuals(batch, [0, 2], early_exit=True)
    finally:
        handle.remove()
    assert calls == []  # block 3 never ran
    for i in (0, 2):
        assert torch.equal(full[i], early[i])
    assert all(not m._forward_hooks for m in lm.layers)  # hooks always removed


def _slow_pool(lm: LanguageModel, text: str, layer: int, skip: int) -> tuple[torch.Tensor, int]:
    """The pooling rule written out for one text: drop the first token (the sink) and
    special ids, skip min(skip, content // 4) content tokens, average the rest."""
    ids = lm.tokenizer(text, return_tensors="pt")
    h = lm.residuals(ids, [layer], early_exit=False)[layer][0]
    special = set(lm.tokenizer.all_special_ids)
    content = [t for t, tok in enumerate(ids["input_ids"][0].tolist())
               if t > 0 and tok not in special]
    kept = content[min(skip, len(content) // 4):]
    return h[kept].float().mean(0), len(kept)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_pooled_means_match_per_sequence_reference(arch, side):
    from emolens.extract.run import pooled_means

    lm = tiny_lm(arch)
    skip = 5
    batch = lm.encode(TEXTS, padding_side=side)
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    means, counts = pooled_means(lm, batch, [1, 3], skip, early_exit=True)
    for row, text in enumerate(TEXTS):
        for j, layer in enumerate((1, 3)):
            ref_mean, ref_n = _slow_pool(lm, text, layer, skip)
            assert int(counts[row]) == ref_n
            torch.testing.assert_close(means[row, j], ref_mean, rtol=1e-4, atol=1e-4)


def test_token_ranks_and_effective_skip_under_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    assert hooks.pool_mask(mask, 5).long().tolist() == [
        [0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]]
    assert hooks.pool_mask(mask, 1).long().tolist() == [
        [0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_planted_massive_norm_position_is_never_pooled(arch):
    """A position made 1000x larger inside a block (a planted attention sink) is scored per
    token but left out of the pooled read-out: pooled equals the read-out of the mean of
    the other content tokens, computed by hand."""
    from emolens.readout import Reader, read
    from emolens.testing import tiny_vectors

    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    text = "The rain fell on the roof all night long and nobody slept at all."
    planted = 6

    def plant(_module, _inputs, output):
        hidden = hooks.hidden_of(output).clone()
        hidden[:, planted] *= 1000.0
        return hooks.with_hidden(output, hidden)

    handle = lm.layers[1].register_forward_hook(plant)
    try:
        got = read(lm, text, vecs, layer=2, token_skip=0)
        batch, _ = lm.batch([text])
        h = lm.residuals(batch, [2])[2][0]
    finally:
        handle.remove()
    norms = h.norm(dim=-1)
    assert norms[planted] > 50 * norms.median()  # the plant really is massive
    keep = [t for t in range(1, len(got.tokens)) if t != planted]
    want = Reader(vecs, [2]).scores(2, h[keep].mean(0))
    np.testing.assert_allclose(got.pooled, want.numpy(), rtol=1e-4, atol=1e-5)
    assert got.pool_start == 1  # the first token is the sink, never pooled


def test_pool_exclude_marks_sink_special_and_template_tokens():
    lm = tiny_lm("qwen2")
    chat = [{"role": "user", "content": "My cat came home today."}]
    batch, enc = lm.batch(["Plain words here.", chat], side="left")
    ex = lm.pool_exclude(batch, enc)
    real = batch["attention_mask"].bool()
    first = real.long().argmax(-1)
    assert bool(ex[0, first[0]]) and bool(ex[1, first[1]])  # the sink of each row
    lo, hi = enc[1].content[0]
    pad = int((~real[1]).sum())
    inside = torch.zeros(real.shape[1], dtype=torch.bool)
    inside[pad + lo:pad + hi] = True
    assert not bool(ex[1][inside].any())  # the message content is pooled
    assert bool(ex[1][real[1] & ~inside].all())  # every template token is not
    special = set(lm.tokenizer.all_special_ids)
    for col, tok in enumerate(batch["input_ids"][1].tolist()):
        if real[1, col] and tok in special:
            assert bool(ex[1, col])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_edit_residual_changes_output_and_removal_restores_exact_logits(arch):
    lm = tiny_lm(arch)
    batch = lm.encode(TEXTS)
    with torch.inference_mode():
        before = lm.model(**batch).logits.clone()
        delta = 3 * torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0))
        with hooks.edit_residual(lm.layer_modules([1]), lambda i, h: delta):
            steered = lm.model(**batch).logits.clone()
        after = lm.model(**batch).logits
    assert (steered - before).abs().max() > 1e-3
    assert torch.equal(before, after)


def test_hooks_removed_even_when_forward_raises(llama_lm):
    def boom():
        raise ValueError("bad")

    with pytest.raises(ValueError):
        hooks.run_capture(boom, llama_lm.layer_modules([0, 1]))
    assert all(not m._forward_hooks for m in llama_lm.layers)


def test_hooks_follow_dtype():
    lm = tiny_lm("llama")
    lm.model.to(torch.bfloat16)
    batch = lm.encode(TEXTS)
    with torch.inference_mode(), hooks.edit_residual(
            lm.layer_modules([0]), lambda i, h: torch.ones(h.shape[-1])):  # fp32 delta
        out = lm.model(**batch).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_layer_specs(llama_lm):
    assert llama_lm.resolve_layers("all") == [0, 1, 2, 3]
    assert llama_lm.resolve_layers("1,3") == [1, 3]
    assert llama_lm.resolve_layers("1-3") == [1, 2, 3]
    assert llama_lm.resolve_layers(-1) == [3]
    assert llama_lm.resolve_layer(0.66) == 3
    assert llama_lm.resolve_layer("0.5") == 2
    for bad in (4, -5, "x", "1.5", "7"):
        with pytest.raises(LayerError):
            llama_lm.resolve_layers(bad)


def test_unknown_architecture_is_a_clear_error():
    class NoLayers(torch.nn.Module):
        pass

    with pytest.raises(ArchitectureError, match="NoLayers"):
        LanguageModel(NoLayers(), None, name="x")


def test_chat_encoding_marks_assistant_start_and_messages(llama_lm):
    msgs = [{"role": "user", "content": "How does he feel?"}]
    enc = llama_lm.encode_chat(msgs, assistant_prefix="He feels")
    prompt = llama_lm.format_chat(msgs)
    assert enc.text == prompt + "He feels"
    s, e = enc.offsets[enc.assistant_start]
    assert e <= len(prompt) and prompt.endswith("assistant\n")
    lo, hi = enc.message_tokens[0]
    covered = enc.text[enc.offsets[lo][0]:enc.offsets[hi - 1][1]]
    assert "How does he feel?" in covered


def test_bad_model_specs_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="no such model"):
        load_model(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelLoadError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        load_model("nobody/no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_local_hf_folder_loads(tmp_path):
    lm = tiny_lm("qwen2")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.n_layers == 4 and loaded.fingerprint()["architecture"] == "qwen2"
    batch = lm.encode(TEXTS)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(**batch.to("cpu")).logits,
                                   lm.model(**batch).logits)
