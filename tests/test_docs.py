"""The README's and ARCHITECTURE.md's Python code blocks run, as written, in one namespace
per file (the default model is loaded by the blocks themselves)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "ARCHITECTURE.md")


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert python_blocks(ROOT / "README.md"), "the README tour lost its code"


@pytest.mark.integration
@pytest.mark.parametrize("doc", DOCS)
def test_code_blocks_run(doc, default_lm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {"__name__": f"docs_{Path(doc).stem}"}
    for i, block in enumerate(python_blocks(ROOT / doc)):
        try:
            exec(compile(block, f"{doc} block {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message says which block
            raise AssertionError(f"{doc} block {i + 1} failed: {exc!r}\n{block}") from exc
