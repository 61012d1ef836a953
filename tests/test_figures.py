"""Every report figure renders on small constructed data into a valid PNG of sensible size,
with labelled axes and a title that says n."""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from emolens.concepts import CORE_EMOTIONS, EMOTIONS
from emolens.errors import EmolensError
from emolens.experiments.geometry import cluster_order, cosine_matrix, pca
from emolens.report import plots as F

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    pixels = mpimg.imread(path)  # decodes the whole image: a truncated file would fail here
    assert pixels.shape[:2] == (height, width)
    assert float(pixels[..., :3].std()) > 0.01  # not a blank canvas
    return width, height


def _save(fig, tmp_path: Path, name: str) -> tuple[int, int]:
    out = F.save_png(fig, tmp_path / "figs" / f"{name}.png")
    assert out == tmp_path / "figs" / f"{name}.png" and out.is_file()
    return _png_size(out)


def _title(fig) -> str:
    return fig.axes[0].get_title()


def _small_matrix(E=12, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(E, d))


def test_cosine_matrix_full_size_is_legible(tmp_path):
    M = _small_matrix(171, 16)
    C = cosine_matrix(M)
    fig = F.fig_cosine_matrix(C, list(EMOTIONS), cluster_order(M))
    ax = fig.axes[0]
    assert "171 emotion vectors" in _title(fig) and "clustering" in _title(fig)
    assert ax.get_xlabel() == "emotion" and ax.get_ylabel() == "emotion"
    labels = ax.get_yticklabels()
    assert len(labels) == 171 and labels[0].get_fontsize() == 6.0
    # 171 rows at 6 pt need about 171 * 7.2 pt = 17 in of axis: the figure must be that tall
    assert fig.get_size_inches()[1] >= 17
    im = ax.images[0]
    assert im.norm.vmin == pytest.approx(-im.norm.vmax)  # diverging scale centred at 0
    w, h = _save(fig, tmp_path, "cosine")
    assert h >= 1800 and w >= 1800


def test_cosine_matrix_rejects_bad_order():
    C = cosine_matrix(_small_matrix(4))
    with pytest.raises(EmolensError):
        F.fig_cosine_matrix(C, list("abcd"), [0, 1, 1, 2])


def test_pca_figure(tmp_path):
    names = list(EMOTIONS[:30])
    p = pca(_small_matrix(30, 8), 3, emotions=names)
    valence = {n: float(i) - 15 for i, n in enumerate(names) if i % 3}  # a third unrated
    fig = F.fig_pca(p.scores, names, p.explained_variance_ratio, valence=valence)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 (") and "% of variance" in ax.get_ylabel()
    assert "30 emotion vectors" in _title(fig) and "20 of 30 rated" in _title(fig)
    assert len(fig.axes) == 2  # the valence colour bar
    texts = {t.get_text() for t in ax.texts}
    assert {"afraid", "angry", "calm"} <= texts and len(texts) < 30  # core + extremes only
    w, h = _save(fig, tmp_path, "pca")
    assert 600 < w < 2000 and 500 < h < 2000
    plain = F.fig_pca(p.scores, names, p.explained_variance_ratio, annotate=["afraid"])
    assert [t.get_text() for t in plain.axes[0].texts] == ["afraid"]
    _save(plain, tmp_path, "pca_plain")


def test_confusion_figure(tmp_path):
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(5, 10, 12)) + rng.integers(0, 2, (12, 12))
    fig = F.fig_confusion(cm, list(CORE_EMOTIONS))
    n = int(cm.sum())
    assert f"n = {n}" in _title(fig) and f"accuracy {np.trace(cm) / n:.2f}" in _title(fig)
    assert fig.axes[0].get_ylabel() == "true emotion"
    assert len(fig.axes[0].texts) == int((cm > 0).sum())  # counts printed in non-zero cells
    _save(fig, tmp_path, "confusion")


