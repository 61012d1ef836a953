"""The code that runs *inside* the sandbox child (``python -I -S -B -c RUNNER <fd>``), as
source text, and the audit events and imports it refuses.

The parent (:mod:`emolens.experiments.sandbox`) sends the spec (the code, the function name,
the calls, the limits, the readable roots and these block lists) as JSON on stdin; the child
builds every argument before any user code runs, installs a PEP 578 audit hook that cannot be
removed, loads the code as module ``solution``, calls the function once per test under its own
timer and writes one JSON record per line to the result file descriptor: ``ready`` (with its
network namespace), ``load``, one ``call`` per test (plain-data value, timings, exception
class names) and ``done``. Expected values are never sent, so the code cannot read them.

>>> compile(RUNNER, "<runner>", "exec") is not None
True
>>> "socket.connect" in BLOCKED_EVENTS and "ctypes" in BLOCKED_IMPORTS
True
"""

from __future__ import annotations

__all__ = ["BLOCKED_EVENTS", "BLOCKED_IMPORTS", "RUNNER"]

#: The bootstrap run as ``python -I -S -B -c RUNNER <result fd>``; the spec comes on stdin.
RUNNER = r'''
import builtins, json, os, signal, sys, time, types
_perf = time.perf_counter
_dumps, _loads, _write = json.dumps, json.loads, os.write
_fd = int(sys.argv[1])
_type, _isinstance, _repr, _len, _sorted = type, isinstance, repr, len, sorted

def _emit(obj):
    data = (_dumps(obj) + "\n").encode("utf-8", "replace")
    while data:
        data = data[_write(_fd, data):]

spec = _loads(sys.stdin.buffer.read().decode("utf-8"))
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
try:
    _netns = os.readlink("/proc/self/ns/net")
except OSError:
    _netns = None
_emit({"t": "ready", "netns": _netns})

class _Timeout(BaseException):
    pass

def _alarm(signum, frame):
    raise _Timeout()

signal.signal(signal.SIGALRM, _alarm)

def _arm(seconds):
    signal.setitimer(signal.ITIMER_REAL, seconds)

def _disarm():
    signal.setitimer(signal.ITIMER_REAL, 0)

def _err(exc):
    return "%s: %s" % (_type(exc).__name__, str(exc)[:300])

# Arguments are trusted test data: build them all before any user code runs.
_built = {}
for c in spec["calls"]:
    try:
        _arm(spec["test_seconds"])
        if "args_expr" in c:
            _built[c["id"]] = [tuple(eval(c["args_expr"], {"__builtins__": builtins}))
                               for _ in range(c["repeat"])]
        else:
            _built[c["id"]] = [tuple(_loads(_dumps(c["args"]))) for _ in range(c["repeat"])]
        _disarm()
    except BaseException as exc:
        _disarm()
        _built[c["id"]] = "harness: cannot build arguments (%s)" % _err(exc)

_root = os.path.realpath(os.getcwd())
_readable = tuple(os.path.realpath(p) for p in spec["readable"]) + (_root,)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_BLOCKED = frozenset(spec["blocked_events"])
_BLOCKED_IMPORTS = frozenset(spec["blocked_imports"])
_PATH_EVENTS = frozenset(["os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
    "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile",
    "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.move"])
_pid = os.getpid()

def _inside(path, roots):
    try:
        p = os.path.realpath(os.fspath(path))
    except Exception:
        return False
    return any(p == r or p.startswith(r + os.sep) for r in roots)

def _deny(what):
    raise PermissionError("sandbox: %s is blocked" % what)

def _hook(event, args):
    if event in _BLOCKED:
        _deny(event)
    if event == "import" and args[0] in _BLOCKED_IMPORTS:
        _deny("importing " + args[0])
    if event == "open":
        path, mode, flags = args
        if _isinstance(path, int):
            return
        if (flags or 0) & _WRITE or (_isinstance(mode, str) and any(ch in mode for ch in "wax+")):
            if not _inside(path, (_root,)):
                _deny("writing %s" % (path,))
        elif not _inside(path, _readable):
            _deny("reading %s" % (path,))
    elif event in ("os.listdir", "os.scandir"):
        p = args[0]
        if p is not None and not _isinstance(p, int) and not _inside(p, _readable):
            _deny("listing %s" % (p,))
    elif event in _PATH_EVENTS:
        for a in args[:2]:
            if _isinstance(a, (str, bytes)) or hasattr(a, "__fspath__"):
                if not _inside(a, (_root,)):
                    _deny("%s on %s" % (event, a))
    elif event == "os.kill" and args[0] != _pid:
        _deny("signalling another process")

def _canon(v, depth=0):
    t = _type(v)
    if v is None or t is bool or t is str or t is int:
        return v
    if t is float:
        return v if v == v and v not in (float("inf"), float("-inf")) else {"__float__": _repr(v)}
    if depth > 40:
        return {"__too_deep__": True}
    if t is list or t is tuple:
        return [_canon(x, depth + 1) for x in v]
    if t is dict and all(_type(k) is str for k in v):
        return {k: _canon(x, depth + 1) for k, x in v.items()}
    if t is set or t is frozenset:
        items = [_canon(x, depth + 1) for x in v]
        return {"__set__": _sorted(items, key=_dumps)}
    if t is bytes:
        return {"__bytes__": v.hex()}
    try:
        r = _repr(v)[:200]
    except BaseException:
        r = "?"
    return {"__object__": t.__name__, "repr": r}

sys.addaudithook(_hook)

mod = types.ModuleType("solution")
mod.__file__ = os.path.join(_root, "solution.py")
sys.modules["solution"] = mod
fn = None
try:
    _arm(spec["test_seconds"])
    exec(compile(spec["code"], mod.__file__, "exec"), mod.__dict__)
    _disarm()
    if spec["function"] is not None:
        fn = mod.__dict__.get(spec["function"])
        if not callable(fn):
            _emit({"t": "load", "error": "the code defines no function %r" % spec["function"]})
            sys.stdout.flush()
            os._exit(0)
    _emit({"t": "load", "error": None})
except _Timeout:
    _emit({"t": "load", "error": "timeout while loading the code", "status": "timeout"})
    os._exit(0)
except MemoryError:
    _disarm()
    _emit({"t": "load", "error": "MemoryError while loading the code", "status": "memory"})
    os._exit(0)
except BaseException as exc:
    _disarm()
    _emit({"t": "load", "error": _err(exc)})
    os._exit(0)

for c in spec["calls"]:
    out = {"t": "call", "id": c["id"]}
    built = _built[c["id"]]
    if _isinstance(built, str):
        out.update(status="harness", error=built)
        _emit(out)
        continue
    secs, values = [], []
    try:
        for args in built:
            _arm(c["timeout"])
            t0 = _perf()
            value = fn(*args)
            secs.append(_perf() - t0)
            values.append(_canon(value))
            _disarm()
        text = [_dumps(x) for x in values]
        out.update(status="ok", same=all(x == text[0] for x in text),
                   value=values[0] if _len(text[0]) <= spec["value_chars"] else
                   {"__too_large__": _len(text[0])}, seconds=secs)
    except _Timeout:
        out.update(status="timeout", seconds=secs)
    except MemoryError:
        _disarm()
        out.update(status="memory")
    except BaseException as exc:
        _disarm()
        out.update(status="raised", error=_err(exc),
                   mro=[k.__name__ for k in _type(exc).__mro__], seconds=secs)
    _emit(out)
try:
    sys.stdout.flush()
    sys.stderr.flush()
except BaseException:
    pass
_emit({"t": "done"})
os._exit(0)
'''

#: Audit events refused outright inside the sandbox.
BLOCKED_EVENTS: tuple[str, ...] = (
    "socket.__new__", "socket.bind", "socket.connect", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto",
    "socket.sendmsg", "socket.sethostname", "subprocess.Popen", "os.system", "os.exec",
    "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.startfile", "pty.spawn",
    "os.killpg", "os.symlink", "os.link", "os.chroot", "ctypes.dlopen", "ctypes.dlsym",
    "ctypes.cdata", "ctypes.call_function", "sys.settrace", "sys.setprofile",
    "webbrowser.open",
)
#: Modules that may not be imported inside the sandbox (process creation, foreign calls).
BLOCKED_IMPORTS: tuple[str, ...] = ("ctypes", "_ctypes", "_posixsubprocess", "multiprocessing",
                                    "_multiprocessing", "pty")
