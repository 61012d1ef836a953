"""The report: every analysis of the registry on one model, as one HTML page with PNG figures.

The page is built by enumerating :func:`emolens.experiments.analyses`: each entry runs, its
result's ``summary()`` and ``to_json()`` are shown, and its figures are chosen by the
result's kind (:mod:`emolens.report.figures`). Finished sections are cached in
``OUT/cache/`` keyed by the vector file, the corpus (for analyses that read one), the layer,
the emolens version and the analysis options, so a rerun only computes what is missing.
An analysis that cannot run on these inputs (an :class:`~emolens.errors.EmolensError`, e.g.
a vector file without the core emotions) becomes a section that says why; it is not cached.

>>> import tempfile
>>> from emolens.corpus import Corpus
>>> page = build_report(lm, vecs, tempfile.mkdtemp(), corpus=Corpus([]),
...                     analyses=["layers", "geometry"])
>>> "The geometry of emotion space" in page.read_text()
True
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emolens import __version__
from emolens.errors import EmolensError
from emolens.experiments import Analysis, Context, analyses, get
from emolens.fileio import write_jsonl_atomic, write_text_atomic
from emolens.report.figures import save_figures

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = ["TABLES", "build_report", "cache_key", "outofstyle_table", "render_html",
           "run_sections", "vectors_key"]

logger = logging.getLogger(__name__)


def vectors_key(vectors: EmotionVectors) -> str:
    """A short hash of a vector file's directions and model (the cache key's first part).

    >>> len(vectors_key(vecs))
    16
    """
    digest = hashlib.sha256(vectors.directions.tobytes())
    digest.update(json.dumps(vectors.meta.get("model"), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def cache_key(analysis: Analysis, ctx: Context, options: Mapping[str, Any] | None = None
              ) -> str:
    """The cache file stem of one analysis: name, vectors, corpus (when the analysis reads
    one), layer, emolens version and a hash of the resolved options.

    >>> from emolens.experiments import get
    >>> cache_key(get("geometry"), Context(None, vecs)).startswith("geometry-")
    True
    """
    layer = ctx.vectors.default_layer if ctx.layer is None else ctx.layer
    corpus = (ctx.corpus.fingerprint()[:8] if analysis.needs_corpus and ctx.corpus is not None
              else "none")
    return (f"{analysis.name}-{vectors_key(ctx.vectors)}-{corpus}-{layer}-{__version__}-"
            f"{analysis.options_key(options)}-s{ctx.seed}")


def _selected(chosen: Sequence[str | Analysis] | None) -> list[Analysis]:
    if chosen is None:
        return analyses()
    return [a if isinstance(a, Analysis) else get(a) for a in chosen]


def _progress(items: Sequence[Analysis], enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc="report", unit="section", disable=not enabled, file=sys.stderr,
                leave=False)


def run_sections(ctx: Context, out: str | Path, chosen: Sequence[str | Analysis] | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None, *,
                 progress: bool = False) -> list[dict[str, Any]]:
    """Run (or reuse from ``OUT/cache``) each chosen analysis; returns what the page shows.

    ``options`` maps an analysis name to its options (the rest keep their defaults).
    """
    out = Path(out)
    cache, figdir = out / "cache", out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    options = options or {}
    todo = _selected(chosen)
    entries = []
    bar = _progress(todo, progress)
    for i, analysis in enumerate(bar, 1):
        opts = dict(options.get(analysis.name, {}))
        path = cache / f"{cache_key(analysis, ctx, opts)}.json"
        bar.set_postfix_str(analysis.name)
        if path.is_file():
            entries.append({**json.loads(path.read_text(encoding="utf-8")),
                            "scale": analysis.scale_command()})
            ctx.say(f"[{i}/{len(todo)}] {analysis.title}: cached")
            continue
        ctx.say(f"[{i}/{len(todo)}] {analysis.title} ...")
        started = time.perf_counter()
        entry = {"key": analysis.name, "title": analysis.title, "section": analysis.section,
                 "study": analysis.study, "description": analysis.description,
                 "scale": analysis.scale_command()}
        try:
            result = analysis.execute(ctx, opts)
        except EmolensError as exc:
            ctx.say(f"    {analysis.name} cannot run here: {exc}")
            entries.append({**entry, "summary": f"Not run: {exc}", "data": {}, "figures": [],
                            "error": str(exc), "seconds": 0.0})
            continue
        pngs = save_figures(result, figdir, analysis.name)
        if rows := result.records():  # every graded reply, for an audit beside the page
            entry["records"] = write_jsonl_atomic(
                out / "records" / f"{analysis.name}-records.jsonl", rows).relative_to(
                    out).as_posix()
        entry.update(summary=result.summary(), data=result.to_json(),
                     figures=[p.name for p in pngs],
                     seconds=round(time.perf_counter() - started, 1))
        write_text_atomic(path, json.dumps(entry, default=str))  # never half a cache entry
        ctx.say(f"    done in {entry['seconds']}s")
        entries.append(entry)
    return entries


def _rate_cell(r: Mapping[str, Any] | None) -> str:
    """A rate from a section's JSON as a table cell: value, hits/n and the 95% interval."""
    if not r or r.get("value") is None:
        return "n/a"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    ci = f"; 95% CI {lo:.2f}-{hi:.2f}" if lo is not None and hi is not None else ""
    return f"{r['value']:.2f} ({r['hits']}/{r['n']}{ci})"


