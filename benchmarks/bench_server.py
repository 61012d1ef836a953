"""Load check of ``emolens serve``: concurrent clients on loopback, memory, streaming overhead.

    PYTHONPATH=src python benchmarks/bench_server.py --model tiny    --requests 300
    PYTHONPATH=src python benchmarks/bench_server.py --model default --requests 60

The server runs as its own process (``emolens serve``, started here on a free port of
127.0.0.1), so the clients do not share its interpreter.  Three measurements:

* **load**: ``--clients`` threads (default 20) send ``--requests`` requests in all, a mix
  of streamed ``/api/generate`` (monitored, with an alert rule), ``/api/probe`` and
  non-streamed ``/v1/chat/completions`` (steered), in two equal rounds.  A 503 (the
  documented answer of a full queue) is counted and retried after its ``Retry-After``;
  anything else that is not a complete 200 is an error.  The run is bounded by
  ``--deadline`` seconds: clients start no request after it.
* **memory**: the server's resident memory after warm-up and after each load round (flat
  means the second round adds about nothing).
* **overhead**: the same monitored, greedy generation run ``--rounds`` times directly
  with ``lm.stream`` in this process and through the server (SSE over loopback, all
  scores per token; without and with the prompt's read-out that the page asks for),
  interleaved; medians of total time, time to the first token, time per token and CPU
  time, and their paired ratios.  Both sides are idle while the other runs.

Results are merged into ``benchmarks/results/server.json`` under the model's key.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "server.json"
CHAT = [{"role": "user", "content": "Tell me about a time you felt proud of your work."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: Any = None, timeout: float = 300
            ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request on a fresh connection; the whole body is read (streams included)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def stream_events(port: int, body: dict[str, Any]) -> tuple[float, float, list[dict]]:
    """POST /api/generate; returns (seconds to the first token, total seconds, events)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    first = None
    events = []
    try:
        conn.request("POST", "/api/generate", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}: {r.read()[:200]!r}")
        name = None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                if name == "token" and first is None:
                    first = time.perf_counter() - t0
                events.append({"event": name, "data": json.loads(line[5:])})
    finally:
        conn.close()
    return first or 0.0, time.perf_counter() - t0, events


# ---- the server process -----------------------------------------------------------------------
def start_server(model: str, port: int, workdir: Path) -> tuple[subprocess.Popen, Any]:
    """``emolens serve`` on 127.0.0.1:port; returns the process and the model it serves."""
    from emolens.loading import load_model

    args = [sys.executable, "-m", "emolens", "serve", "--port", str(port), "--queue", "4"]
    if model == "tiny":
        from emolens.testing import tiny_lm, tiny_vectors

        lm = tiny_lm("llama")
        lm.model.save_pretrained(workdir / "tiny")
        lm.tokenizer.save_pretrained(workdir / "tiny")
        lm = load_model(str(workdir / "tiny"), device="cpu")
        tiny_vectors(lm).save(workdir / "tiny.safetensors")
        args += ["--model", str(workdir / "tiny"), "--vectors", str(workdir / "tiny.safetensors")]
    else:
        lm = load_model("default")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 180
    while True:
        try:
            if request(port, "GET", "/api/health", timeout=2)[0] == 200:
                return proc, lm
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"the server did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)


