"""Generation speed: plain, monitored, steered and monitored+steered, on the default model.

    PYTHONPATH=src python benchmarks/bench_generation.py --rounds 7 --tokens 48

Each round runs every configuration once, in a rotating order (so drift in machine load
hits all of them alike).  Reported: the median tokens/s over rounds, and for each
configuration the median (and quartiles) of its per-round ratio to plain generation in
the same round, which cancels most of the drift of a shared machine.  Greedy decoding
with a fixed prompt, so every configuration does the same amount of work unless steering
changes where the text stops (tokens/s accounts for that).  Results go to
benchmarks/results/generation.json (written atomically).

Configurations:

* ``plain``: ``lm.generate_text`` with no hooks;
* ``monitored``: ``monitor=vecs`` (read-out of all emotions at the default layer);
* ``monitored_stream``: ``lm.stream(monitor=vecs)``, which also copies each token's scores
  to the host as it is yielded;
* ``steered``: inside ``lm.steer(vecs, {"calm": 0.1})`` at the middle layer;
* ``monitored_steered``: both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
PROMPT = [{"role": "user", "content": "Write a long, detailed description of a busy train "
                                      "station in the morning."}]


def _vectors(lm, path: str | None):
    """The shipped/default vectors, a given file, or (timing only) random ones of the same
    shape: 171 emotions at every layer."""
    from emolens.errors import VectorFileError
    from emolens.vectors import EmotionVectors

    if path:
        return EmotionVectors.load(path, expect_model=lm.fingerprint()), path
    try:
        from emolens.extract import default_vectors

        return default_vectors(lm), "default"
    except (ImportError, VectorFileError):
        pass
    from emolens.concepts.emotions import EMOTIONS

    rng = np.random.default_rng(0)
    layers = tuple(range(lm.n_layers))
    dirs = rng.normal(size=(len(EMOTIONS), len(layers), lm.hidden_size)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=2, keepdims=True)
    norms = np.full(len(layers), 50.0, np.float32)
    meta = {"model": lm.fingerprint()}
    return EmotionVectors(EMOTIONS, layers, dirs, dirs, norms, norms, meta), "random (timing only)"


def _hook_cost_us(lm, vecs, batch: int, reps: int = 500) -> float:
    """Microseconds the monitor's hook spends per decoding step (one new token per row)."""
    from emolens.monitor import Recorder, _direction_tensors, readout

    layer = vecs.default_layer
    dirs = _direction_tensors(vecs, [layer], lm.device)[layer]
    hidden = torch.randn(batch, 1, lm.hidden_size, device=lm.device, dtype=lm.dtype)
    rec = Recorder([layer])
    for _ in range(20):
        rec.add(layer, readout(hidden, dirs))
    t0 = time.perf_counter()
    for _ in range(reps):
        rec.add(layer, readout(hidden, dirs))
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - t0) / reps


def _steer_cost_us(lm, vecs, steer: dict, layer: int, batch: int, reps: int = 500) -> float:
    """Microseconds the steering hook spends per decoding step (delta lookup and add)."""
    from emolens.hooks import ForwardState
    from emolens.steer import build_steering

    plan = build_steering(lm, vecs, steer, layers=layer)
    state = ForwardState()
    state.offset, state.prompt_len = 40, 40
    hidden = torch.randn(batch, 1, lm.hidden_size, device=lm.device, dtype=lm.dtype)
    for _ in range(20):
        hidden + plan.delta_for(layer, hidden, state)
    t0 = time.perf_counter()
    for _ in range(reps):
        hidden + plan.delta_for(layer, hidden, state)
    if lm.device.type == "cuda":
        torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - t0) / reps