def outofstyle_table(data: Mapping[str, Any]) -> str:
    """In-style held-out and out-of-style accuracy side by side, from an ``outofstyle``
    section's numbers (its ``to_json()``), with the sentence that says which is which.

    >>> from emolens.stats import rate
    >>> acc = {"n_texts": 4, "n_emotions": 171, "top1": rate(1, 4), "top3": rate(2, 4),
    ...        "top5": rate(3, 4), "chance_top1": 1 / 171, "chance_top3": 3 / 171,
    ...        "chance_top5": 5 / 171, "core_emotions": ["a", "b"], "core": rate(1, 2),
    ...        "eight_emotions": ["a", "b"], "eight": None}
    >>> from emolens.experiments.registry import jsonable
    >>> t = outofstyle_table(jsonable({"out_of_style": acc, "in_style": acc, "note": "N."}))
    >>> "171-way top-3" in t and "0.50 (2/4; 95% CI" in t and "<p>N.</p>" in t
    True
    """
    esc = html.escape
    out = data.get("out_of_style") or {}
    if not out:
        return ""
    cols = []
    for key, heading, unit in (("in_style", "in-style held-out", "texts"),
                               ("in_style_stories", "in-style, stories only", "stories"),
                               ("out_of_style", "out-of-style", "texts")):
        block = data.get(key)
        if block:
            cols.append((f"{heading} ({block.get('n_texts', 0)} {unit})", block))
    n = out.get("n_emotions", "?")
    core, eight = list(out.get("core_emotions") or ()), list(out.get("eight_emotions") or ())

    def chance(x: Any) -> str:
        if isinstance(x, list):
            return f"{1 / len(x):.3f}" if x else "n/a"
        return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"

    rows = [(f"{n}-way top-1", "top1", chance(out.get("chance_top1"))),
            (f"{n}-way top-3", "top3", chance(out.get("chance_top3"))),
            (f"{n}-way top-5", "top5", chance(out.get("chance_top5"))),
            (f"{len(core)}-way (core emotions)", "core", chance(core)),
            (f"{len(eight)}-way ({', '.join(eight)})", "eight", chance(eight))]
    head = ("<tr><th></th>" + "".join(f"<th>{esc(h)}</th>" for h, _ in cols)
            + "<th>chance</th></tr>")
    body = "".join(
        f"<tr><th>{esc(label)}</th>"
        + "".join(f"<td>{esc(_rate_cell(block.get(key)))}</td>" for _, block in cols)
        + f"<td>{esc(ch)}</td></tr>" for label, key, ch in rows)
    note = f"<p>{esc(str(data['note']))}</p>" if data.get("note") else ""
    return f"{note}<table class='side-by-side'>{head}{body}</table>"


#: Result kind -> the function that renders an HTML table from the section's numbers.
TABLES: dict[str, Callable[[Mapping[str, Any]], str]] = {"outofstyle": outofstyle_table}


def _section_table(entry: Mapping[str, Any]) -> str:
    data = entry.get("data") or {}
    fn = TABLES.get(str(data.get("kind", "")))
    return fn(data) if fn is not None and not entry.get("error") else ""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d2330;line-height:1.5}