def test_probe_matrix_figure(tmp_path):
    M = np.random.default_rng(1).normal(scale=0.05, size=(12, 12))
    rows = [f"scenario {i}" for i in range(12)]
    fig = F.fig_probe_matrix(M, rows, list(CORE_EMOTIONS), "Implicit scenarios")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "probe (n = 12)" and ax.get_ylabel() == "scenario (n = 12)"
    assert len(ax.texts) == 144 and ax.texts[0].get_text() == f"{M[0, 0]:.2f}"
    assert len(ax.patches) == 12  # each row's maximum outlined
    _save(fig, tmp_path, "probe")
    with pytest.raises(EmolensError):
        F.fig_probe_matrix(M, rows[:5], list(CORE_EMOTIONS), "bad")


def test_line_figures(tmp_path):
    x = [500, 1000, 2000, 4000, 8000, 16000]
    series = {e: np.linspace(0, 1, 6) * (i - 1.5) for i, e in enumerate(["afraid", "calm",
                                                                           "happy", "sad"])}
    fig = F.fig_intensity(x, series, "I took {X} mg", logx=True)
    assert "6 values, 4 emotions" in _title(fig) and fig.axes[0].get_xscale() == "log"
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [str(v) for v in x]
    _save(fig, tmp_path, "intensity")
    with pytest.raises(EmolensError):
        F.fig_intensity([0, 1], {"a": [1, 2]}, "t", logx=True)

    layers = list(range(24))
    fig = F.fig_layer_curve(layers, {"top-1": np.linspace(0, 0.5, 24)}, "Accuracy by layer",
                            "accuracy", mark=16)
    assert "24 layers" in _title(fig) and fig.axes[0].get_ylabel() == "accuracy"
    _save(fig, tmp_path, "layers")
    with pytest.raises(EmolensError):
        F.fig_layer_curve(layers, {"a": [1, 2]}, "t", "y")


def test_bar_ci_figure(tmp_path):
    fig = F.fig_bar_ci(["top-1", "top-5", "12-way"], [0.4, 0.7, -0.1], [0.3, 0.6, -0.3],
                       [0.5, 0.8, 0.1], "Held-out", "accuracy", ns=[171, 171, 120],
                       chance=1 / 171)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][2] == "12-way\n(n = 120)"
    assert "95% CI" in _title(fig) and ax.get_ylabel() == "accuracy"
    _save(fig, tmp_path, "bars")
    with pytest.raises(EmolensError):
        F.fig_bar_ci(["a"], [0.5], [0.6], [0.7], "t", "y")  # interval must contain the mean


def test_rsa_figure(tmp_path):
    layers = list(range(4, 18))
    R = np.corrcoef(np.random.default_rng(2).normal(size=(14, 30)))
    fig = F.fig_rsa(R, layers)
    assert "14 layers" in _title(fig) and fig.axes[0].get_xlabel() == "layer"
    assert len(fig.axes[0].texts) == 14 * 14
    _save(fig, tmp_path, "rsa")


def test_logit_lens_table(tmp_path):
    rows = [("happy", [" excited", "$celeb", "震"], ["\n", " anger"]),
            ("sad", [" grief", " tears"], ["!", " excited"])]
    fig = F.fig_logit_lens(rows)
    assert "2 emotion vectors" in _title(fig)
    texts = [c.get_text().get_text() for c in fig.axes[0].tables[0].get_celld().values()]
    joined = " | ".join(texts)
    assert "excited" in joined and r"\$celeb" in joined  # "$" escaped: no mathtext
    assert "'\\n'" in joined  # a whitespace token is shown as its repr, never blank
    _save(fig, tmp_path, "logit_lens")


def test_text_escapes_missing_glyphs():
    # a private-use code point no font draws becomes a visible escape, not an empty box
    assert F._text("a\ue000b") == "a\\ue000b"
    assert F._text("x$y\tz") == "x\\$y\\tz"


def test_save_png_is_atomic_and_overwrites(tmp_path):
    out = tmp_path / "deep" / "dir" / "fig.png"
    F.save_png(F.fig_layer_curve([0, 1], {"a": [0, 1]}, "t", "y"), out)
    first = out.read_bytes()
    F.save_png(F.fig_layer_curve([0, 1, 2], {"a": [0, 1, 0]}, "t2", "y"), out, dpi=60)
    assert out.read_bytes() != first and out.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig.png"]  # no temp files left
    assert (out.stat().st_mode & 0o777) == 0o644
