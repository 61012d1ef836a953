"""Shared benchmark plumbing: interleaved rounds, medians, atomic JSON results."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def interleaved(methods: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each method once per round, rotating the order so drift hits all alike."""
    names = list(methods)
    for name in names:  # warm-up, untimed
        methods[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            gc.collect()
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def summarise(times: dict[str, list[float]], work: dict[str, float], unit: str,
              baseline: str) -> dict[str, dict[str, float]]:
    """Median time, throughput and ratios (of medians, and median of paired ratios)."""
    base = statistics.median(times[baseline])
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        paired = statistics.median(t / b for t, b in zip(ts, times[baseline], strict=True))
        out[name] = {"median_s": round(med, 4), f"{unit}_per_s": round(work[name] / med, 1),
                     "time_ratio": round(med / base, 3), "paired_ratio": round(paired, 3),
                     "min_s": round(min(ts), 4), "max_s": round(max(ts), 4)}
    return out


def machine_load() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on a shared machine skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not Unix
        return []


def cpu_model() -> str:
    """The CPU's model name and whether it has native bfloat16 (AVX512-BF16 / AMX)."""
    name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from emolens.runtime import bf16_native

    return f"{name} ({'native bf16' if bf16_native('cpu') else 'no native bf16'})"


def write(name: str, payload: dict, path: Path | None = None) -> Path:
    """Write ``results/NAME.json`` (or ``path``) atomically, with the machine it ran on, and
    print it."""
    payload = {"machine": {"cpus": os.cpu_count(), "cpu": cpu_model(),
                           "torch_threads": torch.get_num_threads(),
                           "python": platform.python_version(), "torch": torch.__version__,
                           "device": "cuda" if torch.cuda.is_available() else "cpu",
                           "load_at_write": machine_load()},
               "when": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path = path if path is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    print(json.dumps(payload, indent=2))
    return path