h1{margin-bottom:.2em}.meta{color:#5b6475;font-size:.92em}
section{border-top:1px solid #d9dde5;margin-top:2em;padding-top:.5em}
.study{color:#5b6475;font-style:italic}.summary{background:#f5f7fb;padding:.8em 1em;
border-left:4px solid #3d6fd8;white-space:pre-line}.error{border-left-color:#c43d3d}
img{max-width:100%;border:1px solid #e3e6ec;margin:.5em 0}
table{border-collapse:collapse;font-size:.93em}td,th{border:1px solid #d9dde5;padding:.3em .6em;
text-align:left}th{background:#eef1f6}.side-by-side{margin:.5em 0}
details pre{font-size:.8em;overflow:auto;max-height:24em}
"""


def render_html(entries: Sequence[Mapping[str, Any]], header: Mapping[str, Any]) -> str:
    """The page: header, one section per analysis with its summary, figures and numbers.

    >>> page = render_html([{"key": "x", "title": "X", "study": "s", "summary": "1 of 2",
    ...                      "data": {}, "figures": []}], {"model": "tiny"})
    >>> "<section id='x'>" in page
    True
    """
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>"
                   for k, v in header.items())
    toc = "".join(f"<li><a href='#{esc(e['key'])}'>{esc(e['title'])}</a></li>" for e in entries)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>emolens report: {esc(str(header.get('model', '')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Emotion concepts in {esc(str(header.get('model', '')))}</h1>",
        "<p class='meta'>emolens reproduction of the analyses in <em>Emotion concepts and "
        "their function in a large language model</em> (2026). Every rate comes with its n "
        "and a 95% confidence interval; every correlation with n and a p-value.</p>",
        f"<table>{rows}</table><h2>Contents</h2><ol>{toc}</ol>",
    ]
    for e in entries:
        figs = "".join(f"<img src='figures/{esc(f)}' alt='{esc(e['title'])}'>"
                       for f in e["figures"])
        data = esc(json.dumps(e["data"], indent=1, default=str))
        section = f" (study section {esc(e['section'])})" if e.get("section") else ""
        desc = f"<p>{esc(e['description'])}</p>" if e.get("description") else ""
        klass = "summary error" if e.get("error") else "summary"
        records = (f"<p><a href='{esc(e['records'])}'>Every graded reply</a> (JSON lines: "
                   "condition, item, label, text) for an audit.</p>"
                   if e.get("records") else "")
        scale = (f"<details><summary>On a model large enough to show the study's effects "
                 f"(one GPU)</summary><pre>{esc(e['scale'])}</pre></details>"
                 if e.get("scale") else "")
        parts.append(
            f"<section id='{esc(e['key'])}'><h2>{esc(e['title'])}</h2>{desc}"
            f"<p class='study'>Study{section}: {esc(e['study'])}</p>"
            f"<p class='{klass}'>{esc(e['summary'])}</p>{_section_table(e)}{figs}{records}"
            f"{scale}<details><summary>Numbers</summary><pre>{data}</pre></details></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(lm: LanguageModel, vectors: EmotionVectors, out: str | Path, *,
                 corpus: Corpus | None = None, layer: int | float | str | None = None,
                 analyses: Sequence[str | Analysis] | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0,
                 progress: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Run the registry's analyses (all, or ``analyses``) and write ``OUT/index.html``;
    returns its path. The default corpus is loaded only when an analysis needs one and
    ``corpus`` is not given. ``progress`` shows a bar over the sections on stderr; ``log``
    receives each progress line (they also go to this module's logger).
    """
    started = time.perf_counter()
    out = Path(out)
    if layer is not None:
        layer = lm.resolve_layer(layer)  # "0.66" and 20 share one cache entry when equal
    chosen = _selected(analyses)
    if corpus is None and any(a.needs_corpus for a in chosen):
        from emolens.corpus import load_corpus

        corpus = load_corpus("default")
    ctx = Context(lm, vectors, corpus, layer, seed=seed, log=log)
    entries = run_sections(ctx, out, chosen, options, progress=progress)
    info = lm.info()
    shown = vectors.default_layer if layer is None else layer
    header = {
        "model": info["name"], "architecture": f"{info['class']}, {info['n_layers']} layers, "
                                               f"d = {info['hidden_size']}",
        "weights": info["source"], "dtype": info["dtype"],
        "read-out layer": f"{shown} of {info['n_layers']}"
                          + (" (recommended by the vector file)" if layer is None else ""),
        "emotions": len(vectors.emotions),
        "corpus": (f"{corpus.source} ({corpus.fingerprint()[:12]})" if corpus is not None
                   else "none"),
        "emolens": __version__,
        "report time": f"{time.perf_counter() - started:.0f} s (this run; cached sections "
                       "are reused)",
    }
    page = out / "index.html"
    write_text_atomic(page, render_html(entries, header))
    logger.info("report written to %s", page)
    return page
