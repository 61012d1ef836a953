"""The one place that writes files: atomic whole-file writes and append-only JSONL logs.

- :func:`atomic_path` / :func:`write_text_atomic`: write a temporary file beside the target,
  fsync it, rename it onto the target. A crash leaves the old file or the new one, never half
  of one.
- :func:`append_lines`: append lines to a log (one write, then fsync). A crash loses at most
  the line being written; the next append (or :func:`repair_torn_tail`) repairs what it left.

Targets that exist but are not regular files (a directory, a device such as ``/dev/full``)
and symbolic links are refused with :class:`FileWriteError`, before anything is written.

>>> import tempfile, pathlib
>>> log = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
>>> append_lines(log, ['{"a": 1}', '{"a": 2}'])
2
>>> log.read_text()
'{"a": 1}\\n{"a": 2}\\n'
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emolens.errors import FileWriteError

__all__ = [
    "FileWriteError",
    "append_lines",
    "atomic_path",
    "ensure_dir",
    "repair_torn_tail",
    "write_jsonl_atomic",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_target(target: Path) -> None:
    """Refuse a target that exists and is a symlink or not a regular file."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileWriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise FileWriteError(f"refusing to write {target}: it is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise FileWriteError(f"refusing to write {target}: it is {what}, not a regular file")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (best effort: not every OS allows it)."""
    try:
        _fsync_path(path)
    except OSError:
        pass


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create folder ``path`` (and its parents) if needed; returns it.

    A path that exists and is not a folder, or one that cannot be created, raises
    :class:`FileWriteError` with one clear line (a symlink to a folder is fine).

    >>> import tempfile, pathlib
    >>> ensure_dir(pathlib.Path(tempfile.mkdtemp()) / "a" / "b").is_dir()
    True
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FileWriteError(f"cannot use {folder} as a folder: it exists and is not one") \
            from None
    except OSError as exc:
        raise FileWriteError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
    return folder


def _make_parent(target: Path) -> None:
    try:
        ensure_dir(target.parent)
    except FileWriteError as exc:
        raise FileWriteError(f"cannot write {target}: {exc}") from None


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto it.

    The file gets ordinary permissions (0o666 minus the umask), not mkstemp's 0o600,
    because vector files, corpora and reports are meant to be shared. If the body raises,
    the temporary file is removed and ``path`` is left as it was. A target that is a
    symbolic link, a directory or a device raises :class:`FileWriteError`.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    >>> with atomic_path(target.parent) as tmp:  # doctest: +ELLIPSIS
    ...     pass
    Traceback (most recent call last):
    ...
    emolens.errors.FileWriteError: refusing to write ...: it is a directory, not a regular file
    """
    target = Path(path)
    _check_target(target)
    _make_parent(target)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise FileWriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        _check_target(target)  # it may have changed while the body ran
        _fsync_path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise FileWriteError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
    _fsync_dir(target.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path.

    >>> import tempfile, pathlib
    >>> p = write_text_atomic(pathlib.Path(tempfile.mkdtemp()) / "a" / "b.txt", "hi\\n")
    >>> p.read_text()
    'hi\\n'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _is_complete_json(tail: bytes) -> bool:
    """A JSON object or array. A proper prefix of one never parses, unlike a number's."""
    try:
        value = json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(value, dict | list)


def repair_torn_tail(path: str | os.PathLike[str]) -> int:
    """Repair the end of a JSONL log so that the next append starts on a fresh line.

    A final line without its newline is what a kill in the middle of an append leaves. If it
    is not a complete JSON object or array it is truncated (with a warning); if it is one
    (only the newline is missing) the newline is added and the record kept. Returns the
    number of bytes dropped. A missing file is left alone.

    >>> import tempfile, pathlib, warnings
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> _ = log.write_text('{"a": 1}\\n{"a": 2}')          # complete, newline missing
    >>> repair_torn_tail(log), log.read_text()
    (0, '{"a": 1}\\n{"a": 2}\\n')
    >>> _ = log.write_text('{"a": 1}\\n{"a": ')            # torn in the middle
    >>> with warnings.catch_warnings(record=True):
    ...     repair_torn_tail(log), log.read_text()
    (6, '{"a": 1}\\n')
    """
    p = Path(path)
    _check_target(p)
    if not p.exists():
        return 0
    with open(p, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back to the last newline; everything up to and including it is intact.
        pos, chunk, cut = size, 1 << 16, 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            nl = f.read(pos - start).rfind(b"\n")
            if nl >= 0:
                cut = start + nl + 1
                break
            pos = start
        f.seek(cut)
        if _is_complete_json(f.read(size - cut)):
            f.seek(size)
            f.write(b"\n")
            dropped = 0
            logger.warning("%s: last record lacked its newline; added it", p)
        else:
            dropped = size - cut
            warnings.warn(f"{p}: truncating torn last line ({dropped} bytes)", stacklevel=2)
            f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return dropped


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Any]) -> Path:
    """Write ``rows`` as JSON lines in one atomic replace (:func:`atomic_path`).

    >>> import tempfile, pathlib
    >>> p = write_jsonl_atomic(pathlib.Path(tempfile.mkdtemp()) / "r.jsonl", [{"a": 1}, [2]])
    >>> p.read_text()
    '{"a": 1}\\n[2]\\n'
    """
    body = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows)
    return write_text_atomic(path, body)


def append_lines(path: str | os.PathLike[str], lines: Iterable[str]) -> int:
    """Append ``lines`` (each without its newline) to a log in one write, then fsync.

    A torn final line left by an earlier crash is repaired first (:func:`repair_torn_tail`),
    so a kill loses at most the lines of this call, and never corrupts earlier ones. The
    folder is created if needed. Returns the number of lines written (nothing is touched
    when there are none). A line holding a newline raises ValueError.

    >>> import tempfile, pathlib
    >>> log = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> _ = log.write_text('{"a": 1}')                       # newline missing, record complete
    >>> append_lines(log, ['{"a": 2}']), log.read_text()
    (1, '{"a": 1}\\n{"a": 2}\\n')
    """
    target = Path(path)
    items = list(lines)
    for line in items:
        if "\n" in line or "\r" in line:
            raise ValueError(f"a line to append holds a line break: {line[:60]!r}")
    if not items:
        return 0
    _check_target(target)
    _make_parent(target)
    repair_torn_tail(target)
    data = "".join(line + "\n" for line in items).encode("utf-8")
    created = not target.exists()
    try:
        with open(target, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise FileWriteError(f"cannot append to {target}: {exc.strerror or exc}") from None
    if created:
        _fsync_dir(target.parent)
    return len(items)
