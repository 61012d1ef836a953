"""Tests for emolens.fileio: atomic whole-file writes and append-only JSONL logs."""

from __future__ import annotations

import json
import os
import stat
import warnings

import pytest

from emolens.errors import EmolensError
from emolens.fileio import (
    FileWriteError,
    append_lines,
    atomic_path,
    ensure_dir,
    repair_torn_tail,
    write_text_atomic,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------ atomic writes


def test_atomic_write_replaces_and_keeps_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "x.txt"
    old = os.umask(0o022)
    try:
        write_text_atomic(target, "one")
        assert target.read_text() == "one" and _mode(target) == 0o644
        os.umask(0o002)
        write_text_atomic(target, "two")
        assert target.read_text() == "two" and _mode(target) == 0o664
    finally:
        os.umask(old)
    assert _leftovers(target.parent) == []


def test_atomic_path_leaves_the_old_file_when_the_body_fails(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_fsyncs_the_temp_file_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("data")
    kinds = [k for k, _ in events]
    assert kinds.index("fsync") < kinds.index("replace")
    assert events[kinds.index("fsync")][1] == os.path.realpath(tmp)
    assert events[kinds.index("replace")][1] == str(tmp)


@pytest.mark.parametrize("make, what", [
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: p.symlink_to(p.parent / "real.txt"), "a symbolic link"),
    (lambda p: os.mkfifo(p), "a named pipe"),
])
def test_atomic_path_refuses_targets_that_are_not_regular_files(tmp_path, make, what):
    (tmp_path / "real.txt").write_text("keep")
    target = tmp_path / "target"
    make(target)
    with pytest.raises(FileWriteError, match=f"refusing to write .*target: it is {what}"):
        write_text_atomic(target, "x")
    assert isinstance(FileWriteError("x"), EmolensError)
    assert (tmp_path / "real.txt").read_text() == "keep"
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_atomic_path_refuses_a_device():
    with pytest.raises(FileWriteError, match="/dev/full: it is a character device"):
        write_text_atomic("/dev/full", "x")
    with pytest.raises(FileWriteError, match="/dev/full: it is a character device"):
        append_lines("/dev/full", ["x"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_an_unwritable_folder_is_one_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(FileWriteError, match="cannot write .*locked/x.txt"):
            write_text_atomic(locked / "x.txt", "x")
        with pytest.raises(FileWriteError, match="locked/sub/x.txt: cannot create folder"):
            write_text_atomic(locked / "sub" / "x.txt", "x")
    finally:
        locked.chmod(0o700)


def test_ensure_dir(tmp_path):
    assert ensure_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert ensure_dir(tmp_path / "a").is_dir()  # already there: fine
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert ensure_dir(tmp_path / "link").is_dir()  # a link to a folder is a folder
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileWriteError, match="cannot use .*f as a folder"):
        ensure_dir(tmp_path / "f")
    with pytest.raises(FileWriteError, match="cannot write .*f/x.txt"):
        write_text_atomic(tmp_path / "f" / "x.txt", "x")


# ------------------------------------------------------------------------------ append-only logs


def test_append_lines_appends_and_creates_the_folder(tmp_path):
    log = tmp_path / "a" / "log.jsonl"
    assert append_lines(log, ['{"i": 0}']) == 1
    assert append_lines(log, ['{"i": 1}', '{"i": 2}']) == 2
    assert append_lines(log, []) == 0
    assert [json.loads(x)["i"] for x in log.read_text().splitlines()] == [0, 1, 2]
    assert log.read_text().endswith("\n")


def test_append_lines_refuses_a_line_break():
    with pytest.raises(ValueError, match="line break"):
        append_lines("never-written.jsonl", ['{"a": 1}\n{"b": 2}'])
    assert not os.path.exists("never-written.jsonl")


@pytest.mark.parametrize("tail", ['{"i": 2, "te', '{"i": 2, "text": "x"', "12", '"abc', "  "])
def test_a_torn_last_line_is_truncated_with_a_warning(tmp_path, tail):
    log = tmp_path / "log.jsonl"
    log.write_text('{"i": 0}\n{"i": 1}\n' + tail)
    with pytest.warns(UserWarning, match="truncating torn last line"):
        append_lines(log, ['{"i": 3}'])
    assert log.read_text() == '{"i": 0}\n{"i": 1}\n{"i": 3}\n'


def test_a_complete_last_record_only_gets_its_newline(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"i": 0}\n{"i": 1}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        append_lines(log, ['{"i": 2}'])
    assert log.read_text() == '{"i": 0}\n{"i": 1}\n{"i": 2}\n'


def test_repair_torn_tail_edge_cases(tmp_path):
    log = tmp_path / "log.jsonl"
    assert repair_torn_tail(log) == 0 and not log.exists()  # missing: left alone
    log.write_text("")
    assert repair_torn_tail(log) == 0 and log.read_text() == ""
    log.write_text('{"i": 0}\n')
    assert repair_torn_tail(log) == 0 and log.read_text() == '{"i": 0}\n'
    # A single torn line, no newline anywhere: the file becomes empty.
    log.write_text('{"i": ')
    with pytest.warns(UserWarning, match=r"\(6 bytes\)"):
        assert repair_torn_tail(log) == 6
    assert log.read_text() == ""
    # A long torn line (longer than one read chunk) and bytes that are not UTF-8.
    log.write_bytes(b'{"i": 0}\n' + b"x" * 200_000 + b"\xff")
    with pytest.warns(UserWarning):
        assert repair_torn_tail(log) == 200_001
    assert log.read_bytes() == b'{"i": 0}\n'
    # A complete array counts as a record too.
    log.write_text('{"i": 0}\n[1, 2]')
    assert repair_torn_tail(log) == 0 and log.read_text() == '{"i": 0}\n[1, 2]\n'


def test_append_refuses_a_symlinked_log(tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_text('{"i": 0}\n')
    link = tmp_path / "log.jsonl"
    link.symlink_to(real)
    with pytest.raises(FileWriteError, match="symbolic link"):
        append_lines(link, ['{"i": 1}'])
    with pytest.raises(FileWriteError, match="symbolic link"):
        repair_torn_tail(link)
    assert real.read_text() == '{"i": 0}\n'
