"""emolens side by side with nnsight, TransformerLens, steering-vectors and repeng.

One command (the peers live in their own venv, so the project's stays as it is)::

    bash benchmarks/setup_peers.sh && benchmarks/.venv-peers/bin/python benchmarks/bench_peers.py

writes ``benchmarks/results/peers.json``. The ``bench`` extra of pyproject.toml names the
peers; three pin releases they do not need (numpy<2, transformers<5, wandb), so
``setup_peers.sh`` adds those with ``--no-deps``.

Every section runs in this one process, on the default model (SmolLM2-135M-Instruct, fp32),
with interleaved rounds: an untimed warm-up of every method, then ``rounds`` rounds, each
timing every method once in an order that rotates, after ``gc.collect()``. Reported per
method: the median time, its min/max, and the ratio to the section's baseline as the median
over rounds of (method time / baseline time in the same round), with its quartiles. Outputs
are checked against each other before timing (``checks``). Wrappers that change the model
they wrap (nnsight, TransformerLens, repeng) get their own copy of the weights.

Sections (``--sections``, default all):

* ``extract``: mean-pooled residual of 16 curated stories at layer 20 and at all 30 layers:
  naive ``output_hidden_states``; a hand-written early-exit hook (the limit of the approach);
  nnsight ``trace`` + ``stop()``; TransformerLens ``run_with_cache(stop_at_layer=...)``;
  emolens ``pooled_means`` on the same padded batch, and ``pooled_features`` with length-sorted
  batches of 16 and 4. A diagnostic row runs nnsight on the same length-sorted batches of 4,
  to show where the gain comes from. ``extract_bf16`` repeats layer 20 in bfloat16.
* ``generate``: 64 greedy tokens, batch 1: HF ``generate`` (baseline), emolens plain /
  steered (random unit vector x 5 at layer 20) / monitored (171 emotions), steering-vectors
  and repeng with the same vector.
* ``sweep``: 9 steering conditions (multipliers -5..5 on that vector) x 48 tokens: emolens as
  9 rows of one batch with per-row strengths, and one after another; plain batched
  generation of 9 rows (the ceiling); steering-vectors one after another (it has no per-row
  form); repeng with a raw [9, 1, d] control, and one after another; and the registry's
  ``steering-sweep`` analysis at 9 strengths (its generation batched, plus the read-back of
  the texts). Baseline: emolens one after another.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata as md
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_load, write  # noqa: E402

LAYER = 20
PROMPT = [{"role": "user", "content": "Write a long, detailed description of a busy train "
                                      "station in the morning."}]
PEERS = ("nnsight", "transformer-lens", "steering-vectors", "repeng", "transformers", "torch")


# ---------------------------------------------------------------------------------- timing


def interleave(methods: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Warm each method up once, then time every method once per round in a rotating order."""
    names = list(methods)
    for name in names:
        methods[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            t0 = time.perf_counter()
            with torch.inference_mode():
                methods[name]()
            times[name].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f}"
                                                       for k, v in times.items()),
              file=sys.stderr, flush=True)
    return times


def summary(times: dict[str, list[float]], baseline: str, work: dict[str, float] | None = None,
            unit: str = "tokens") -> dict[str, dict[str, Any]]:
    """Median, spread and paired ratios to ``baseline`` (median and quartiles over rounds)."""
    out = {}
    for name, ts in times.items():
        paired = [t / b for t, b in zip(ts, times[baseline], strict=True)]
        q1, q2, q3 = np.quantile(paired, [0.25, 0.5, 0.75])
        row = {"median_s": round(statistics.median(ts), 4), "min_s": round(min(ts), 4),
               "max_s": round(max(ts), 4), "n": len(ts),
               "ratio": round(float(q2), 3), "ratio_q1_q3": [round(float(q1), 3),
                                                             round(float(q3), 3)],
               "speedup": round(1 / float(q2), 3)}
        if work and name in work:
            row[f"{unit}_per_s"] = round(work[name] / statistics.median(ts), 1)
        out[name] = row
    return out


def versions() -> dict[str, str]:
    """Installed versions of emolens and every peer."""
    out = {}
    for name in ("emolens", *PEERS):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


# ----------------------------------------------------------------------------- the models


