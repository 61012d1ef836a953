"""Two emolens processes on the same cores: thread oversubscription and what mitigates it.

    .venv/bin/python benchmarks/bench_threads.py --rounds 2   # -> results/threads.json

A measured process generates 40 greedy tokens on the default model (after a warm-up), alone
or while a partner process on the same machine either generates without pause or extracts
(pooled all-layer features of curated stories, batch after batch). Both processes use the
same setting, one of:

* ``t2_active``: torch's default, one thread per core, OpenMP threads spin when idle;
* ``t2_passive``: one thread per core, ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep);
* ``t2_spin10k``: one thread per core, a short spin (``GOMP_SPINCOUNT=10000``, the default
  is 300000 unless threads outnumber the cores the process sees);
* ``t1_active`` / ``t1_passive``: one thread per process;
* ``t_auto``: :func:`emolens.runtime.configure_threads` with ``share=2`` (what the CLI
  does when told two processes share the machine) and its passive wait.

Every trial is a fresh process pair (the wait policy is read when torch loads). Reported:
the median generation time per setting and scenario over rounds (with min and max), and its
ratio to the same setting alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = [{"role": "user", "content": "Write a long, detailed description of a busy train "
                                      "station in the morning."}]
SETTINGS = {
    "t2_active": {"threads": "2", "env": {}},
    "t2_passive": {"threads": "2", "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "t2_spin10k": {"threads": "2", "env": {"GOMP_SPINCOUNT": "10000"}},
    "t1_active": {"threads": "1", "env": {}},
    "t1_passive": {"threads": "1", "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "t_auto": {"threads": "auto", "env": {}},
}


def worker(role: str, threads: str, ready: str, tokens: int) -> None:
    """``measure``: print the generation time; ``gen``/``extract``: work until killed."""
    if threads == "auto":
        from emolens.runtime import configure_threads

        configure_threads(share=2)  # before torch loads: passive wait applies too
    import torch

    if threads != "auto":
        torch.set_num_threads(int(threads))
    from emolens.corpus import load_corpus
    from emolens.extract import pooled_features
    from emolens.loading import load_model

    lm = load_model("default")
    lm.generate_text([PROMPT], max_new_tokens=4)  # warm-up
    if role == "measure":
        t0, c0 = time.perf_counter(), time.process_time()
        out = lm.generate_text([PROMPT], max_new_tokens=tokens)[0]
        print(json.dumps({"seconds": time.perf_counter() - t0,
                          "cpu_seconds": time.process_time() - c0, "tokens": out.n_tokens,
                          "threads": torch.get_num_threads(),
                          "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}))
        return
    texts = [r.text for r in load_corpus("default").stories()[:64]]
    Path(ready).write_text("ready")
    while True:
        if role == "gen":
            lm.generate_text([PROMPT], max_new_tokens=tokens)
        else:
            pooled_features(lm, texts, list(range(lm.n_layers)), batch_size=16)


def trial(setting: str, partner: str | None, tokens: int) -> dict:
    """One measured generation, alone or beside a partner of the same setting."""
    spec = SETTINGS[setting]
    env = {**os.environ, **spec["env"]}
    if setting != "t_auto":
        env.pop("EMOLENS_THREADS", None)
    cmd = [sys.executable, __file__, "--worker", "--threads", spec["threads"],
           "--tokens", str(tokens)]
    proc = None
    try:
        if partner:
            ready = Path(tempfile.mkdtemp()) / "ready"
            proc = subprocess.Popen([*cmd, "--role", partner, "--ready", str(ready)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 300
            while not ready.exists():
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"partner {partner} did not start")
                time.sleep(0.2)
            time.sleep(1.0)  # let it get going
        done = subprocess.run([*cmd, "--role", "measure"], env=env, capture_output=True,
                              text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    """Every setting x scenario, ``rounds`` times, rotating; write results/threads.json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--scenarios", default="alone,gen,extract")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--role", default="measure")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--ready", default="")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.role, args.threads, args.ready, args.tokens)
        return 0
    sys.path.insert(0, str(HERE))
    from _common import machine_load, write

    settings = args.settings.split(",")
    scenarios = args.scenarios.split(",")
    load = machine_load()
    times: dict[str, dict[str, list[float]]] = {s: {c: [] for c in scenarios} for s in settings}
    cpu: dict[str, dict[str, list[float]]] = {s: {c: [] for c in scenarios} for s in settings}
    cells = [(s, c) for c in scenarios for s in settings]
    for r in range(args.rounds):
        for s, c in cells[r % len(cells):] + cells[:r % len(cells)]:
            out = trial(s, None if c == "alone" else c, args.tokens)
            times[s][c].append(out["seconds"])
            cpu[s][c].append(out["cpu_seconds"])
            print(f"round {r + 1} {s:<10} {c:<8} {out['seconds']:.2f}s "
                  f"(cpu {out['cpu_seconds']:.2f}s, load {machine_load()})", file=sys.stderr,
                  flush=True)
    table = {}
    for s in settings:
        alone = statistics.median(times[s]["alone"]) if "alone" in scenarios else None
        table[s] = {c: {"median_s": round(statistics.median(v), 2), "min_s": round(min(v), 2),
                        "max_s": round(max(v), 2), "n": len(v),
                        "median_cpu_s": round(statistics.median(cpu[s][c]), 2),
                        "vs_alone": round(statistics.median(v) / alone, 2) if alone else None,
                        "vs_t2_active_alone": round(statistics.median(v) / statistics.median(
                            times["t2_active"]["alone"]), 2)
                        if "t2_active" in times and "alone" in scenarios else None}
                    for c, v in times[s].items()}
    write("threads", {"model": "SmolLM2-135M-Instruct, fp32", "tokens": args.tokens,
                      "rounds": args.rounds, "load_before": load, "settings": SETTINGS,
                      "results": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
