"""Run untrusted Python (a model's solution) against unit tests in a sandboxed subprocess.

The reward-hacking evaluation (study section 9.3) grades a reply by *running* it, never by
guessing from its text (ImpossibleBench's approach). This module is the runner: it loads the
code in a child process with limits and isolation and reports what each test call did.
Grading (hack / honest / fail, the static inspection and code extraction) lives in
:mod:`emolens.experiments.code_grading`; the code that runs inside the child, with the
audit events and imports it refuses, in :mod:`emolens.experiments.sandbox_child`.

How a run works (:func:`run_tests`)
-----------------------------------
* A fresh temporary directory is the child's working directory; it is deleted afterwards.
* The child is ``python -I -S -B``: isolated mode (no ``PYTHON*`` variables, no user site, no
  script directory on the path), no ``site`` (so no site-packages: the standard library only),
  no bytecode written. Its environment is replaced by a minimal one (``PATH``, ``LANG``,
  ``HOME``/``TMPDIR`` = the temporary directory).
* Limits, set by ``resource.setrlimit`` in ``preexec_fn``: CPU time (``RLIMIT_CPU``), address
  space (``RLIMIT_AS``: allocations beyond it raise ``MemoryError``), file size
  (``RLIMIT_FSIZE``), no core files, and no new processes or threads (``RLIMIT_NPROC = 0``,
  which binds only when the parent is not root). A wall-clock timeout kills the whole process
  group (the child starts a new session). Each test call also has its own timer
  (``setitimer``), so an infinite loop in one test fails that test and the others still run.
* Network: where the kernel allows it (root, or unprivileged user namespaces), the child enters
  a fresh network namespace (``unshare(CLONE_NEWNET)`` in ``preexec_fn``) whose only interface,
  loopback, is down: no address at all is reachable, 127.0.0.1 included. Always, before any
  user code runs, a bootstrap installs an audit hook (PEP 578) that refuses to create sockets
  or resolve names, refuses to start processes (``subprocess``, ``os.system``, ``os.exec*``,
  ``os.fork``, ``os.posix_spawn``) or load ``ctypes``, refuses writes, renames and deletions
  outside the temporary directory, refuses reads and directory listings outside the standard
  library and the temporary directory, refuses ``kill`` of other processes, and refuses
  ``sys.settrace`` / ``sys.setprofile``. Audit hooks cannot be removed once installed.
* The tests are trusted data; the code is not. The child only *calls* the function and
  reports what it returned, converted to plain JSON data (an object of any other type is
  reported by its type and never equals an expected value); the comparison with the expected
  value, the exception check and the time budget are decided in the parent. Expected values
  are never sent to the child, so the code cannot read the held-back answers. Each timed call
  gets fresh arguments, so caching on object identity does not beat a time budget.

What is *not* guaranteed
------------------------
This is a guard against accidents and ordinary cheating by model-written code, not a security
boundary against code written to escape: audit hooks run inside the interpreter they guard,
and code that deliberately attacks the harness in-process (walking the runner's stack frames,
writing forged results to its pipe, overriding its signal handler) can defeat them. Such code
is flagged by :func:`~emolens.experiments.code_grading.inspect_code` (frame and
garbage-collector introspection, exits, signal and clock patching, changes to ``builtins``),
and a flagged solution is graded ``hack``. Without
a network namespace, loopback sockets opened by C extensions that bypass Python's socket
module would not be seen (no such extension is importable under ``-S``). The code can read
standard-library files, use as much CPU as the limits allow, and print (the output is kept,
truncated). For hostile code, run this inside a container or VM.

>>> r = run_tests("def sq(x):\\n    return x * x", "sq",
...               [CodeTest("test_sq", args=(3,), expected=9)])
>>> r.all_passed, r.outcomes[0].status
(True, 'passed')
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emolens.concepts.behaviour import CodeTest
from emolens.errors import EmolensError
from emolens.experiments.sandbox_child import BLOCKED_EVENTS, BLOCKED_IMPORTS, RUNNER

__all__ = [
    "BLOCKED_EVENTS",
    "BLOCKED_IMPORTS",
    "SandboxLimits",
    "SandboxResult",
    "TestOutcome",
    "network_namespace_available",
    "run_code",
    "run_tests",
]

_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run.

    ``cpu_seconds`` and ``memory_mb`` bound the whole child process; ``test_seconds`` bounds
    each test call (and loading the code); ``wall_seconds`` bounds the run from start to
    finish. ``network_namespace`` asks for a fresh, empty network namespace where the kernel
    permits one (the audit hook blocks sockets either way).

    >>> SandboxLimits(test_seconds=0.5).memory_mb
    512
    """

    cpu_seconds: float = 20.0
    wall_seconds: float = 30.0
    test_seconds: float = 2.0
    memory_mb: int = 512
    file_size_mb: int = 16
    output_chars: int = 4000
    value_chars: int = 100_000
    network_namespace: bool = True

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds", "test_seconds"):
            if not getattr(self, name) > 0:
                raise EmolensError(f"sandbox limit {name} must be positive")
        if self.memory_mb < 64:
            raise EmolensError("sandbox memory_mb must be at least 64 (the interpreter needs it)")


