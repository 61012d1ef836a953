"""The statistics of one extraction run as a file, and the exact merge of shards.

An :class:`Extraction` holds a run's sufficient statistics (story, neutral and read-out head
statistics) with what made them: the model's fingerprint, the corpus fingerprint, the token
skip and the shard ``i/n``. :meth:`Extraction.save` writes one self-describing safetensors
file, so :func:`merge_stats` needs no model and refuses shards that are missing, duplicated
or from another run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emolens import fileformat
from emolens.errors import CorpusError, VectorFileError
from emolens.extract.scatter import ScatterStats
from emolens.extract.stats import NORM_BINS_SCHEMA, NeutralStats, StoryStats
from emolens.fileformat import Field, format_layers
from emolens.modelcheck import check_model, describe_model

__all__ = ["SHARD_SCHEMA", "Extraction", "PassStats", "merge_stats", "shard_path"]


@dataclass
class PassStats:
    """What one feature pass did, for progress lines and benchmarks."""

    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    adapted: int = 0  # texts shorter than 4 * token_skip, whose skip was shortened
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        """Real (unpadded) tokens per second of wall time."""
        return self.tokens / self.seconds if self.seconds else 0.0

    def __add__(self, other: PassStats) -> PassStats:
        return PassStats(self.texts + other.texts, self.tokens + other.tokens,
                         self.padded_tokens + other.padded_tokens,
                         self.adapted + other.adapted, self.seconds + other.seconds)


_SHARD_MODEL_FIELDS = {
    "name": Field("str", null=True), "architecture": Field("str", null=True),
    "n_layers": Field("int"), "hidden_size": Field("int"),
    "vocab_size": Field("int", null=True), "config_hash": Field("str", null=True),
}
SHARD_SCHEMA: dict[str, Field] = {
    "labels": Field("list[str]"),
    "layers": Field("layers"),
    "model": Field("object", fields=_SHARD_MODEL_FIELDS),
    "corpus_fingerprint": Field("str"),
    "token_skip": Field("int"),
    "shard": Field("shard", null=True),
    "split": Field("str", null=True),
    "emotions": Field("list[str]", null=True),
    "neutral": Field("object", null=True,
                     fields={"layers": Field("layers"), "n_tokens": Field("int"),
                             "norm_bins": Field("object", required=False,
                                                fields=NORM_BINS_SCHEMA)}),
    "emolens_version": Field("str"),
    "story_pass": Field("object", required=False),
    "scatter": Field("object", null=True, required=False),
    "corpus": Field("object", null=True, required=False),
}
_REEXTRACT = "re-extract it with this emolens (emolens extract --shard i/n)"


def shard_path(path: str | os.PathLike[str]) -> Path:
    """The file a shard prefix stands for: ``PREFIX.shard.safetensors`` (a ``.safetensors``
    path is taken as it is).

    >>> shard_path("runs/part0").name, shard_path("runs/p.safetensors").name
    ('part0.shard.safetensors', 'p.safetensors')
    """
    p = Path(path)
    return p if p.name.endswith(".safetensors") else p.with_name(p.name + ".shard.safetensors")


def _old_format_files(path: str | os.PathLike[str]) -> list[Path]:
    p = Path(path)
    try:
        candidates = [p.with_suffix(".json"), p.with_suffix(".stories.safetensors")]
    except ValueError:  # a path with no name
        return []
    return [c for c in candidates if c.is_file()]


@dataclass
class Extraction:
    """Statistics of one extraction run (a whole corpus or one shard) and what made them.

    ``model`` is the model's fingerprint, ``shard`` ``(i, n)`` for shard ``i`` of ``n``
    (None for a whole corpus), ``split`` and ``emotions`` the corpus selection. A shard is
    saved as one safetensors file, so a crash during the save leaves the old file or the
    new one, never a mix.
    """

    stories: StoryStats
    neutral: NeutralStats | None
    story_pass: PassStats
    token_skip: int
    corpus_fingerprint: str
    model: dict[str, Any] | None = None
    shard: tuple[int, int] | None = None
    split: str | None = "train"
    emotions: tuple[str, ...] | None = None
    emolens_version: str = field(default_factory=fileformat.emolens_version)
    #: The file it was loaded from, for messages.
    source: str | None = None
    #: What the read-out head is fitted from (None: no head).
    scatter: ScatterStats | None = None
    #: The corpus's provenance (``Corpus.provenance``: source, variant, registers), which the
    #: vector file records; the fingerprint alone does not tell a variant from its corpus.
    corpus: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.shard is not None:
            i, n = (int(x) for x in self.shard)
            if not 0 <= i < n:
                raise CorpusError(f"shard {i}/{n} is out of range")
            self.shard = (i, n)
        if self.emotions is not None:
            self.emotions = tuple(self.emotions)

    def describe(self) -> str:
        """How messages name these statistics: their file, or their shard."""
        if self.source:
            return self.source
        return f"shard {self.shard[0]}/{self.shard[1]}" if self.shard else "whole-corpus statistics"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one file, ``PATH.shard.safetensors`` (or ``PATH`` if it ends in
        ``.safetensors``), atomically; return its path.

        The header records the model, corpus fingerprint, token skip, shard ``i/n``, corpus
        selection and emolens version, so :func:`merge_stats` can check shards without the
        model.
        """
        if self.model is None:
            raise VectorFileError("cannot save statistics that do not record their model")
        header: dict[str, Any] = {
            **self.stories.header(),
            "model": self.model,
            "corpus_fingerprint": self.corpus_fingerprint,
            "token_skip": int(self.token_skip),
            "shard": list(self.shard) if self.shard else None,
            "split": self.split,
            "emotions": list(self.emotions) if self.emotions is not None else None,
            "neutral": self.neutral.header() if self.neutral is not None else None,
            "emolens_version": self.emolens_version,
            "story_pass": {"texts": self.story_pass.texts, "tokens": self.story_pass.tokens,
                           "padded_tokens": self.story_pass.padded_tokens,
                           "adapted": self.story_pass.adapted,
                           "seconds": round(self.story_pass.seconds, 3)},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "scatter": self.scatter.header() if self.scatter is not None else None,
            "corpus": self.corpus,
        }
        tensors = self.stories.tensors("stories.")
        if self.scatter is not None:
            tensors.update(self.scatter.tensors("scatter."))
        if self.neutral is not None:
            if self.neutral.layers != self.stories.layers:
                raise VectorFileError("story and neutral statistics cover different layers")
            tensors.update(self.neutral.tensors("neutral."))
        return fileformat.write(shard_path(path), fileformat.KIND_SHARD, header, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Extraction:
        """Read a shard written by :meth:`save` (a prefix or the file itself).

        Shards of older emolens versions, which do not record their model, corpus and
        place, are refused with a line saying to re-extract them.

        >>> import tempfile, pathlib
        >>> s = StoryStats.empty(["calm", "sad"], [1], d=lm.hidden_size)
        >>> run = Extraction(s, None, PassStats(), 0, "toy", model=lm.fingerprint(),
        ...                  shard=(0, 2))
        >>> p = run.save(pathlib.Path(tempfile.mkdtemp()) / "part0")
        >>> back = Extraction.load(p)
        >>> p.name, back.shard, back.model == lm.fingerprint()
        ('part0.shard.safetensors', (0, 2), True)
        """
        target = shard_path(path)
        if not target.exists():
            old = _old_format_files(path)
            if old:
                raise VectorFileError(f"{path} is a shard written by an older emolens, without "
                                      f"the model, corpus and shard it belongs to; {_REEXTRACT}")
            raise VectorFileError(f"extraction shard file not found: {target}")
        header, tensors = fileformat.read_raw(target, "extraction shard")
        if header.get("kind") in (fileformat.KIND_STORY, fileformat.KIND_NEUTRAL):
            raise VectorFileError(f"{target} holds only part of an older shard; {_REEXTRACT}")
        fileformat.check_kind(header, fileformat.KIND_SHARD, target, _REEXTRACT)
        fileformat.validate(header, SHARD_SCHEMA, target, _REEXTRACT)
        stories = StoryStats.from_file_parts(header, tensors, target, "stories.")
        neutral = None
        if header["neutral"] is not None:
            neutral = NeutralStats.from_file_parts(header["neutral"], tensors, target,
                                                   "neutral.")
            if neutral.layers != stories.layers:
                raise VectorFileError(f"{target}: story and neutral statistics cover "
                                      "different layers")
        scatter = None
        if header.get("scatter") is not None:
            scatter = ScatterStats.from_file_parts(header["scatter"], tensors, target,
                                                   "scatter.")
        raw_pass = header.get("story_pass") or {}
        try:
            story_pass = PassStats(**{k: raw_pass[k] for k in
                                      ("texts", "tokens", "padded_tokens", "adapted", "seconds")
                                      if k in raw_pass})
        except TypeError:  # pragma: no cover - only informative
            story_pass = PassStats()
        shard = tuple(header["shard"]) if header["shard"] is not None else None
        return cls(stories, neutral, story_pass, header["token_skip"],
                   header["corpus_fingerprint"], model=header["model"], shard=shard,
                   split=header["split"], emotions=header["emotions"],
                   emolens_version=header["emolens_version"], source=str(target),
                   scatter=scatter, corpus=header.get("corpus"))



def _differences(a: Extraction, b: Extraction) -> list[str]:
    out = []
    if (a.model is None) != (b.model is None):
        out.append("model (one does not record it)")
    elif a.model is not None:
        try:
            check_model(a.model, b.model)
        except VectorFileError:
            out.append(f"model ({describe_model(a.model)} vs {describe_model(b.model)})")
    if a.corpus_fingerprint != b.corpus_fingerprint:
        out.append(f"corpus ({a.corpus_fingerprint[:12]} vs {b.corpus_fingerprint[:12]})")
    va, vb = ((x.corpus or {}).get("corpus_variant") for x in (a, b))
    if va != vb:
        out.append(f"corpus variant ({va or 'plain'} vs {vb or 'plain'})")
    if a.token_skip != b.token_skip:
        out.append(f"token skip ({a.token_skip} vs {b.token_skip})")
    if a.stories.layers != b.stories.layers:
        out.append(f"layers ({format_layers(a.stories.layers)} vs "
                   f"{format_layers(b.stories.layers)})")
    if a.stories.d != b.stories.d:
        out.append(f"width ({a.stories.d} vs {b.stories.d})")
    if (a.split, a.emotions, a.stories.labels) != (b.split, b.emotions, b.stories.labels):
        out.append("corpus selection (split or emotions)")
    if (a.neutral is None) != (b.neutral is None):
        out.append("neutral statistics (one has none)")
    if (a.scatter is None) != (b.scatter is None) or (
            a.scatter is not None and b.scatter is not None
            and a.scatter.layers != b.scatter.layers):
        out.append("read-out head statistics (layers or presence)")
    return out


def merge_stats(parts: Sequence[Extraction]) -> Extraction:
    """Exact merge of the shards ``0/n .. n-1/n`` of one run into whole-corpus statistics.

    Refused with one VectorFileError line: shards of another model, corpus, token skip,
    layer set or corpus selection; a shard given twice; a missing shard; a whole-corpus
    extraction mixed with shards. The order of ``parts`` does not matter.
    """
    if not parts:
        raise CorpusError("nothing to merge")
    first = parts[0]
    for p in parts[1:]:
        diffs = _differences(first, p)
        if diffs:
            raise VectorFileError(f"cannot merge {p.describe()} with {first.describe()}: "
                                  f"different {'; '.join(diffs)}")
    whole = [p for p in parts if p.shard is None]
    if whole:
        if len(parts) == 1:
            return parts[0]
        raise VectorFileError(f"cannot merge {whole[0].describe()}: it covers the whole "
                              "corpus, not one shard")
    counts = sorted({p.shard[1] for p in parts})  # type: ignore[index]
    if len(counts) > 1:
        places = ", ".join(f"{p.describe()} is {p.shard[0]}/{p.shard[1]}"  # type: ignore[index]
                           for p in parts)
        raise VectorFileError(f"shards of different splittings cannot merge: {places}")
    n = counts[0]
    by_index: dict[int, Extraction] = {}
    for p in parts:
        i = p.shard[0]  # type: ignore[index]
        if i in by_index:
            raise VectorFileError(f"shard {i}/{n} is given twice ({by_index[i].describe()} and "
                                  f"{p.describe()})")
        by_index[i] = p
    missing = [i for i in range(n) if i not in by_index]
    if missing:
        got = ", ".join(f"{i}/{n}" for i in sorted(by_index))
        plural = "s" if len(missing) > 1 else ""
        verb = "are" if len(missing) > 1 else "is"
        raise VectorFileError(f"shard{plural} {', '.join(f'{i}/{n}' for i in missing)} {verb} "
                              f"missing (got {len(parts)} of {n} shards: {got})")
    ordered = [by_index[i] for i in range(n)]  # a fixed order: the same sums on every rerun
    stories, neutral, cost = ordered[0].stories, ordered[0].neutral, ordered[0].story_pass
    scatter = ordered[0].scatter
    for p in ordered[1:]:
        stories = stories.merge(p.stories)
        if scatter is not None and p.scatter is not None:
            scatter = scatter.merge(p.scatter)
        if neutral is not None and p.neutral is not None:
            neutral = neutral.merge(p.neutral)
        cost = cost + p.story_pass
    return Extraction(stories, neutral, cost, first.token_skip, first.corpus_fingerprint,
                      model=first.model, shard=None, split=first.split, emotions=first.emotions,
                      scatter=scatter, corpus=first.corpus)
