"""The analysis registry: a toy analysis defined here appears in ``emolens validate --help``,
runs from the CLI with its own options, and becomes a section of the report; the registry's
rules (names, aliases, options, inputs) and the layering (experiments never import the
report or extraction internals, library code never prints)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import tiny_lm

from emolens.corpus import Corpus
from emolens.errors import EmolensError
from emolens.experiments import (
    Analysis,
    Context,
    Option,
    Result,
    analyses,
    get,
    register,
    unregister,
)
from emolens.report import plots
from emolens.report.figures import FIGURES, figure_for
from emolens.report.html import build_report
from emolens.testing import tiny_vectors

SRC = Path(__file__).resolve().parents[1] / "src" / "emolens"


@dataclasses.dataclass(frozen=True)
class ToyResult(Result):
    kind = "toy-kind"

    n_emotions: int
    first: str
    plus: int

    def summary(self) -> str:
        return f"toy sees {self.n_emotions + self.plus} emotions, first {self.first}"

    def records(self) -> list[dict]:
        return [{"emotion": self.first, "plus": self.plus}]


def _toy_run(ctx: Context, plus: int, label: str) -> ToyResult:
    ctx.say(f"toy running with {label}")
    return ToyResult(len(ctx.vectors.emotions), ctx.vectors.emotions[0], plus)


TOY = Analysis(
    name="toy-count", title="Toy: count the emotions", section="0.0",
    description="A registry entry defined in a test.", study="The study never did this.",
    run=_toy_run, needs_model=False, aliases=("toy_count_alias",),
    options=(Option("plus", 0, "added to the count"),
             Option("label", "plain", "a label", choices=("plain", "fancy"))))


@pytest.fixture
def toy():
    register(TOY)

    @figure_for("toy-kind")
    def _fig(r):
        return {"main": plots.fig_bar_ci(["n"], [r.n_emotions], [r.n_emotions],
                                         [r.n_emotions], "toy", "count")}

    yield TOY
    unregister(TOY.name)
    FIGURES.pop("toy-kind", None)


# ------------------------------------------------------------------------------ registry


def test_registry_rules(toy):
    assert get("toy-count") is toy and get("TOY_COUNT") is toy and get("toy_count_alias") is toy
    assert [a.name for a in analyses()][-1] == "toy-count"
    with pytest.raises(EmolensError, match="already registered"):
        register(toy)
    with pytest.raises(EmolensError, match="already registered"):
        register(dataclasses.replace(toy, name="other", aliases=("toy-count-alias",)))
    register(dataclasses.replace(toy, title="replaced"), replace=True)
    assert get("toy-count").title == "replaced" and analyses()[-1].name == "toy-count"
    register(toy, replace=True)
    with pytest.raises(EmolensError, match="choose from .*toy-count"):
        get("no-such-analysis")
    assert toy.resolve({"plus": "3"}) == {"plus": 3, "label": "plain"}
    with pytest.raises(EmolensError, match="no option 'minus'"):
        toy.resolve({"minus": 1})
    with pytest.raises(EmolensError, match="must be one of"):
        toy.resolve({"label": "odd"})
    assert toy.options_key() != toy.options_key({"plus": 1})
    vecs = tiny_vectors(tiny_lm("llama"))
    res = toy(Context(None, vecs), plus=2)
    assert res.summary() == "toy sees 8 emotions, first calm"
    assert res.to_json() == {"n_emotions": 6, "first": "calm", "plus": 2, "kind": "toy-kind"}
    needs = dataclasses.replace(toy, needs_model=True, needs_corpus=True)
    with pytest.raises(EmolensError, match="needs a model"):
        needs(Context(None, vecs))
    with pytest.raises(EmolensError, match="needs a corpus"):
        needs(Context(tiny_lm("llama"), vecs))
    bad = dataclasses.replace(toy, run=lambda ctx, **o: {"not": "a result"})
    with pytest.raises(EmolensError, match="not a Result"):
        bad(Context(None, vecs))


def test_builtin_analyses_declare_what_they_are():
    names = [a.name for a in analyses()]
    for want in ("layers", "heldout", "logit-lens", "scenarios", "intensity", "steering",
                 "geometry", "speakers", "steering-sweep"):
        assert want in names
    for a in analyses():
        assert a.title and a.section and a.description and a.study, a.name
        for o in a.options:
            assert o.help and o.flag.startswith("--"), (a.name, o.name)
    assert get("heldout").needs_corpus and not get("geometry").needs_model


# ------------------------------------------------------------------------------ CLI


def test_toy_appears_in_validate_help_and_runs(toy, tmp_path, capsys):
    from emolens.cli import main

    assert main(["validate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "toy-count" in out and "Toy: count the emotions" in out and "scenarios" in out
    assert main(["validate", "toy-count", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--plus PLUS" in out and "added to the count (default: 0)" in out
    assert "{plain,fancy}" in out

    vpath = tiny_vectors(tiny_lm("llama")).save(tmp_path / "v.safetensors")
    code = main(["validate", "--json", "toy-count", "--vectors", str(vpath), "--model", "tiny",
                 "--plus", "4", "--label", "fancy", "--out", str(tmp_path / "out")])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_emotions"] == 6 and data["plus"] == 4 and data["kind"] == "toy-kind"
    assert (tmp_path / "out" / "toy-count.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out" / "toy-count.json").read_text())["plus"] == 4
    # the alias runs it too; an option it lacks and a bad choice are one-line errors
    assert main(["validate", "toy_count_alias", "--vectors", str(vpath), "--model", "t"]) == 0
    assert "toy sees 6 emotions" in capsys.readouterr().out
    assert main(["validate", "toy-count", "--k", "3", "--vectors", str(vpath)]) == 2
    assert main(["validate", "toy-count", "--label", "odd", "--vectors", str(vpath)]) == 2
    err = capsys.readouterr().err
    assert err.count("emolens") >= 2 and "Traceback" not in err
    assert main(["validate"]) == 2
    assert "ANALYSIS" in capsys.readouterr().err


# ------------------------------------------------------------------------------ report


def test_toy_becomes_a_report_section_and_is_cached(toy, tmp_path):
    lm = tiny_lm("llama")
    vecs = tiny_vectors(lm)
    lines: list[str] = []
    page = build_report(lm, vecs, tmp_path, corpus=Corpus([]), log=lines.append,
                        analyses=["toy-count", "scenarios"], options={"toy-count": {"plus": 1}})
    html = page.read_text()
    assert "<section id='toy-count'>" in html and "Toy: count the emotions" in html
    assert "toy sees 7 emotions, first calm" in html and "study section 0.0" in html
    assert "figures/toy-count-main.png" in html
    assert (tmp_path / "figures" / "toy-count-main.png").is_file()
    # the command that runs the analysis on a model large enough to show the study's effects
    assert ("emolens validate toy-count --model meta-llama/Llama-3.1-8B-Instruct --dtype "
            "bfloat16 --vectors Llama-3.1-8B-Instruct.emotions.safetensors") in html
    # the rows behind the numbers are written beside the page and linked from the section
    assert "<a href='records/toy-count-records.jsonl'>" in html
    assert (tmp_path / "records" / "toy-count-records.jsonl").read_text() == (
        '{"emotion": "calm", "plus": 1}\n')
    # an analysis these vectors cannot feed says why instead of breaking the page
    assert "<section id='scenarios'>" in html and "Not run: the scenario check needs" in html
    assert any("toy running with plain" in m for m in lines)
    cached = sorted(p.name for p in (tmp_path / "cache").glob("*.json"))
    assert len(cached) == 1 and cached[0].startswith("toy-count-")

    def boom(ctx, **options):
        raise AssertionError("a cached section was recomputed")

    again = build_report(lm, vecs, tmp_path, corpus=Corpus([]), log=lines.append,
                         analyses=[dataclasses.replace(toy, run=boom)],
                         options={"toy-count": {"plus": 1}})
    assert "toy sees 7 emotions" in again.read_text()
    # other options are another cache entry
    build_report(lm, vecs, tmp_path, analyses=["toy-count"], options={"toy-count": {"plus": 2}})
    assert len(list((tmp_path / "cache").glob("toy-count-*.json"))) == 2


# ------------------------------------------------------------------------------ layering


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_experiments_import_neither_the_report_nor_private_names():
    for path in sorted((SRC / "experiments").glob("*.py")):
        for module, names in _imports(path):
            assert not module.startswith("emolens.report"), (path.name, module)
            if module.startswith("emolens.") and module != "emolens.experiments":
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                assert not private, (path.name, module, private)


def test_library_code_does_not_print():
    for folder in ("experiments", "report"):
        for path in sorted((SRC / folder).glob("*.py")):
            calls = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
            assert not calls, path.name
