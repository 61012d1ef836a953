"""Arguments and checkers shared by every subcommand.

Every CLI argument is checked where it is parsed, by one checker per kind, each usable as an
argparse ``type=`` (argparse turns the :class:`argparse.ArgumentTypeError` into one error line
and exit code 2):

* :func:`positive_int`, :func:`nonneg_int` — whole numbers ``>= 1`` / ``>= 0``;
* :func:`finite_float` ``(lo, hi)`` — builds a checker for a finite number in a range;
* :func:`output_file`, :func:`output_dir` — where a command may write: a regular file (or a
  new path in an existing writable folder), never a directory, device file or symlink;
* :func:`device_arg`, :func:`device_map_arg` — devices checked against what torch has;
* :func:`seed_arg` — a seed every generator takes (0 .. 2**32 - 1);
* :func:`layer_spec` — the syntax of a layer spec (the model checks the range later);
* :func:`text_arg` — text from the command line that is valid Unicode (no stray bytes);
* :func:`emotion_list` — a comma-separated list of the 171 emotion concepts;
* :func:`read_text` — a text file decoded as UTF-8, an error naming the file and line.

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
import re
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emolens.errors import EmolensError

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


#: The largest seed :func:`seed_arg` accepts (NumPy's legacy generators stop here).
MAX_SEED = 2**32 - 1


def seed_arg(text: str) -> int:
    """A random seed: a whole number from 0 to 2**32 - 1 (what every generator accepts).

    >>> seed_arg("42")
    42
    >>> seed_arg("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected a seed 0..4294967295, got '-1'
    """
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed 0..{MAX_SEED}, got {text!r}")
    return value


_TL_LAYER = re.compile(r"blocks\.(-?\d+)\.hook_resid_post")
_LAYER_HELP = ("write all, 20, -1, 0.66, '18,20', '16-20' or blocks.20.hook_resid_post")


def _layer_number(piece: str, text: str) -> float:
    try:
        value = float(piece)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (not value.is_integer() and not 0 < value < 1):
        raise argparse.ArgumentTypeError(f"cannot read layer spec {text!r}; {_LAYER_HELP}")
    return value


def layer_spec(text: str) -> str:
    """A layer spec as :meth:`emolens.model.ModelAdapter.resolve_layers` reads it, checked
    for syntax where it is parsed (whether the model has those layers is checked when it
    is loaded). Returns the spec as given.

    >>> layer_spec("16-20"), layer_spec("0.66"), layer_spec("blocks.3.hook_resid_post")
    ('16-20', '0.66', 'blocks.3.hook_resid_post')
    >>> layer_spec("twenty")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: cannot read layer spec 'twenty'; write all, 20, ...
    >>> layer_spec("1.5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: cannot read layer spec '1.5'; ...
    """
    spec = _TL_LAYER.sub(r"\1", str(text).strip().lower())
    if spec == "all":
        return text
    pieces = [p.strip() for p in spec.split(",")]
    if not spec or any(not p for p in pieces):
        raise argparse.ArgumentTypeError(f"cannot read layer spec {text!r}; {_LAYER_HELP}")
    for piece in pieces:
        cut = piece.find("-", 1)
        if cut > 0:
            lo, hi = (_layer_number(x, text) for x in (piece[:cut], piece[cut + 1:]))
            if not (lo.is_integer() and hi.is_integer()):
                raise argparse.ArgumentTypeError(
                    f"cannot read layer spec {text!r}: a range joins whole layer numbers")
        else:
            _layer_number(piece, text)
    return text


def text_arg(text: str) -> str:
    """Text given on the command line: refused when it holds bytes that are not UTF-8
    (Python keeps them as lone surrogates, which no tokenizer can encode) or NUL.

    >>> text_arg("Hello, world")
    'Hello, world'
    >>> text_arg("bad \\udcff byte")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: the text holds bytes that are not UTF-8 (at character 4); ...
    """
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            raise argparse.ArgumentTypeError(f"the text holds bytes that are not UTF-8 (at "
                                             f"character {i}); pass UTF-8 text")
        if ch == "\x00":
            raise argparse.ArgumentTypeError(f"the text holds a NUL character (at character "
                                             f"{i})")
    return text


def emotion_list(text: str) -> list[str]:
    """A comma-separated list of emotion concepts (the study's 171), each known, none twice.

    >>> emotion_list("calm, afraid")
    ['calm', 'afraid']
    >>> emotion_list("calm,nosuch")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: unknown emotion 'nosuch' (not one of the 171 emotion concepts...
    """
    import difflib

    from emolens.concepts.emotions import EMOTIONS

    items = [v.strip() for v in str(text).split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of emotions")
    for item in items:
        if item not in EMOTIONS:
            close = difflib.get_close_matches(item, EMOTIONS, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown emotion {item!r} (not one of the 171 emotion concepts{hint})")
    twice = sorted({e for e in items if items.count(e) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"emotion(s) given twice: {', '.join(twice)}")
    return items


def _decode_error(data: bytes, exc: UnicodeDecodeError, where: str, first_line: int
                  ) -> EmolensError:
    line = data.count(b"\n", 0, exc.start) + first_line
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    what = "the input" if where == "stdin" else "the file"
    return EmolensError(f"{where} line {line} is not UTF-8 text (byte {data[exc.start]:#04x} "
                        f"at column {column}); re-encode {what} as UTF-8")


def decode_text(data: bytes, where: str, first_line: int = 1) -> str:
    """``data`` decoded as UTF-8 (a leading BOM dropped); an error names ``where`` and the
    line and column of the first bad byte (``data`` starting at line ``first_line``).

    >>> decode_text(b"fine\\n", "x.txt")
    'fine\\n'
    >>> decode_text(b"ok\\nbad \\xff\\n", "x.txt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emolens.errors.EmolensError: x.txt line 2 is not UTF-8 text (byte 0xff at column 5); ...
    """
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(data, exc, where, first_line) from None


def read_text(path: str) -> str:
    """A text file (``-``: stdin) decoded as UTF-8; a missing, unreadable or badly encoded
    file gives one :class:`EmolensError` line naming it (and the line of a bad byte).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> _ = p.write_bytes(b"line one\\n\\xe9t\\xe9\\n")
    >>> read_text(str(p))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emolens.errors.EmolensError: ...t.txt line 2 is not UTF-8 text (byte 0xe9 at column 1); ...
    """
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:  # a text stream already (tests, notebooks)
            return sys.stdin.read()
        return decode_text(stream.read(), "stdin")
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise EmolensError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_text(data, path)


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
