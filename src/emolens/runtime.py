"""How emolens uses the machine: CPU threads, OpenMP waiting, and the extraction dtype.

**Threads.** PyTorch starts one OpenMP thread per core, and GNU OpenMP threads spin for a
while (``GOMP_SPINCOUNT``) before they sleep. Two such processes on the same cores keep each
other's threads spinning instead of working: decoding on a 2-core machine slowed from 6 s to
30-67 s while a second emolens process ran. :func:`configure_threads` gives each process its
fair share of the cores and, before torch is imported, asks OpenMP to wait passively
(``OMP_WAIT_POLICY=PASSIVE``). Measured on the 2-core machine while other processes kept it at
load 11-14 (``benchmarks/bench_threads.py``, ``results/threads.json``, n=2 each): 20 greedy
tokens took 55.6 s with torch's default (2 spinning threads, 8.6 s of CPU), 15.4 s with 2
passive threads (1.8 s of CPU), 16.4 s with 1 thread. Passive waiting keeps both cores for a
quiet machine and gives them back on a busy one.

**Extraction dtype.** :func:`extraction_dtype` decides what ``dtype="auto"`` means for an
extraction pass: bfloat16 for a float32 model on hardware that computes bfloat16 natively
(CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX), the model's own dtype otherwise
(on a CPU without them bfloat16 is emulated and several times slower than float32).

This module imports torch only inside functions, so it can be used before torch loads.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ["bf16_native", "configure_threads", "extraction_dtype", "passive_wait",
           "usable_cores"]

log = logging.getLogger(__name__)

#: Environment variable that overrides the default thread count.
THREADS_ENV = "EMOLENS_THREADS"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count).

    >>> usable_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def passive_wait() -> bool:
    """Ask OpenMP threads to sleep rather than spin when idle; True if it can still apply.

    OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads it, so this only works before
    ``import torch`` (the ``emolens`` command calls it first thing). A value the user set is
    kept.

    >>> isinstance(passive_wait(), bool)
    True
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return "torch" not in sys.modules


def configure_threads(n: int | None = None, *, share: int = 1, passive: bool = True) -> int:
    """Set how many threads torch uses on the CPU; return the number set.

    ``n`` wins; else ``$EMOLENS_THREADS``; else the usable cores divided by ``share``, the
    number of busy processes expected on these cores (at least 1 thread). With ``passive``
    and torch not yet imported, idle OpenMP threads sleep instead of spinning
    (:func:`passive_wait`). Inter-op threads are set to 1 (emolens runs one op at a time),
    when torch still allows it.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> configure_threads(1)
    1
    >>> torch.get_num_threads()
    1
    >>> configure_threads(before) == before
    True
    """
    if passive:
        passive_wait()
    if n is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        if env:
            try:
                n = int(env)
            except ValueError:
                from emolens.errors import EmolensError

                raise EmolensError(f"{THREADS_ENV} must be a whole number of threads, "
                                   f"got {env!r}") from None
        else:
            n = usable_cores() // max(1, int(share))
    n = max(1, int(n))
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already started: torch allows setting it only once, early
        pass
    log.debug("torch threads: %d (OMP_WAIT_POLICY=%s)", n, os.environ.get("OMP_WAIT_POLICY"))
    return n


def bf16_native(device: Any = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware.

    CUDA: compute capability 8.0 or newer; CPU: AVX512-BF16 or AMX; other devices: False.

    >>> isinstance(bf16_native("cpu"), bool)
    True
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return False
        return torch.cuda.get_device_capability(dev)[0] >= 8
    if dev.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def extraction_dtype(requested: Any, model_dtype: Any, device: Any = "cpu") -> Any:
    """The dtype an extraction pass runs in.

    ``None`` keeps ``model_dtype``; ``"auto"`` is bfloat16 when the model is float32 and the
    device computes bfloat16 natively (:func:`bf16_native`), else ``model_dtype``; anything
    else is a dtype or its name (``"bf16"``, ``"float32"``...).

    >>> import torch
    >>> extraction_dtype(None, torch.float32), extraction_dtype("bf16", torch.float32)
    (torch.float32, torch.bfloat16)
    >>> extraction_dtype("auto", torch.float16, "cpu")
    torch.float16
    """
    import torch

    if requested is None:
        return model_dtype
    if isinstance(requested, str) and requested == "auto":
        if model_dtype == torch.float32 and bf16_native(device):
            return torch.bfloat16
        return model_dtype
    from emolens.loading import parse_dtype

    return parse_dtype(requested)