def _atomic_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--vectors", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "generation.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from emolens.loading import load_model

    lm = load_model(args.model, device=args.device)
    vecs, vec_source = _vectors(lm, args.vectors)
    mid = min(vecs.layers, key=lambda x: abs(x - (lm.n_layers - 1) / 2))
    steer = {"calm": 0.1} if "calm" in vecs else {vecs.emotions[0]: 0.1}
    prompts = [PROMPT] * args.batch
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)

    def plain() -> int:
        return sum(o.n_tokens for o in lm.generate_text(prompts, max_new_tokens=args.tokens))

    def monitored() -> int:
        outs = lm.generate_text(prompts, max_new_tokens=args.tokens, monitor=vecs)
        return sum(o.n_tokens for o in outs)

    def monitored_stream() -> int:
        if args.batch != 1:
            return monitored()
        return sum(1 for _ in lm.stream(PROMPT, max_new_tokens=args.tokens, monitor=vecs))

    def steered() -> int:
        with lm.steer(vecs, steer, layers=mid):
            return plain()

    def monitored_steered() -> int:
        with lm.steer(vecs, steer, layers=mid):
            return monitored()

    configs = {"plain": plain, "monitored": monitored, "monitored_stream": monitored_stream,
               "steered": steered, "monitored_steered": monitored_steered}
    for fn in configs.values():  # warm-up: allocator, kernels, caches
        fn()
    rates: dict[str, list[float]] = {k: [] for k in configs}
    cpu_rates: dict[str, list[float]] = {k: [] for k in configs}
    names = list(configs)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            n = configs[name]()
            sync()
            rates[name].append(n / (time.perf_counter() - t0))
            cpu_rates[name].append(n / (time.process_time() - c0))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {rates[k][-1]:.1f}" for k in names), file=sys.stderr)
    hook_us = _hook_cost_us(lm, vecs, args.batch)
    steer_us = _steer_cost_us(lm, vecs, steer, mid, args.batch)
    med = {k: statistics.median(v) for k, v in rates.items()}
    step_ms = 1000 * args.batch / med["plain"]
    cpu_med = {k: statistics.median(v) for k, v in cpu_rates.items()}
    # each round's ratio to plain generation in that same round: neighbours in time share
    # the machine's state, so paired ratios cancel most of the drift of a shared machine
    paired = {k: [x / p for x, p in zip(v, rates["plain"], strict=True)]
              for k, v in rates.items()}

    def quartiles(v: list[float]) -> list[float]:
        q = np.quantile(v, [0.25, 0.5, 0.75])
        return [round(float(x), 4) for x in q]

    result = {
        "benchmark": "generation tokens/s",
        "model": lm.name, "device": str(lm.device), "dtype": str(lm.dtype),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "torch": torch.__version__,
        "vectors": vec_source, "n_emotions": len(vecs), "monitor_layer": vecs.default_layer,
        "steer": steer, "steer_layer": mid, "batch": args.batch,
        "max_new_tokens": args.tokens, "rounds": args.rounds,
        "median_tokens_per_s": {k: round(v, 2) for k, v in med.items()},
        "ratio_vs_plain": {k: round(v / med["plain"], 4) for k, v in med.items()},
        "overhead_pct": {k: round(100 * (med["plain"] / v - 1), 2) for k, v in med.items()},
        "paired_ratio_quartiles": {k: quartiles(v) for k, v in paired.items()},
        "paired_overhead_pct": {k: round(100 * (1 / statistics.median(v) - 1), 2)
                                for k, v in paired.items()},
        "all_tokens_per_s": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        # tokens per second of this process's CPU time: far less sensitive than wall time
        # to other jobs on a shared machine (with one thread it is exact work per token)
        "median_tokens_per_cpu_s": {k: round(v, 2) for k, v in cpu_med.items()},
        "cpu_ratio_vs_plain": {k: round(v / cpu_med["plain"], 4) for k, v in cpu_med.items()},
        "cpu_overhead_pct": {k: round(100 * (cpu_med["plain"] / v - 1), 2)
                             for k, v in cpu_med.items()},
        # cost model, robust to machine noise: the read-out hook per decoding step, and
        # the one extra forward (stopped at the monitored layer) that reads the last token
        "components": {
            "monitor_hook_us_per_step": round(hook_us, 2),
            "plain_step_ms": round(step_ms, 3),
            "hook_share_pct": round(100 * hook_us / 1000 / step_ms, 3),
            "steer_hook_us_per_step": round(steer_us, 2),
            "steer_hook_share_pct": round(100 * steer_us / 1000 / step_ms, 3),
            "final_forward_share_pct": round(
                100 * (vecs.default_layer + 1) / lm.n_layers / (args.tokens + 1), 2),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _atomic_json(Path(args.out), result)
    width = max(map(len, names))
    for k in names:
        q = result["paired_ratio_quartiles"][k]
        print(f"{k:<{width}}  {med[k]:8.2f} tok/s  x{result['ratio_vs_plain'][k]:.3f}  "
              f"paired x{q[1]:.3f} [{q[0]:.3f}-{q[2]:.3f}]  "
              f"overhead {result['paired_overhead_pct'][k]:+.1f}%  (CPU time "
              f"{cpu_med[k]:.2f} tok/cpu-s)")
    c = result["components"]
    print(f"cost model: monitor hook {c['monitor_hook_us_per_step']:.1f} us/step = "
          f"{c['hook_share_pct']:.3f}% of a {c['plain_step_ms']:.1f} ms step; steering hook "
          f"{c['steer_hook_us_per_step']:.1f} us/step = {c['steer_hook_share_pct']:.3f}%; "
          f"final early-exit forward {c['final_forward_share_pct']:.2f}% of {args.tokens} steps")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
