"""Per-row token ranges in steering: each row of a batch steered on its own tokens.

The preference experiment runs its conditions (vector x steered activity tokens) as rows of
one batch; these tests prove that is the same as running each row alone, with and without
a KV cache, and that the delta lands on exactly the named tokens of each row.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from emolens.errors import SteeringError
from emolens.steer import RowRanges, build_steering, steering
from emolens.testing import tiny_lm, tiny_vectors

TEXTS = ["She was furious when the letter came", "I feel", "The quick brown fox jumps over it"]
ROWS = [{"happy": 1.5}, {"angry": 1.5, "calm": -0.5}, {"afraid": 1.0}]
RANGES = [(2, 5), None, [(0, 1), (3, 6)]]


@contextlib.contextmanager
def step_logits(lm):
    """Collect the last-position logits of every forward of ``lm.model``."""
    seen: list[torch.Tensor] = []
    handle = lm.model.register_forward_hook(
        lambda _m, _a, out: seen.append(out.logits[:, -1].detach().clone()))
    try:
        yield seen
    finally:
        handle.remove()


def full_logits(lm, ids, mask):
    with torch.inference_mode():
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                        use_cache=False).logits


def ids_of(lm):
    return [lm.encode_input(t).input_ids for t in TEXTS]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_each_row_of_a_batch_equals_that_row_alone(arch, side):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    ids = ids_of(lm)
    batch = lm.pad(ids, side=side)
    with steering(lm, vecs, ROWS, layers="1,2", positions=RANGES):
        together = full_logits(lm, batch["input_ids"], batch["attention_mask"])
    plain = full_logits(lm, batch["input_ids"], batch["attention_mask"])
    width = batch["input_ids"].shape[1]
    for r, (row, ranges, toks) in enumerate(zip(ROWS, RANGES, ids, strict=True)):
        one = torch.tensor([toks])
        if ranges is None:
            alone = full_logits(lm, one, torch.ones_like(one))
        else:
            with steering(lm, vecs, [row], layers="1,2", positions=[ranges]):
                alone = full_logits(lm, one, torch.ones_like(one))
        cols = slice(width - len(toks), width) if side == "left" else slice(0, len(toks))
        torch.testing.assert_close(together[r, cols], alone[0], atol=1e-4, rtol=1e-4)
        if ranges is None:  # an unsteered row is untouched bit for bit
            assert torch.equal(together[r, cols], plain[r, cols])
        else:
            assert not torch.allclose(together[r, cols], plain[r, cols], atol=1e-3)


def test_the_delta_lands_on_exactly_each_rows_tokens():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    ids = ids_of(lm)
    batch = lm.pad(ids, side="left")
    layer = 2
    before = lm.residuals(batch, [layer])[layer]
    with steering(lm, vecs, ROWS, layers=layer, positions=RANGES):
        after = lm.residuals(batch, [layer])[layer]
    scale = vecs.residual_scale(layer)
    width = batch["input_ids"].shape[1]
    for r, (row, ranges, toks) in enumerate(zip(ROWS, RANGES, ids, strict=True)):
        want = sum(s * scale * vecs.matrix(layer)[vecs.index(e)] for e, s in row.items())
        pad = width - len(toks)
        spans = [] if ranges is None else [ranges] if isinstance(ranges[0], int) else ranges
        steered = {t for a, b in spans for t in range(a, b)}
        for t in range(len(toks)):
            got = (after - before)[r, pad + t].numpy()
            expect = want if t in steered else np.zeros_like(got)
            np.testing.assert_allclose(got, expect, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_per_row_ranges_with_kv_cache_equal_no_cache(arch):
    lm = tiny_lm(arch)
    vecs = tiny_vectors(lm)
    ids = ids_of(lm)
    # ranges that start in the prompt and run on into the generated tokens, or lie past it
    ranges = [(3, len(ids[0]) + 3), None, [(1, 2), (len(ids[2]) + 1, len(ids[2]) + 4)]]
    n = 8
    with steering(lm, vecs, ROWS, layers="1,2", positions=ranges), step_logits(lm) as seen:
        outs = lm.generate_text(TEXTS, max_new_tokens=n)
    batch = lm.pad(ids, side="left")
    prompt_ids, prompt_mask = batch["input_ids"], batch["attention_mask"]
    with steering(lm, vecs, ROWS, layers="1,2", positions=ranges):
        for t in range(n):
            gen = torch.tensor([o.token_ids[:t] + [0] * (t - len(o.token_ids[:t]))
                                for o in outs], dtype=torch.long).reshape(len(outs), t)
            live = torch.tensor([[int(j < o.n_tokens) for j in range(t)] for o in outs],
                                dtype=torch.long).reshape(len(outs), t)
            ref = full_logits(lm, torch.cat([prompt_ids, gen], 1),
                              torch.cat([prompt_mask, live], 1))[:, -1]
            for r, o in enumerate(outs):
                if t < o.n_tokens:
                    assert int(ref[r].argmax()) == o.token_ids[t]
                    torch.testing.assert_close(seen[t][r], ref[r], atol=1e-4, rtol=1e-4)


def test_decoding_past_every_range_adds_nothing():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    plan = build_steering(lm, vecs, ROWS, layers=1, positions=RANGES)
    from emolens.hooks import ForwardState

    state = ForwardState()
    state.offset = 40  # far past the last range
    assert plan.delta_for(1, torch.zeros(3, 1, vecs.d), state) is None


def test_per_row_positions_errors():
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    with pytest.raises(SteeringError, match="bad token range"):
        build_steering(lm, vecs, ROWS, layers=1, positions=[(2, 5), (4, 4), None])
    with pytest.raises(SteeringError, match="one range"):
        build_steering(lm, vecs, ROWS, layers=1, positions=[(2, 5), "x", None])
    with pytest.raises(SteeringError, match="token ranges for 2 rows but the batch has 3"), \
            steering(lm, vecs, ROWS, layers=1, positions=[(0, 2), None]):
        lm.forward(lm.pad(ids_of(lm)))
    assert RowRanges([None, None]).last == 0