def rss_mb(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


# ---- load ---------------------------------------------------------------------------------------
def job(kind: str, i: int, tokens: int) -> tuple[str, str, dict[str, Any]]:
    text = f"Request {i}: the train was late again and the meeting had already started."
    if kind == "generate":
        return "POST", "/api/generate", {"messages": CHAT + [{"role": "user", "content": text}],
                                         "max_new_tokens": tokens, "alerts": ["calm>0.1@2"],
                                         "scores": True}
    if kind == "probe":
        return "POST", "/api/probe", {"text": text * 3, "top": 5}
    return "POST", "/v1/chat/completions", {"model": "emolens", "messages": CHAT,
                                            "max_tokens": tokens, "temperature": 0,
                                            "emolens": {"steer": {"calm": 0.1},
                                                        "monitor": True}}


def load_round(port: int, clients: int, n: int, tokens: int, deadline: float
               ) -> dict[str, Any]:
    """``clients`` threads share ``n`` requests; 503s are retried after Retry-After."""
    kinds = ["generate", "probe", "openai"]
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "busy_503": 0, "errors": 0, "late": 0}
    latencies: list[float] = []
    problems: list[str] = []

    def client() -> None:
        while True:
            with lock:
                if state["next"] >= n:
                    return
                i = state["next"]
                state["next"] += 1
            kind = kinds[i % len(kinds)]
            method, path, body = job(kind, i, tokens)
            t0 = time.perf_counter()
            while True:
                if time.monotonic() > deadline:
                    with lock:
                        state["late"] += 1
                    return
                try:
                    status, headers, data = request(port, method, path, body)
                except OSError as exc:
                    status, headers, data = -1, {}, str(exc).encode()
                if status == 503:
                    with lock:
                        state["busy_503"] += 1
                    time.sleep(float(headers.get("retry-after", "1")))
                    continue
                complete = status == 200 and (
                    b"event: done" in data if kind == "generate" else data.startswith(b"{"))
                with lock:
                    if complete:
                        state["ok"] += 1
                        latencies.append(time.perf_counter() - t0)
                    else:
                        state["errors"] += 1
                        problems.append(f"{kind}: {status} {data[:160]!r}")
                break

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": n, "ok": state["ok"], "errors": state["errors"],
            "busy_503_retried": state["busy_503"], "not_started_by_deadline": state["late"],
            "wall_s": round(wall, 2), "ok_per_s": round(state["ok"] / wall, 2),
            "latency_median_s": round(statistics.median(lat), 3) if lat else None,
            "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
            "problems": problems[:5]}


