"""The HTML report on the default model: sections render, figures are written, reruns reuse
the cache (the tiny-model checks of the same path are in test_registry.py)."""

from __future__ import annotations

import dataclasses

import pytest

from emolens.experiments import get
from emolens.extract import default_vectors
from emolens.report.html import build_report

pytestmark = pytest.mark.integration


def test_report_renders_and_reuses_cached_sections(default_lm, tmp_path):
    vecs = default_vectors(default_lm)
    chosen = [get("layers"), get("geometry")]
    page = build_report(default_lm, vecs, tmp_path, analyses=chosen, log=lambda m: None)
    html = page.read_text()
    assert "Held-out stories" in html and "k-means with k = 10" in html
    assert "not human norms" in html  # arousal provenance is shown
    assert "study section 6" in html
    pngs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert pngs == ["geometry-cosine_matrix.png", "geometry-pca.png", "geometry-rsa.png",
                    "layers-main.png"]

    def boom(_ctx, **_options):
        raise AssertionError("a cached section was recomputed")

    again = [dataclasses.replace(a, run=boom) for a in chosen]
    assert build_report(default_lm, vecs, tmp_path, analyses=again,
                        log=lambda m: None).read_text().count("<section") == 2
