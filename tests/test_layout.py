"""The house rules of the package layout: data flows one way (no import circle, counting
lazy imports inside functions too), modules stay small, and experiments never reach into
the report or into extraction internals."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "emolens"
MAX_LINES = 650  # "about 600"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path) -> set[str]:
    """emolens modules imported anywhere in the file except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for block in ast.walk(tree) if _type_checking_block(block)
            for n in ast.walk(block)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(
        ".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("emolens")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("emolens"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {x for x in imports_of(p) if x in mods and x != m} for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            # a package's own __init__ importing its submodules is not a circle
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_on_constructed_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_emolens():
    assert find_cycle(graph()) is None


def test_the_model_layer_does_not_import_what_sits_above_it():
    edges = graph()
    for low in ("emolens.model", "emolens.hooks", "emolens.readout", "emolens.steer",
                "emolens.decode", "emolens.vectors"):
        assert "emolens.lens" not in edges[low] and "emolens.loading" not in edges[low], low


def test_experiments_do_not_import_the_report_or_extraction_internals():
    for path in (PKG / "experiments").glob("*.py"):
        found = imports_of(path)
        assert not any(x.startswith("emolens.report") for x in found), path.name
        assert not any(x.startswith("emolens.extract.") and x.rsplit(".", 1)[1].startswith("_")
                       for x in found), path.name


def test_no_module_is_much_over_600_lines():
    big = {p.relative_to(PKG).as_posix(): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not big, big