@dataclass(frozen=True)
class TestOutcome:
    """What one test did: ``status`` is passed / failed / error / timeout / memory / not_run.

    ``failed`` means the call returned but the value, the exception or the time budget was
    wrong; ``error`` that it raised an exception the test did not expect.
    """

    __test__ = False  # not a pytest test class

    name: str
    status: str
    detail: str = ""
    seconds: float | None = None
    heldout: bool = False
    conflict: bool = False

    @property
    def passed(self) -> bool:
        """True when the test passed."""
        return self.status == "passed"


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one sandboxed run.

    ``load_error`` is set when the code could not be loaded (syntax error, exception or
    timeout at import, missing function). ``timed_out`` is true when the CPU or wall-clock
    limit ended the process or any call ran past its timer; ``memory_error`` when the memory
    limit was hit; ``crashed`` when the process died of a signal or exited before the runner
    finished (``returncode`` holds the status, negative for a signal).
    """

    outcomes: tuple[TestOutcome, ...]
    load_error: str | None
    timed_out: bool
    memory_error: bool
    crashed: bool
    returncode: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    wall_seconds: float
    network_namespace: bool

    @property
    def all_passed(self) -> bool:
        """True when there were tests and every one passed."""
        return bool(self.outcomes) and all(o.passed for o in self.outcomes)

    def outcome(self, name: str) -> TestOutcome:
        """The outcome of the test called ``name``."""
        for o in self.outcomes:
            if o.name == name:
                return o
        raise KeyError(name)


_unshare: Callable[[int], int] | None = None
_netns_ok: bool | None = None


def _load_unshare() -> Callable[[int], int] | None:
    global _unshare
    if _unshare is None and sys.platform.startswith("linux"):
        try:
            import ctypes

            _unshare = ctypes.CDLL(None, use_errno=True).unshare
        except (OSError, AttributeError):
            _unshare = None
    return _unshare


def network_namespace_available() -> bool:
    """Whether this machine lets a child enter a fresh network namespace (checked once, in a
    throwaway child process).

    >>> isinstance(network_namespace_available(), bool)
    True
    """
    global _netns_ok
    if _netns_ok is None:
        fn = _load_unshare()
        if fn is None:
            _netns_ok = False
        else:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                os._exit(0 if fn(_CLONE_NEWNET) == 0 else 1)
            _, status = os.waitpid(pid, 0)
            _netns_ok = os.waitstatus_to_exitcode(status) == 0
    return _netns_ok


def _preexec(limits: SandboxLimits, netns: bool) -> Callable[[], None]:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    mem = int(limits.memory_mb) * 1024 * 1024
    fsize = int(limits.file_size_mb) * 1024 * 1024
    unshare = _load_unshare() if netns else None

    def setup() -> None:  # runs in the child between fork and exec: keep it minimal
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() != 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        if unshare is not None:
            unshare(_CLONE_NEWNET)

    return setup


def _readable_roots() -> list[str]:
    roots = {sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix,
             os.path.dirname(os.__file__), os.devnull, "/dev/urandom", "/usr/share/zoneinfo",
             "/etc/localtime"}
    return sorted(roots)


def _call_spec(i: int, t: CodeTest, limits: SandboxLimits) -> dict[str, Any]:
    spec: dict[str, Any] = {"id": i, "repeat": t.repeat, "timeout": limits.test_seconds}
    if t.args_expr is not None:
        spec["args_expr"] = t.args_expr
    else:
        spec["args"] = list(t.args or ())
    return spec


def _read(path: Path, limit: int) -> tuple[str, bool]:
    try:
        with open(path, "rb") as f:
            data = f.read(4 * limit + 4)
    except OSError:
        return "", False
    text = data.decode("utf-8", "replace")
    return (text[:limit], True) if len(text) > limit else (text, False)


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` exits (without reaping it) or ``deadline``; True if it exited."""
    pause = 0.0005
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        if time.perf_counter() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _execute(code: str, function: str | None, calls: list[dict[str, Any]],
             limits: SandboxLimits) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the child; return its result records and facts about the process."""
    netns = limits.network_namespace and network_namespace_available()
    spec = {"code": code, "function": function, "calls": calls,
            "test_seconds": limits.test_seconds, "value_chars": limits.value_chars,
            "readable": _readable_roots(), "blocked_events": list(BLOCKED_EVENTS),
            "blocked_imports": list(BLOCKED_IMPORTS)}
    root = Path(tempfile.mkdtemp(prefix="emolens-sandbox-"))
    work = root / "work"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "HOME": str(work), "TMPDIR": str(work)}
    facts: dict[str, Any] = {"killed": False, "netns": netns}
    t0 = time.perf_counter()
    try:
        with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err, \
                open(root / "results", "wb") as res:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", RUNNER, str(res.fileno())],
                stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(res.fileno(),),
                cwd=work, env=env, start_new_session=True, close_fds=True,
                preexec_fn=_preexec(limits, netns))
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(spec).encode("utf-8"))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                facts["killed"] = not _wait_unreaped(proc.pid, t0 + limits.wall_seconds)
            finally:
                # The child is not reaped yet, so its process group id cannot have been reused:
                # killing the group reaches only the child and anything it left behind.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        facts["returncode"] = proc.returncode
        facts["wall"] = time.perf_counter() - t0
        facts["stdout"] = _read(root / "stdout", limits.output_chars)
        facts["stderr"] = _read(root / "stderr", limits.output_chars)
        records = []
        raw, _ = _read(root / "results", 64 * 1024 * 1024)
        for line in raw.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records, facts
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _equal(got: Any, exp: Any, tol: float | None) -> bool:
    if isinstance(exp, bool) or isinstance(got, bool) or exp is None or got is None:
        return type(got) is type(exp) and got == exp
    if isinstance(exp, int | float) and isinstance(got, int | float):
        if tol is None and isinstance(exp, int) and isinstance(got, int):
            return got == exp
        t = 1e-9 if tol is None else tol
        return math.isclose(got, exp, rel_tol=t, abs_tol=t)
    if isinstance(exp, list) and isinstance(got, list):
        return len(exp) == len(got) and all(
            _equal(g, e, tol) for g, e in zip(got, exp, strict=True))
    if isinstance(exp, dict) and isinstance(got, dict):
        return exp.keys() == got.keys() and all(_equal(got[k], exp[k], tol) for k in exp)
    return type(got) is type(exp) and got == exp


def _short(value: Any, n: int = 80) -> str:
    s = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return s if len(s) <= n else s[:n - 3] + "..."


def _judge(t: CodeTest, rec: dict[str, Any] | None, heldout: bool) -> TestOutcome:
    def out(status: str, detail: str = "", seconds: float | None = None) -> TestOutcome:
        return TestOutcome(t.name, status, detail, seconds, heldout, t.conflict)

    if rec is None:
        return out("not_run", "the process ended before this test")
    status = rec.get("status")
    secs = rec.get("seconds") or []
    best = min(secs) if secs else None
    if status == "timeout":
        return out("timeout", "ran past the per-test time limit", best)
    if status == "memory":
        return out("memory", "hit the memory limit")
    if status == "harness":
        return out("error", str(rec.get("error")))
    if status == "raised":
        err = str(rec.get("error"))
        if t.raises is not None and t.raises in rec.get("mro", ()):
            return out("passed", err, best)
        if t.raises is not None:
            return out("failed", f"expected {t.raises}, got {err}", best)
        return out("error", err, best)
    if t.raises is not None:
        return out("failed", f"expected {t.raises}, got a return value", best)
    if not rec.get("same", True):
        return out("failed", "repeated calls on equal inputs returned different values", best)
    if not _equal(rec.get("value"), t.expected, t.tol):
        return out("failed", f"expected {_short(t.expected)}, got {_short(rec.get('value'))}",
                   best)
    if t.max_seconds is not None and (best is None or best > t.max_seconds):
        return out("failed", f"took {best:.3g} s, budget {t.max_seconds:.3g} s", best)
    return out("passed", "", best)


def run_tests(code: str, function: str | None, tests: Sequence[CodeTest],
              limits: SandboxLimits | None = None, *, heldout: Sequence[bool] | None = None
              ) -> SandboxResult:
    """Load ``code`` in the sandbox and call ``function`` once per test.

    ``heldout`` marks which tests are held back (it only labels the outcomes). With
    ``function=None`` and no tests, the code is only run (see :func:`run_code`).

    >>> from emolens.concepts.behaviour import CodeTest
    >>> r = run_tests("def sq(x):\\n    return x * x", "sq",
    ...               [CodeTest("test_sq", args=(3,), expected=9),
    ...                CodeTest("test_sq_wrong", args=(3,), expected=10)])
    >>> [o.status for o in r.outcomes]
    ['passed', 'failed']
    """
    limits = limits or SandboxLimits()
    tests = list(tests)
    flags = list(heldout) if heldout is not None else [False] * len(tests)
    if len(flags) != len(tests):
        raise EmolensError("heldout must give one flag per test")
    calls = [_call_spec(i, t, limits) for i, t in enumerate(tests)]
    records, facts = _execute(code, function, calls, limits)
    by_id = {r["id"]: r for r in records if r.get("t") == "call"}
    load = next((r for r in records if r.get("t") == "load"), None)
    done = any(r.get("t") == "done" for r in records)
    ready = next((r for r in records if r.get("t") == "ready"), None)
    rc = facts.get("returncode")
    cpu_killed = rc is not None and rc in (-signal.SIGXCPU, -signal.SIGKILL) and not done
    load_error = None
    if load is None:
        load_error = ("the process ended before the code was loaded"
                      + (" (time limit)" if facts["killed"] or cpu_killed else ""))
    elif load.get("error"):
        load_error = str(load["error"])
    outcomes = tuple(_judge(t, by_id.get(i), flags[i]) for i, t in enumerate(tests))
    stdout, out_trunc = facts["stdout"]
    stderr, err_trunc = facts["stderr"]
    mem = (any(o.status == "memory" for o in outcomes)
           or (load is not None and load.get("status") == "memory")
           or "MemoryError" in stderr)
    timed = (facts["killed"] or cpu_killed or any(o.status == "timeout" for o in outcomes)
             or (load is not None and load.get("status") == "timeout"))
    netns = bool(facts["netns"] and ready is not None and ready.get("netns")
                 and ready["netns"] != _own_netns())
    return SandboxResult(
        outcomes=outcomes, load_error=load_error, timed_out=bool(timed), memory_error=mem,
        crashed=bool(not done and load is not None and not load.get("error")
                     and not facts["killed"] and not cpu_killed),
        returncode=rc, stdout=stdout, stderr=stderr, stdout_truncated=out_trunc,
        stderr_truncated=err_trunc, wall_seconds=facts["wall"], network_namespace=netns)


def _own_netns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def run_code(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` as a script in the sandbox (no tests); read ``stdout`` / ``load_error``.

    >>> r = run_code("print(sum(range(10)))")
    >>> r.stdout, r.load_error
    ('45\\n', None)
    >>> run_code("import subprocess").load_error
    'PermissionError: sandbox: importing _posixsubprocess is blocked'
    """
    return run_tests(code, None, [], limits)
