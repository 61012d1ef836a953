"""The KV-cached decoding loop: equals Hugging Face generate, batches, stops, seeds, streams."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHITECTURES, tiny_lm

from emolens.decode import decode, encode_prompts, stop_ids
from emolens.errors import EmolensError, SteeringError

PROMPTS = ["I feel", "She was furious when the letter arrived late",
           [{"role": "user", "content": "How does he feel?"}]]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_greedy_equals_hf_generate(arch):
    lm = tiny_lm(arch)
    for prompt in PROMPTS:
        ours = lm.generate_text([prompt], max_new_tokens=12)[0]
        ids = torch.tensor([encode_prompts(lm, [prompt])[0]])
        with torch.inference_mode():
            ref = lm.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    max_new_tokens=12, eos_token_id=sorted(stop_ids(lm)),
                                    pad_token_id=lm.tokenizer.pad_token_id)
        want = ref[0, ids.shape[1]:].tolist()
        stops = stop_ids(lm)
        if any(t in stops for t in want):  # HF keeps the stop token; we drop it
            want = want[:min(i for i, t in enumerate(want) if t in stops)]
        assert ours.token_ids == want
        assert ours.prompt_tokens == ids.shape[1]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_left_padded_batch_equals_each_prompt_alone(arch):
    lm = tiny_lm(arch)
    together = lm.generate_text(PROMPTS, max_new_tokens=10)
    for prompt, got in zip(PROMPTS, together, strict=True):
        alone = lm.generate_text([prompt], max_new_tokens=10)[0]
        assert got.token_ids == alone.token_ids and got.text == alone.text


def test_pad_layout_left_and_right():
    from emolens.model import pad_rows

    left = pad_rows([[5, 6, 7], [8]], 0, side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    right = pad_rows([[5, 6, 7], [8]], 9, side="right")
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]


def test_stop_token_ends_a_row_and_is_not_in_the_text(llama_lm):
    free = llama_lm.generate_text(["I feel"], max_new_tokens=6)[0]
    assert not free.finished and free.n_tokens == 6
    third = free.token_ids[2]
    steps = list(decode(llama_lm, encode_prompts(llama_lm, ["I feel", "I feel calm"]),
                        max_new_tokens=6, stop={third}))
    done_at = [bool(d[0]) for _t, d in steps]
    assert done_at.index(True) == 2  # row 0 is done on the step that sampled the stop id
    # generate_text with a custom stop set: stop at the third token
    from emolens import decode as generation

    original = generation.stop_ids
    generation.stop_ids = lambda lm: {third}
    try:
        cut = llama_lm.generate_text(["I feel"], max_new_tokens=6)[0]
    finally:
        generation.stop_ids = original
    assert cut.finished and cut.token_ids == free.token_ids[:2]


def test_eos_and_chat_markers_are_stop_ids(llama_lm):
    ids = stop_ids(llama_lm)
    assert llama_lm.tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert llama_lm.tokenizer.eos_token_id in ids


def test_sampling_is_seeded(llama_lm):
    kw = dict(max_new_tokens=10, temperature=1.0, top_p=0.9)
    a = llama_lm.generate_text(["I feel"] * 3, seed=7, **kw)
    b = llama_lm.generate_text(["I feel"] * 3, seed=7, **kw)
    c = llama_lm.generate_text(["I feel"] * 3, seed=8, **kw)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len({tuple(x.token_ids) for x in a}) > 1  # rows sample independently


def test_zero_new_tokens_and_bad_input(llama_lm):
    out = llama_lm.generate_text(["I feel"], max_new_tokens=0)[0]
    assert out.token_ids == [] and out.text == "" and not out.finished
    with pytest.raises(EmolensError, match="list of prompts"):
        llama_lm.generate_text("I feel")
    assert isinstance(llama_lm.generate("I feel", max_new_tokens=2), str)
    for bad in ({"max_new_tokens": -1}, {"temperature": float("nan")}, {"top_p": 5.0}):
        with pytest.raises(EmolensError):
            llama_lm.generate("I feel", **bad)
    with pytest.raises(EmolensError, match="at least one token"):
        llama_lm.generate_text([""])
    with pytest.raises(SteeringError, match="needs vectors"):
        llama_lm.generate_text(["I feel"], steer={"calm": 0.1})
    with pytest.raises(SteeringError, match="need a monitor"):
        list(llama_lm.stream("I feel", rules=object()))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_stream_yields_the_same_tokens_and_text(arch):
    lm = tiny_lm(arch)
    prompt = PROMPTS[2]
    full = lm.generate_text([prompt], max_new_tokens=12)[0]
    steps = list(lm.stream(prompt, max_new_tokens=12))
    assert [s.token_id for s in steps] == full.token_ids
    assert [s.index for s in steps] == list(range(full.n_tokens))
    assert all(s.scores is None and s.alerts is None for s in steps)
    text = "".join(s.text for s in steps)
    # pieces concatenate to the text (a trailing partial UTF-8 character is held back)
    assert full.text.startswith(text) and len(full.text) - len(text) <= 1


def test_stream_pieces_follow_multibyte_characters(llama_lm):
    from emolens.decode import _Detokenizer

    tok = llama_lm.tokenizer
    word = "café ☕ ok"
    ids = tok(word, add_special_tokens=False)["input_ids"]
    det = _Detokenizer(tok)
    pieces = [det.push(i) for i in ids]
    assert "".join(pieces) == word
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # at least one byte-piece was held back until its character completed


def test_hooks_are_removed_after_generation_and_early_close(llama_lm):
    from test_readout import tiny_vectors

    vecs = tiny_vectors(llama_lm)
    llama_lm.generate_text(["I feel"], max_new_tokens=3, monitor=vecs,
                           steer=(vecs, {"happy": 0.5}))
    it = llama_lm.stream("I feel", max_new_tokens=5, monitor=vecs, steer={"happy": 0.5})
    next(it)
    assert any(m._forward_hooks for m in llama_lm.layers)  # live while streaming
    it.close()
    assert all(not m._forward_hooks for m in llama_lm.layers)
    assert not llama_lm.model._forward_pre_hooks
