"""Arguments and checkers shared by every subcommand.

Every CLI argument is checked where it is parsed, by one checker per kind, each usable as an
argparse ``type=`` (argparse turns the :class:`argparse.ArgumentTypeError` into one error line
and exit code 2):

* :func:`positive_int`, :func:`nonneg_int` — whole numbers ``>= 1`` / ``>= 0``;
* :func:`finite_float` ``(lo, hi)`` — builds a checker for a finite number in a range;
* :func:`output_file`, :func:`output_dir` — where a command may write: a regular file (or a
  new path in an existing writable folder), never a directory, device file or symlink;
* :func:`device_arg`, :func:`device_map_arg` — devices checked against what torch has.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> _ = parser.add_argument("--batch-size", type=positive_int, default=8)
>>> _ = parser.add_argument("--strength", type=finite_float(-1, 1), default=0.1)
>>> parser.parse_args(["--batch-size", "4", "--strength", "-0.5"])
Namespace(batch_size=4, strength=-0.5)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel

#: While a command runs (inside :func:`command_logging`): how to undo what it changed.
_restore: list[Callable[[], None]] | None = None

#: Values of ``--dtype`` (``auto``: the checkpoint's own dtype on a GPU, float32 on the CPU).
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


# ---- argument checkers (argparse ``type=``) -----------------------------------------------
def _int(text: str, least: int, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (sizes, counts, windows).

    >>> positive_int("3")
    3
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a whole number >= 1, got '0'
    """
    return _int(text, 1, "a whole number >= 1")


def nonneg_int(text: str) -> int:
    """A whole number >= 0 (skips, seeds, offsets).

    >>> nonneg_int("0")
    0
    >>> nonneg_int("1.5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a whole number >= 0, got '1.5'
    """
    return _int(text, 0, "a whole number >= 0")