class Setup:
    """The default model as emolens loads it, plus fresh copies for wrappers that mutate."""

    def __init__(self) -> None:
        from emolens.loading import _gguf_cache, default_gguf_path, load_model

        self.lm = load_model("default")
        self.folder = _gguf_cache(default_gguf_path())
        self.tok = self.lm.tokenizer

    def copy(self, dtype: torch.dtype = torch.float32) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.folder, dtype=dtype).eval()

    def nnsight(self, dtype: torch.dtype = torch.float32) -> Any:
        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return LanguageModel(self.copy(dtype), tokenizer=self.tok)

    def bridge(self) -> Any:
        from transformer_lens.model_bridge import TransformerBridge

        return TransformerBridge.boot_transformers(str(self.folder), hf_model=self.copy(),
                                                   tokenizer=self.tok, device="cpu")


def _texts(setup: Setup, n: int = 16) -> list[str]:
    """``n`` curated stories spread over the corpus' lengths (the same texts for all)."""
    from emolens.corpus import load_corpus

    stories = sorted(load_corpus("default").stories(), key=lambda r: r.id)
    picked = stories[:: max(1, len(stories) // n)][:n]
    return [r.text for r in picked]


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's real tokens after its first (the attention sink), as emolens
    pools, so every method's output can be checked against emolens'."""
    keep = mask.clone()
    keep[torch.arange(len(mask)), mask.long().argmax(1)] = 0
    m = keep.to(hidden.dtype)[:, :, None]
    return ((hidden.float() * m).sum(1) / m.sum(1)).float()


class _Stop(Exception):
    pass


# ----------------------------------------------------------------------------- extraction


def section_extract(setup: Setup, rounds: int, dtype: torch.dtype = torch.float32,
                    all_layers: bool = True, n_texts: int = 16) -> dict[str, Any]:
    """Pooled layer-20 (and all-layer) activations of 16 stories, every tool, one batch."""
    from emolens.extract import compute_model, pooled_features, pooled_means

    lm = compute_model(setup.lm, dtype if dtype != torch.float32 else None)
    hf = lm.model
    texts = _texts(setup, n_texts)
    ids = [setup.tok(t)["input_ids"] for t in texts]
    batch = lm.pad(ids)
    mask = batch["attention_mask"]
    real = int(mask.sum())
    nn_lm = setup.nnsight(dtype)
    bridge = setup.bridge() if dtype == torch.float32 else None
    result: dict[str, Any] = {"texts": len(texts), "real_tokens": real,
                              "padded_tokens_bs16": int(mask.numel()),
                              "dtype": str(dtype).replace("torch.", "")}

    def naive(layers: list[int]) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            out = hf(**batch, output_hidden_states=True)
            return torch.stack([_mean_pool(out.hidden_states[i + 1], mask) for i in layers], 1)
        return go

    def hand(layers: list[int]) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            store: dict[int, torch.Tensor] = {}

            def make(i: int) -> Callable[..., None]:
                def hook(_m: Any, _a: Any, out: Any) -> None:
                    store[i] = _mean_pool(out[0] if isinstance(out, tuple) else out, mask)
                    if i == max(layers):
                        raise _Stop
                return hook
            handles = [hf.model.layers[i].register_forward_hook(make(i)) for i in layers]
            try:
                hf(**batch)
            except _Stop:
                pass
            finally:
                for h in handles:
                    h.remove()
            return torch.stack([store[i] for i in layers], 1)
        return go

    def nnsight_stop(layers: list[int], b: dict[str, torch.Tensor] | None = None
                     ) -> Callable[[], torch.Tensor]:
        def go(b: dict[str, torch.Tensor] = b if b is not None else batch) -> torch.Tensor:
            saved: list[Any] = []  # filled inside the trace (its body runs as nnsight's)
            with nn_lm.trace(dict(b)) as tracer:
                for i in layers:
                    saved.append(nn_lm.model.layers[i].output.save())
                tracer.stop()
            return torch.stack([_mean_pool(s, b["attention_mask"]) for s in saved], 1)
        return go

    def nnsight_sorted() -> torch.Tensor:
        from emolens.extract import length_batches

        out = torch.zeros(len(ids), 1, lm.hidden_size)
        for idx in length_batches([len(r) for r in ids], 4):
            out[idx] = nnsight_stop([LAYER], lm.pad([ids[i] for i in idx]))()
        return out

    def tl_stop(layers: list[int]) -> Callable[[], torch.Tensor]:
        names = [f"blocks.{i}.hook_resid_post" for i in layers]

        def go() -> torch.Tensor:
            _, cache = bridge.run_with_cache(batch["input_ids"], attention_mask=mask,
                                             names_filter=lambda n: n in names,
                                             stop_at_layer=max(layers) + 1)
            return torch.stack([_mean_pool(cache[n], mask) for n in names], 1)
        return go

    def em_pooled(layers: list[int]) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            means, _n = pooled_means(lm, batch, layers, 0, early_exit=True)
            return means.float()
        return go

    def em_features(layers: list[int], bs: int) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            means, _, cost = pooled_features(lm, texts, layers, token_skip=0, batch_size=bs)
            result.setdefault("padded_tokens", {})[f"bs{bs}_sorted"] = cost.padded_tokens
            return torch.from_numpy(means)
        return go

    for label, layers in (("layer20", [LAYER]), ("all_layers", list(range(lm.n_layers)))):
        if label == "all_layers" and not all_layers:
            continue
        methods: dict[str, Callable[[], Any]] = {
            "naive_output_hidden_states": naive(layers),
            "hand_early_exit_hook": hand(layers),
            "nnsight_trace_stop": nnsight_stop(layers),
        }
        if bridge is not None:
            methods["transformerlens_stop_at_layer"] = tl_stop(layers)
        methods["emolens_pooled_means_bs16"] = em_pooled(layers)
        methods["emolens_pooled_features_bs16_sorted"] = em_features(layers, 16)
        methods["emolens_pooled_features_bs4_sorted"] = em_features(layers, 4)
        if label == "layer20":
            methods["diag_nnsight_stop_bs4_sorted_by_hand"] = nnsight_sorted
        # the reference is the hand-written hook: HF's last hidden_states entry is the
        # final-normed output, not block 29's (so naive differs there, by design)
        with torch.inference_mode():
            ref = methods["hand_early_exit_hook"]().float()
            checks = {k: float((f().float() - ref).abs().max()) for k, f in methods.items()}
        print(f"{label} ({result['dtype']}): max abs diff vs hand hook {checks}",
              file=sys.stderr)
        times = interleave(methods, rounds)
        result[label] = {"checks_max_abs_diff_vs_hand_hook": checks,
                         "pooled_max_abs": float(ref.abs().max()),
                         "results": summary(times, "naive_output_hidden_states",
                                            dict.fromkeys(methods, real))}
        best_peer = min(("nnsight_trace_stop", "transformerlens_stop_at_layer"),
                        key=lambda k: result[label]["results"].get(k, {"ratio": 9e9})["ratio"])
        em = result[label]["results"]["emolens_pooled_features_bs4_sorted"]["ratio"]
        result[label]["best_peer"] = best_peer
        result[label]["emolens_throughput_vs_best_peer"] = round(
            result[label]["results"][best_peer]["ratio"] / em, 3)
        result[label]["emolens_vs_hand_hook"] = round(
            result[label]["results"]["emolens_pooled_means_bs16"]["ratio"]
            / result[label]["results"]["hand_early_exit_hook"]["ratio"], 3)
    return result


# ----------------------------------------------------------------------------- generation


def _random_unit(d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=d)
    return (v / np.linalg.norm(v)).astype(np.float32)


def section_generate(setup: Setup, rounds: int, tokens: int = 64) -> dict[str, Any]:
    """Batch-1 generation: HF generate vs emolens plain / steered / monitored and the peers."""
    from steering_vectors import SteeringVector

    np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4 predates NumPy 2
    from repeng import ControlModel, ControlVector

    from emolens.extract import default_vectors
    from emolens.vectors import Direction

    lm = setup.lm
    vecs = default_vectors(lm)
    unit = _random_unit(lm.hidden_size)
    vec5 = torch.from_numpy(unit * 5.0)
    direction = Direction("random", {LAYER: unit})
    ids = lm.encode_input(PROMPT, add_generation_prompt=True).input_ids
    enc = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids),
                                                                          dtype=torch.long)}
    gen_kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                  pad_token_id=setup.tok.pad_token_id)
    sv = SteeringVector({LAYER: vec5}, "decoder_block")
    rp_model = setup.copy()
    rp = ControlModel(rp_model, [LAYER])
    rp_vec = ControlVector(model_type=rp_model.config.model_type, directions={LAYER: unit})

    def hf_plain() -> list[int]:
        return lm.model.generate(**enc, **gen_kw)[0, len(ids):].tolist()

    def em_plain() -> list[int]:
        return lm.generate_text([PROMPT], max_new_tokens=tokens)[0].token_ids

    def em_steered() -> list[int]:
        with lm.steer(direction, strength=1.0, layers=LAYER, scale=5.0):
            return lm.generate_text([PROMPT], max_new_tokens=tokens)[0].token_ids

    def em_monitored() -> list[int]:
        out = lm.generate_text([PROMPT], max_new_tokens=tokens, monitor=vecs)[0]
        assert out.scores is not None and out.scores.shape[1] == len(vecs)
        return out.token_ids

    def sv_steered() -> list[int]:
        with sv.apply(lm.model):
            return lm.model.generate(**enc, **gen_kw)[0, len(ids):].tolist()

    def rp_steered() -> list[int]:
        rp.set_control(rp_vec, 5.0)
        try:
            return rp.generate(**enc, **gen_kw)[0, len(ids):].tolist()
        finally:
            rp.reset()

    def hand_steered() -> list[int]:
        def hook(_m: Any, _a: Any, out: Any) -> Any:
            return out + vec5 if not isinstance(out, tuple) else (out[0] + vec5, *out[1:])
        h = lm.model.model.layers[LAYER].register_forward_hook(hook)
        try:
            return lm.model.generate(**enc, **gen_kw)[0, len(ids):].tolist()
        finally:
            h.remove()

    methods = {"hf_generate": hf_plain, "emolens_plain": em_plain,
               "emolens_steered": em_steered, "emolens_monitored_171": em_monitored,
               "steering_vectors_steered": sv_steered, "repeng_steered": rp_steered,
               "hand_hook_steered": hand_steered}
    outs = {k: f() for k, f in methods.items()}
    checks = {"emolens_plain_equals_hf": outs["emolens_plain"] == outs["hf_generate"],
              "emolens_monitored_equals_hf": outs["emolens_monitored_171"] == outs["hf_generate"],
              **{f"{k}_equals_hand_hook": outs[k] == outs["hand_hook_steered"] for k in
                 ("emolens_steered", "steering_vectors_steered", "repeng_steered")},
              "steering_changes_text": outs["hand_hook_steered"] != outs["hf_generate"],
              "new_tokens": {k: len(v) for k, v in outs.items()}}
    print(f"generate checks {checks}", file=sys.stderr)
    times = interleave(methods, rounds)
    rp.unwrap()
    return {"tokens": tokens, "prompt_tokens": len(ids), "steer": "random unit x 5 at layer 20",
            "monitor": f"{len(vecs)} emotions at layer {vecs.default_layer}",
            "checks": checks,
            "results": summary(times, "hf_generate", dict.fromkeys(methods, tokens))}


def section_sweep(setup: Setup, rounds: int, tokens: int = 48) -> dict[str, Any]:
    """A 9-condition steering sweep: one batch of 9 rows vs 9 runs, emolens and the peers."""
    from steering_vectors import SteeringVector

    np.float_ = np.float64  # type: ignore[attr-defined]
    from repeng import ControlModel, ControlVector

    from emolens.experiments.steering_sweep import steering_sweep
    from emolens.extract import default_vectors
    from emolens.vectors import Direction

    lm = setup.lm
    vecs = default_vectors(lm)
    unit = _random_unit(lm.hidden_size)
    mults = [5.0 * (k - 4) / 4 for k in range(9)]
    direction = Direction("random", {LAYER: unit})
    ids = lm.encode_input(PROMPT, add_generation_prompt=True).input_ids
    one = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids),
                                                                          dtype=torch.long)}
    nine = {k: v.repeat(9, 1) for k, v in one.items()}
    gen_kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                  pad_token_id=setup.tok.pad_token_id)
    sv = SteeringVector({LAYER: torch.from_numpy(unit)}, "decoder_block")
    rp_model = setup.copy()
    rp = ControlModel(rp_model, [LAYER])
    rp_vec = ControlVector(model_type=rp_model.config.model_type, directions={LAYER: unit})
    raw = torch.from_numpy(unit)[None, None, :] * torch.tensor(mults)[:, None, None]

    def em_batched() -> list[list[int]]:
        with lm.steer(direction, [m / 5.0 for m in mults], layers=LAYER, scale=5.0):
            return [o.token_ids for o in lm.generate_text([PROMPT] * 9, max_new_tokens=tokens)]

    def em_sequential() -> list[list[int]]:
        out = []
        for m in mults:
            with lm.steer(direction, strength=m / 5.0, layers=LAYER, scale=5.0):
                out.append(lm.generate_text([PROMPT], max_new_tokens=tokens)[0].token_ids)
        return out

    def em_plain_batched() -> list[list[int]]:
        return [o.token_ids for o in lm.generate_text([PROMPT] * 9, max_new_tokens=tokens)]

    def hf_plain_batched() -> list[list[int]]:
        return lm.model.generate(**nine, **gen_kw)[:, len(ids):].tolist()

    def sv_sequential() -> list[list[int]]:
        out = []
        for m in mults:
            with sv.apply(lm.model, multiplier=m):
                out.append(lm.model.generate(**one, **gen_kw)[0, len(ids):].tolist())
        return out

    def rp_raw_batched() -> list[list[int]]:
        rp.set_raw_control({LAYER: raw})
        try:
            return rp.generate(**nine, **gen_kw)[:, len(ids):].tolist()
        finally:
            rp.reset()

    def em_experiment() -> list[list[int]]:
        # the registry's steering-sweep analysis itself: 9 strengths of calm - desperate as
        # rows of one batch, then the generated texts read back (one more batched forward)
        r = steering_sweep(lm, vecs, "calm", "desperate", strengths=[m / 12.5 for m in mults],
                           prompts=[PROMPT[0]["content"]], max_new_tokens=tokens,
                           random_control=False, n_boot=10)
        return [[len(r.points)]] * 9

    def rp_sequential() -> list[list[int]]:
        out = []
        for m in mults:
            rp.set_control(rp_vec, m)
            try:
                out.append(rp.generate(**one, **gen_kw)[0, len(ids):].tolist())
            finally:
                rp.reset()
        return out

    methods = {"emolens_sequential": em_sequential, "emolens_batched_rows": em_batched,
               "emolens_plain_batched_9_rows": em_plain_batched,
               "hf_plain_batched_9_rows": hf_plain_batched,
               "steering_vectors_sequential": sv_sequential,
               "repeng_raw_control_batched": rp_raw_batched, "repeng_sequential": rp_sequential,
               "emolens_steering_sweep_experiment": em_experiment}
    outs = {k: f() for k, f in methods.items()}
    ref = outs["emolens_sequential"]

    def same(k: str) -> int:
        return sum(a == b for a, b in zip(outs[k], ref, strict=True))

    checks = {f"{k}_rows_equal_to_emolens_sequential": same(k) for k in
              ("emolens_batched_rows", "steering_vectors_sequential",
               "repeng_raw_control_batched", "repeng_sequential")}
    checks["distinct_texts_over_9_conditions"] = len({tuple(x) for x in ref})
    print(f"sweep checks {checks}", file=sys.stderr)
    times = interleave(methods, rounds)
    rp.unwrap()
    res = summary(times, "emolens_sequential", dict.fromkeys(methods, 9 * tokens))
    paired_vs_ceiling = [t / c for t, c in zip(times["emolens_batched_rows"],
                                              times["emolens_plain_batched_9_rows"], strict=True)]
    return {"conditions": 9, "multipliers": mults, "tokens": tokens, "checks": checks,
            "results": res,
            "emolens_batched_vs_plain_batched": round(statistics.median(paired_vs_ceiling), 3),
            "emolens_batched_speedup_vs_sequential": res["emolens_batched_rows"]["speedup"]}


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; merge them into results/peers.json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="extract,extract_bf16,generate,sweep")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64, help="generated tokens (generate)")
    ap.add_argument("--sweep-tokens", type=int, default=48, help="generated tokens (sweep)")
    ap.add_argument("--texts", type=int, default=16, help="stories to pool (extract)")
    ap.add_argument("--out", default="peers", help="results/NAME.json (a smoke run: another)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = RESULTS / f"{args.out}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    sections = previous.get("sections", {})
    setup = Setup()
    for name in args.sections.split(","):
        load = machine_load()
        started = time.perf_counter()
        print(f"== {name} (load {load})", file=sys.stderr, flush=True)
        if name == "extract":
            out = section_extract(setup, args.rounds, n_texts=args.texts)
        elif name == "extract_bf16":
            out = section_extract(setup, max(1, (args.rounds + 1) // 2), torch.bfloat16,
                                  all_layers=False, n_texts=args.texts)
        elif name == "generate":
            out = section_generate(setup, args.rounds, args.tokens)
        elif name == "sweep":
            out = section_sweep(setup, max(1, (args.rounds + 1) // 2), args.sweep_tokens)
        else:
            raise SystemExit(f"unknown section {name!r}")
        out.update(load_before=load, load_after=machine_load(),
                   wall_s=round(time.perf_counter() - started, 1), rounds_run=args.rounds,
                   when=time.strftime("%Y-%m-%d %H:%M:%S"))
        sections[name] = out
        write(args.out, {"model": setup.lm.name, "layer": LAYER, "versions": versions(),
                        "command": "benchmarks/.venv-peers/bin/python benchmarks/bench_peers.py"
                                   f" --sections {args.sections} --rounds {args.rounds}",
                        "sections": sections})
    return 0


if __name__ == "__main__":
    sys.exit(main())