# ---- overhead -----------------------------------------------------------------------------------
def overhead(lm: Any, vecs: Any, port: int, server_pid: int, rounds: int, tokens: int
             ) -> dict[str, Any]:
    """Interleaved: lm.stream in this process vs the same generation through the server.

    Wall time is what a client sees; CPU time (this process for lm.stream, the server
    process for a request) is the work done, less sensitive to other load on the machine.
    """
    import psutil

    server = psutil.Process(server_pid)
    body = {"messages": CHAT, "max_new_tokens": tokens, "scores": True, "top": 5,
            "read_prompt": False}
    direct: list[tuple[float, float, int]] = []
    served: list[tuple[float, float, int]] = []
    with_prompt: list[tuple[float, float, int]] = []
    cpu: dict[str, list[float]] = {"direct": [], "served": [], "with_prompt": []}

    def server_cpu() -> float:
        t = server.cpu_times()
        return t.user + t.system

    def run_direct() -> tuple[float, float, int]:
        c0 = time.process_time()
        t0 = time.perf_counter()
        first, n = None, 0
        for _step in lm.stream(CHAT, monitor=vecs, max_new_tokens=tokens):
            if first is None:
                first = time.perf_counter() - t0
            n += 1
        cpu["direct"].append(time.process_time() - c0)
        return first or 0.0, time.perf_counter() - t0, n

    def run_served(read_prompt: bool = False) -> tuple[float, float, int]:
        c0 = server_cpu()
        first, total, events = stream_events(port, {**body, "read_prompt": read_prompt})
        cpu["with_prompt" if read_prompt else "served"].append(server_cpu() - c0)
        return first, total, sum(e["event"] == "token" for e in events)

    def run_with_prompt() -> tuple[float, float, int]:
        return run_served(True)

    runs = {run_direct: direct, run_served: served, run_with_prompt: with_prompt}
    for fn in runs:
        fn()  # warm-up, untimed
    order = list(runs)
    for r in range(rounds):  # rotating order, so drift in machine load hits all alike
        for fn in order[r % 3:] + order[:r % 3]:
            runs[fn].append(fn())

    def med(xs: list[tuple[float, float, int]]) -> dict[str, float]:
        per_token = [(t - f) / max(1, n - 1) for f, t, n in xs]
        return {"total_s": round(statistics.median(t for _, t, _ in xs), 4),
                "first_token_s": round(statistics.median(f for f, _, _ in xs), 4),
                "per_token_ms": round(1000 * statistics.median(per_token), 3),
                "tokens": int(statistics.median(n for _, _, n in xs))}

    for side in cpu:
        cpu[side] = cpu[side][1:]  # drop the warm-up
    d, s, w = med(direct), med(served), med(with_prompt)
    for stats, side in ((d, "direct"), (s, "served"), (w, "with_prompt")):
        stats["cpu_s"] = round(statistics.median(cpu[side]), 4)

    def paired(a: list[float], b: list[float]) -> float:
        return round(statistics.median(y / x for x, y in zip(a, b, strict=True)), 3)

    totals = {k: [t for _, t, _ in v] for k, v in
              (("direct", direct), ("served", served), ("with_prompt", with_prompt))}
    return {"rounds": rounds, "max_new_tokens": tokens, "direct_lm_stream": d,
            "through_server": s, "through_server_with_prompt_readout": w,
            "total_ratio_median_paired": paired(totals["direct"], totals["served"]),
            "cpu_ratio_median_paired": paired(cpu["direct"], cpu["served"]),
            "extra_ms_per_token": round(s["per_token_ms"] - d["per_token_ms"], 3),
            "extra_first_token_ms": round(1000 * (s["first_token_s"] - d["first_token_s"]), 1),
            "with_prompt_readout_total_ratio_median_paired":
                paired(totals["direct"], totals["with_prompt"]),
            "note": "through_server: the same work as lm.stream (read_prompt false); "
                    "with_prompt_readout: the page's default, which first reads the whole "
                    "prompt (one more forward pass, the 'prompt' event)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "default"], default="tiny")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=None,
                        help="requests in all, over two rounds (default: 300 tiny, 60 default)")
    parser.add_argument("--tokens", type=int, default=16, help="max_new_tokens per request")
    parser.add_argument("--rounds", type=int, default=None,
                        help="overhead rounds (default: 9 tiny, 5 default)")
    parser.add_argument("--overhead-tokens", type=int, default=None,
                        help="tokens per overhead run (default: 48 tiny, 32 default)")
    parser.add_argument("--deadline", type=float, default=600.0,
                        help="seconds after which no client starts a request")
    args = parser.parse_args()
    n = args.requests or (300 if args.model == "tiny" else 60)
    overhead_rounds = args.rounds or (9 if args.model == "tiny" else 5)
    overhead_tokens = args.overhead_tokens or (48 if args.model == "tiny" else 32)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    import torch

    from emolens.extract import default_vectors
    from emolens.fileio import write_text_atomic
    from emolens.vectors import EmotionVectors

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, lm = start_server(args.model, port, Path(tmp))
        try:
            vecs = (EmotionVectors.load(Path(tmp) / "tiny.safetensors") if args.model == "tiny"
                    else default_vectors())
            info = json.loads(request(port, "GET", "/api/info")[2])
            for kind in ("generate", "probe", "openai"):  # warm every path once
                method, path, body = job(kind, -1, args.tokens)
                request(port, method, path, body)
            memory = {"after_warmup_mb": rss_mb(proc.pid)}
            deadline = time.monotonic() + args.deadline
            rounds = []
            for k in range(2):
                rounds.append(load_round(port, args.clients, n // 2, args.tokens, deadline))
                memory[f"after_round_{k + 1}_mb"] = rss_mb(proc.pid)
            memory["round_2_minus_round_1_mb"] = round(memory["after_round_2_mb"]
                                                       - memory["after_round_1_mb"], 1)
            health = json.loads(request(port, "GET", "/api/health")[2])
            over = overhead(lm, vecs, port, proc.pid, overhead_rounds, overhead_tokens)
        finally:
            proc.terminate()
            proc.wait(30)
    total = {key: sum(r[key] for r in rounds)
             for key in ("requests", "ok", "errors", "busy_503_retried",
                         "not_started_by_deadline")}
    result = {
        "model": info["model"]["name"], "parameters": info["model"]["parameters"],
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine_load_average": {"at_start": load_at_start,
                                 "at_end": [round(x, 2) for x in os.getloadavg()],
                                 "note": "1/5/15-minute load of this shared 2-core machine"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "device": info["model"]["device"]},
        "settings": {"clients": args.clients, "max_new_tokens": args.tokens,
                     "queue": info["limits"]["max_queue"], "deadline_s": args.deadline,
                     "mix": "1/3 streamed /api/generate (monitored, alert rule), 1/3 "
                            "/api/probe, 1/3 /v1/chat/completions (steered, monitored)"},
        "load": {"total": total, "rounds": rounds, "server_counters": health},
        "memory": memory,
        "overhead": over,
    }
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged[args.model] = result
    write_text_atomic(RESULTS, json.dumps(merged, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