def finite_float(lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """A checker for a finite number in ``[lo, hi]`` (bounds optional; ``*_open`` excludes them).

    NaN and infinities are always refused.

    >>> top_p = finite_float(0, 1, lo_open=True)
    >>> top_p("0.9")
    0.9
    >>> top_p("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a number > 0 and <= 1, got '0'
    >>> finite_float()("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a finite number, got 'nan'
    """
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        bounds.append(f"{'<' if hi_open else '<='} {hi:g}")
    what = "a number " + " and ".join(bounds) if bounds else "a finite number"

    def check(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    check.__name__ = "finite_float"
    return check


def _writable_parent(path: Path, text: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {str(parent)!r} "
                                         "does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {str(parent)!r} "
                                         "is not writable")


def output_file(text: str) -> str:
    """Where a command writes a file: an existing regular file, or a new path whose folder
    exists and is writable. Directories, device files, pipes and symlinks are refused.
    Returns the path as given.

    >>> import os, tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> output_file(os.path.join(tmp, "vectors.safetensors")).endswith("vectors.safetensors")
    True
    >>> output_file(tmp)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '...' is a directory; give a file path
    >>> output_file("/dev/null")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '/dev/null' is not a regular file (a device, pipe or socket)
    """
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    path = Path(text).expanduser()
    if path.is_symlink():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a symbolic link; emolens does not write through links (give the "
            "real path)")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        _writable_parent(path, text)
        return text
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot use {text!r}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file path")
    if not stat.S_ISREG(mode):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a regular file (a device, pipe or socket)")
    _writable_parent(path, text)  # the file is replaced by a rename in its folder
    return text


def output_dir(text: str) -> str:
    """Where a command writes a folder of files: an existing writable folder, or a new one
    whose parent exists and is writable. Files, devices and symlinks are refused.
    Returns the path as given.

    >>> import os, tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> output_dir(os.path.join(tmp, "report")).endswith("report")
    True
    >>> output_dir(os.path.join(tmp, "no", "such", "report"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: cannot write '...report': folder '...such' does not exist
    """
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expected a folder path, got an empty string")
    path = Path(text).expanduser()
    if path.is_symlink():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a symbolic link; emolens does not write through links (give the "
            "real path)")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        _writable_parent(path, text)
        return text
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot use {text!r}: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        kind = "file" if stat.S_ISREG(mode) else "device, pipe or socket"
        raise argparse.ArgumentTypeError(f"{text!r} is an existing {kind}; give a folder path")
    if not os.access(path, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in folder {text!r}: not writable")
    return text


def device_arg(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` — checked against torch.

    >>> device_arg("auto"), device_arg("cpu")
    ('auto', 'cpu')
    >>> device_arg("gpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps
    """
    text = str(text).strip()
    if text in ("auto", "cpu"):  # no torch import for the common cases
        return text
    from emolens.errors import ModelLoadError
    from emolens.loading import resolve_device

    try:
        resolve_device(text)
    except ModelLoadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def device_map_arg(text: str) -> str:
    """``--device-map``: ``auto``, ``balanced``, ``balanced_low_0``, ``sequential`` or a device.

    >>> device_map_arg("auto")
    'auto'
    >>> device_map_arg("everywhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: unknown device map 'everywhere'; use auto, balanced, ...
    """
    text = str(text).strip()
    from emolens.errors import ModelLoadError
    from emolens.loading import resolve_device_map

    try:
        resolve_device_map(text)
    except ModelLoadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# ---- logging while a command runs ---------------------------------------------------------
class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (pytest and callers swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


@contextlib.contextmanager
def command_logging() -> Iterator[None]:
    """For one CLI command: the ``emolens`` logger's INFO lines go to stderr as
    ``emolens: message``; everything is put back afterwards (so in-process calls leave the
    caller's logging alone). See :func:`quiet_transformers` for the transformers side.

    >>> log = logging.getLogger("emolens")
    >>> before = list(log.handlers)
    >>> with command_logging():
    ...     log.handlers[-1].formatter._fmt
    'emolens: %(message)s'
    >>> log.handlers == before
    True
    """
    global _restore
    logger = logging.getLogger("emolens")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("emolens: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    outer, _restore = _restore, []
    try:
        yield
    finally:
        for undo in reversed(_restore):
            undo()
        _restore = outer
        logger.removeHandler(handler)
        logger.setLevel(level)


def quiet_transformers() -> None:
    """Inside a CLI command: transformers logs errors only, and shows progress bars only on
    a terminal, until the command ends. Outside a command (library use) it does nothing:
    the user's transformers logger is theirs.

    Called by :func:`load_model_from_args`, the point where a command imports transformers
    (importing it up front would cost every command a second).

    >>> from transformers.utils import logging as hf_logging
    >>> before = hf_logging.get_verbosity()
    >>> with command_logging():
    ...     quiet_transformers()
    ...     hf_logging.get_verbosity() == hf_logging.ERROR
    True
    >>> hf_logging.get_verbosity() == before
    True
    """
    if _restore is None:
        return
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()

    def undo() -> None:
        hf_logging.set_verbosity(verbosity)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()

    _restore.append(undo)
    hf_logging.set_verbosity_error()
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        hf_logging.disable_progress_bar()  # bars in a terminal, never in log files


# ---- the model options ----------------------------------------------------------------------
def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--model, --revision, --trust-remote-code, --dtype, --device, --device-map.

    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_model_args(p)
    >>> a = p.parse_args([])
    >>> a.model, a.revision, a.trust_remote_code, a.dtype, a.device, a.device_map
    ('default', None, False, 'auto', 'auto', None)
    """
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="default",
                       help="'default', a .gguf file, a local Hugging Face folder or a hub id "
                       "(downloaded unless HF_HUB_OFFLINE=1)")
    group.add_argument("--revision", default=None,
                       help="hub branch, tag or commit to load (hub ids only)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow a model that ships its own Python code (auto_map) to run "
                       "it; read that code first")
    group.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                       help="auto (default): the checkpoint's dtype on a GPU, float32 on CPU")
    group.add_argument("--device", default="auto", type=device_arg,
                       help="auto (default: cuda when available, else cpu), cpu, cuda, "
                       "cuda:N, mps")
    group.add_argument("--device-map", default=None, type=device_map_arg,
                       help="spread a big model over devices: auto, balanced, sequential "
                       "(replaces --device)")


def load_model_from_args(args: argparse.Namespace) -> LanguageModel:
    """Load the model that :func:`add_model_args` options describe (missing ones: defaults).

    >>> import argparse, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> lm.model.save_pretrained(tmp.name)
    >>> _ = lm.tokenizer.save_pretrained(tmp.name)
    >>> loaded = load_model_from_args(argparse.Namespace(model=tmp.name, device="cpu"))
    >>> loaded.n_layers, str(loaded.dtype)
    (4, 'torch.float32')
    >>> tmp.cleanup()
    """
    from emolens.loading import load_model

    quiet_transformers()
    device_map = getattr(args, "device_map", None)
    device = getattr(args, "device", None) or "auto"
    if device_map is not None and device == "auto":
        device = None
    return load_model(args.model, revision=getattr(args, "revision", None),
                      trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
                      dtype=getattr(args, "dtype", None) or "auto", device=device,
                      device_map=device_map)


def print_json(data: Any) -> None:
    """Write ``data`` to stdout as indented JSON (non-JSON values as strings).

    >>> print_json({"layers": 4, "path": Path("/tmp")})
    {
      "layers": 4,
      "path": "/tmp"
    }
    """
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
