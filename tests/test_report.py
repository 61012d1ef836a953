"""The HTML report: sections render, figures are written, reruns reuse the cache."""

from __future__ import annotations

import pytest

from emolens.extract import default_vectors
from emolens.report.html import SECTIONS, Section, build_report

pytestmark = pytest.mark.integration


def test_report_renders_and_reuses_cached_sections(default_lm, tmp_path):
    vecs = default_vectors(default_lm)
    chosen = tuple(s for s in SECTIONS if s.key in ("layers", "geometry"))
    page = build_report(default_lm, vecs, tmp_path, sections=chosen, log=lambda m: None)
    html = page.read_text()
    assert "Held-out stories" in html and "k-means with k = 10" in html
    assert "not human norms" in html  # arousal provenance is shown
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert pngs == ["geometry-cosine_matrix.png", "geometry-pca.png", "geometry-rsa.png",
                    "layers-main.png"]

    def boom(_ctx):
        raise AssertionError("a cached section was recomputed")

    again = tuple(Section(s.key, s.title, s.study, boom) for s in chosen)
    assert build_report(default_lm, vecs, tmp_path, sections=again,
                        log=lambda m: None).read_text().count("<section") == 2
