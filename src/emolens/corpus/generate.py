"""Resumable corpus generation: a model writes its own stories and dialogues.

Output is append-only JSONL (:func:`emolens.fileio.append_lines`), keyed by record id, so a
rerun of the same call after a kill skips what is already written and finishes the job.

The settings of the run are recorded beside the texts (``stories.settings.json`` next to
``stories.jsonl``): the model, the prompt version, the seed and the sampling settings must be
the same when a run resumes, and a rerun that differs in any of them is refused with a line
naming each difference, so one file never mixes texts sampled two ways. The work list
(emotions, topics, texts per topic) and the batch size may change between runs (to add
emotions, or to go on with a smaller batch after running out of memory): every record names
its own emotion and topic, and the settings file keeps the latest run's values.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from emolens.concepts.emotions import EMOTIONS
from emolens.concepts.topics import TOPICS, is_held_out_topic
from emolens.corpus.io import read_records
from emolens.corpus.records import KIND_FILES, Record, parse_dialogue, render_turns
from emolens.corpus.textcheck import (
    NearDupIndex,
    clean_generated_text,
    dup_group,
    own_emotions,
    quality_flags,
)
from emolens.errors import CorpusError
from emolens.fileio import append_lines, ensure_dir, repair_torn_tail, write_text_atomic

__all__ = ["CHECKED_SETTINGS", "GenerationSummary", "TextGenerator", "check_generation_args",
           "generate_corpus", "settings_path"]

#: What a resumed run must share with the run that began the file.
CHECKED_SETTINGS = ("kind", "author", "model", "prompt_version", "seed", "temperature",
                    "top_p", "max_new_tokens")
#: The ``format`` of a settings file (and its layout version).
SETTINGS_FORMAT, SETTINGS_VERSION = "emolens-corpus-settings", 1

logger = logging.getLogger(__name__)

_KIND_ALIASES = {
    "story": "story", "stories": "story",
    "neutral": "neutral", "neutrals": "neutral",
    "dialogue": "dialogue", "dialogues": "dialogue",
}


class _Generation(Protocol):
    text: str
    n_tokens: int
    finished: bool


class TextGenerator(Protocol):
    """What :func:`generate_corpus` needs from a model (``emolens.lens.LanguageModel``)."""

    name: str

    def generate_text(
        self,
        messages_batch: list[list[dict[str, str]]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> Sequence[_Generation]: ...


@dataclass
class GenerationSummary:
    """What one :func:`generate_corpus` call did."""

    path: str
    kind: str
    total: int  # work items requested
    skipped: int  # already in the output file
    generated: int  # written by this call
    flagged: dict[str, int]  # flag -> count among the records written by this call
    n_flagged: int  # records written by this call with at least one flag
    n_batches: int
    n_tokens: int  # tokens the model generated in this call
    elapsed_s: float


@dataclass(frozen=True)
class _Item:
    id: str
    kind: str
    prompt: str
    emotion: str | None = None
    topic: int | None = None
    user_emotion: str | None = None
    assistant_emotion: str | None = None
    person: str | None = None
    category: str | None = None


def _resolve_ids(topics: int | Sequence[int] | None, n_all: int, what: str) -> list[int]:
    if topics is None:
        return list(range(n_all))
    if isinstance(topics, int) and not isinstance(topics, bool):
        if not 1 <= topics <= n_all:
            raise CorpusError(f"the number of {what}s must be in 1..{n_all}, got {topics}")
        return list(range(topics))
    ids = list(topics)
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_all:
            raise CorpusError(f"{what} id {t!r} out of range 0..{n_all - 1}")
    if len(set(ids)) != len(ids):
        raise CorpusError(f"duplicate {what} ids in {ids}")
    return ids


def _resolve_emotions(emotions: Iterable[str] | None) -> list[str]:
    if emotions is None:
        return list(EMOTIONS)
    out = list(emotions)
    unknown = [e for e in out if e not in EMOTIONS]
    if unknown:
        raise CorpusError(f"unknown emotion(s): {', '.join(unknown)}")
    if not out:
        raise CorpusError("no emotions given")
    if len(set(out)) != len(out):
        raise CorpusError("duplicate emotions given")
    return out


def _work_items(
    kind: str, emotions: list[str], topics: int | Sequence[int] | None, per_topic: int, seed: int
) -> list[_Item]:
    """All work items in generation order: k-major, then topic, then emotion.

    That order keeps a partial corpus balanced across emotions and topics.
    """
    from emolens import concepts as c

    items: list[_Item] = []
    if kind == "story":
        tids = _resolve_ids(topics, len(TOPICS), "topic")
        for k in range(per_topic):
            for t in tids:
                for e in emotions:
                    # Alternate by topic and k, so one story per topic still mixes both.
                    person = "first" if (t + k) % 2 == 0 else "third"
                    items.append(_Item(
                        id=f"story/{e}/t{t:03d}/{k}", kind=kind, emotion=e, topic=t,
                        person=person, prompt=c.story_prompt(e, TOPICS[t], person),
                    ))
    elif kind == "neutral":
        hints = list(c.NEUTRAL_TOPIC_HINTS)
        hids = _resolve_ids(topics, len(hints), "neutral topic hint")
        for k in range(per_topic):
            for h in hids:
                items.append(_Item(
                    id=f"neutral/h{h:03d}/{k}", kind=kind, category=hints[h],
                    prompt=c.neutral_prompt(hints[h]),
                ))
    else:
        tids = _resolve_ids(topics, len(TOPICS), "topic")
        for k in range(per_topic):
            for t in tids:
                for e in emotions:
                    # Assistant emotion drawn independently of the user's, as in the study,
                    # but from a key-seeded RNG so a rerun reproduces the same pairs.
                    rng = random.Random(f"{seed}|{e}|{t}|{k}")
                    a = emotions[rng.randrange(len(emotions))]
                    items.append(_Item(
                        id=f"dialogue/{e}/t{t:03d}/{k}", kind=kind, topic=t,
                        user_emotion=e, assistant_emotion=a,
                        prompt=c.dialogue_prompt(e, a, TOPICS[t]),
                    ))
    return items


def _batch_seed(seed: int, first_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(first_id.encode("utf-8"))) % (2**31 - 1)


def settings_path(corpus_file: str | os.PathLike[str]) -> Path:
    """Where the settings of a generated corpus file are kept.

    >>> settings_path("runs/corpus/stories.jsonl").name
    'stories.settings.json'
    """
    p = Path(corpus_file)
    return p.with_name(p.name.removesuffix(".jsonl") + ".settings.json")


def _check_arguments(per_topic: int, batch_size: int, seed: int, temperature: float,
                     top_p: float, max_new_tokens: int) -> None:
    def whole(name: str, value: Any, least: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise CorpusError(f"{name} must be a whole number >= {least}, got {value!r}")

    whole("per_topic", per_topic, 1)
    whole("batch_size", batch_size, 1)
    whole("max_new_tokens", max_new_tokens, 1)
    whole("seed", seed, 0)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature >= 0):
        raise CorpusError(f"temperature must be a finite number >= 0 (0 is greedy), got "
                          f"{temperature!r}")
    if not (isinstance(top_p, (int, float)) and math.isfinite(top_p) and 0 < top_p <= 1):
        raise CorpusError(f"top_p must be a number in (0, 1], got {top_p!r}")


def _model_identity(lm: Any) -> dict[str, Any] | None:
    """The model's fingerprint (name, architecture, sizes, config hash), when it has one."""
    fingerprint = getattr(lm, "fingerprint", None)
    if not callable(fingerprint):
        return None
    try:
        value = fingerprint()
    except Exception:  # noqa: BLE001 - a stand-in model without a config: no identity
        return None
    return json.loads(json.dumps(value, default=str)) if isinstance(value, dict) else None


def _shown(key: str, value: Any) -> str:
    if key == "model" and isinstance(value, dict):
        return f"{value.get('name')} (config {value.get('config_hash')})"
    return repr(value)


def _check_corpus_file(path: Path) -> None:
    """The corpus file must be a regular file (or not exist yet): never a link or a folder."""
    if path.is_symlink():
        what = "a symbolic link"
    elif path.is_dir():
        what = "a directory"
    elif path.exists() and not path.is_file():
        what = "a device, pipe or socket"
    else:
        return
    raise CorpusError(f"refusing to write {path}: it is {what}, not a regular file")


def _read_settings(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CorpusError(f"{path}: cannot read the corpus settings ({exc}); restore the file "
                          "or write to another output directory") from None
    if not isinstance(data, dict) or data.get("format") != SETTINGS_FORMAT:
        raise CorpusError(f"{path} is not an emolens corpus settings file")
    return data


def _check_resume(path: Path, recorded: dict[str, Any] | None, existing: list[Record],
                  settings: dict[str, Any]) -> None:
    """Refuse a run whose checked settings differ from the file's, naming each difference
    (only those of :data:`CHECKED_SETTINGS` that ``settings`` holds)."""
    differ = []
    if recorded is not None:
        for key in CHECKED_SETTINGS:
            if key in recorded and key in settings and recorded[key] != settings[key] \
                    and not (key == "model" and recorded[key] is None):
                differ.append(f"{key} {_shown(key, recorded[key])} there, "
                              f"{_shown(key, settings[key])} now")
    else:  # a file from before settings were recorded: its records carry what they can
        sampling = {k: settings[k] for k in ("temperature", "top_p", "max_new_tokens")}
        for r in existing:
            mine = {k: settings[k] for k in ("author", "prompt_version") if k in settings}
            theirs = {"author": r.author, "prompt_version": r.prompt_version}
            for key in mine:
                if theirs[key] != mine[key]:
                    differ.append(f"{key} {theirs[key]!r} there, {mine[key]!r} now")
            for key, value in (r.sampling or {}).items():
                if key in sampling and value != sampling[key]:
                    differ.append(f"{key} {value!r} there, {sampling[key]!r} now")
            if differ:
                break
    if differ:
        where = settings_path(path).name if recorded is not None else "its records"
        raise CorpusError(
            f"{path} was written with other settings ({where}): {'; '.join(differ)}. "
            "Rerun with the same settings to resume, or write to another output directory")


def check_generation_args(*, kind: str = "stories", emotions: Iterable[str] | None = None,
                          topics: int | Sequence[int] | None = None, per_topic: int = 1,
                          batch_size: int = 8, seed: int = 0, temperature: float = 0.8,
                          top_p: float = 0.95, max_new_tokens: int = 220,
                          out_dir: str | os.PathLike[str] | None = None) -> int:
    """Check the arguments of :func:`generate_corpus` without a model (the CLI calls it
    before loading one); returns the number of texts they ask for. With ``out_dir``, a run
    that would resume a file written with another seed or other sampling settings is
    refused here too (the model itself is compared once it is loaded).

    >>> check_generation_args(emotions=["calm", "afraid"], topics=3)
    6
    >>> check_generation_args(topics=500)
    Traceback (most recent call last):
    ...
    emolens.errors.CorpusError: the number of topics must be in 1..100, got 500
    """
    kind_n = _KIND_ALIASES.get(kind)
    if kind_n is None:
        raise CorpusError(f"kind must be stories, neutral or dialogues, got {kind!r}")
    _check_arguments(per_topic, batch_size, seed, temperature, top_p, max_new_tokens)
    n = len(_work_items(kind_n, _resolve_emotions(emotions), topics, per_topic, seed))
    if out_dir is not None:
        import emolens.concepts as c

        path = Path(out_dir) / KIND_FILES[kind_n]
        _check_corpus_file(path)
        if path.is_file():
            settings = {"kind": kind_n, "prompt_version": str(c.PROMPT_VERSION),
                        "seed": int(seed), "temperature": float(temperature),
                        "top_p": float(top_p), "max_new_tokens": int(max_new_tokens)}
            _check_resume(path, _read_settings(settings_path(path)), read_records(path),
                          settings)
    return n


def _make_record(
    item: _Item, raw: str, finished: bool, author: str, prompt_version: str, seed: int,
    sampling: dict[str, Any],
) -> Record:
    cleaned = clean_generated_text(raw)
    turns = None
    text = cleaned
    if item.kind in ("neutral", "dialogue"):
        turns = parse_dialogue(cleaned, keep_system=item.kind == "neutral")
        if turns:
            text = render_turns(turns)
    rec = Record(
        id=item.id, kind=item.kind, text=text, emotion=item.emotion, topic=item.topic,
        turns=turns or None, user_emotion=item.user_emotion,
        assistant_emotion=item.assistant_emotion,
        split="heldout" if item.topic is not None and is_held_out_topic(item.topic) else "train",
        author=author, prompt_version=prompt_version, seed=seed, sampling=dict(sampling),
        person=item.person, category=item.category,
    )
    rec.flags = quality_flags(text, own_emotions(rec), kind=rec.kind, finished=finished,
                              turns=turns)
    return rec


def generate_corpus(
    lm: TextGenerator,
    out_dir: str | os.PathLike[str],
    *,
    kind: str = "stories",
    emotions: Iterable[str] | None = None,
    topics: int | Sequence[int] | None = None,
    per_topic: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 220,
    progress: bool = True,
) -> GenerationSummary:
    """Let ``lm`` write a corpus into ``out_dir``, append-only and resumable.

    Work items are keyed by record id (kind, emotion, topic, k); items already in the output
    file are skipped, so rerunning the same call after a kill finishes the job. Each batch is
    appended and fsynced; a torn final line is truncated before appending. Every record keeps
    its flags (``names_emotion``, ``empty``, ``truncated``, ``near_duplicate``, and
    ``malformed`` for dialogues without both speakers).

    ``topics`` is a count (the first N topic ids) or a list of ids; for ``kind="neutral"`` it
    indexes ``concepts.NEUTRAL_TOPIC_HINTS`` and ``emotions`` is ignored.

    >>> class Echo:
    ...     name = "echo"
    ...     def generate_text(self, batch, **kw):
    ...         from types import SimpleNamespace as S
    ...         return [S(text="The kettle clicked off and she poured two cups, humming, "
    ...                        "while the rain kept on.", n_tokens=20, finished=True)
    ...                 for _ in batch]
    >>> import tempfile
    >>> s = generate_corpus(Echo(), tempfile.mkdtemp(), emotions=["calm"], topics=2,
    ...                     progress=False)
    >>> s.generated, s.flagged
    (2, {'near_duplicate': 1})
    """
    from emolens import concepts as c

    kind_n = _KIND_ALIASES.get(kind)
    if kind_n is None:
        raise CorpusError(f"kind must be stories, neutral or dialogues, got {kind!r}")
    _check_arguments(per_topic, batch_size, seed, temperature, top_p, max_new_tokens)
    emo = _resolve_emotions(emotions)
    items = _work_items(kind_n, emo, topics, per_topic, seed)  # bad topics fail here
    author = str(getattr(lm, "name", "") or type(lm).__name__)
    prompt_version = str(c.PROMPT_VERSION)
    sampling = {"temperature": float(temperature), "top_p": float(top_p),
                "max_new_tokens": int(max_new_tokens)}
    settings: dict[str, Any] = {
        "format": SETTINGS_FORMAT, "version": SETTINGS_VERSION, "kind": kind_n,
        "author": author, "model": _model_identity(lm), "prompt_version": prompt_version,
        "seed": int(seed), **sampling, "batch_size": int(batch_size),
        "emotions": None if emotions is None or kind_n == "neutral" else emo,
        "topics": topics if topics is None or isinstance(topics, int) else list(topics),
        "per_topic": int(per_topic),
    }

    # Everything is checked before anything is written: a refused run changes no file.
    path = Path(out_dir) / KIND_FILES[kind_n]
    if path.parent.exists() and not path.parent.is_dir():
        ensure_dir(path.parent)  # raises the one-line error
    _check_corpus_file(path)
    existing = read_records(path) if path.exists() else []
    _check_resume(path, _read_settings(settings_path(path)), existing, settings)
    ensure_dir(path.parent)
    repair_torn_tail(path)  # a torn last line goes; a complete one only lacking "\n" stays
    write_text_atomic(settings_path(path), json.dumps(settings, indent=1) + "\n")
    done = {r.id for r in existing}
    index = NearDupIndex()
    for r in existing:
        index.add(dup_group(r), r.text)

    todo = [it for it in items if it.id not in done]
    logger.info("%s: %d of %d %s texts to write (%d already there)", path, len(todo),
                len(items), kind_n, len(items) - len(todo))
    flagged: Counter[str] = Counter()
    n_flagged = n_tokens = n_batches = generated = 0
    t0 = time.perf_counter()
    bar = _progress_bar(len(todo), progress, desc=f"corpus {kind_n}")
    try:
        for b in range(0, len(todo), batch_size):
            batch = todo[b:b + batch_size]
            bseed = _batch_seed(seed, batch[0].id)
            outs = lm.generate_text(
                [[{"role": "user", "content": it.prompt}] for it in batch],
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                seed=bseed,
            )
            outs = list(outs)
            if len(outs) != len(batch):
                raise CorpusError(f"model returned {len(outs)} texts for a batch of {len(batch)}")
            recs = []
            for it, o in zip(batch, outs, strict=True):
                rec = _make_record(it, o.text, bool(o.finished), author, prompt_version, bseed,
                                   sampling)
                if index.is_near_duplicate(dup_group(rec), rec.text):
                    rec.flags.append("near_duplicate")
                flagged.update(rec.flags)
                n_flagged += bool(rec.flags)
                n_tokens += int(o.n_tokens)
                recs.append(rec)
            # One write per batch, then fsync: a kill loses at most this batch.
            append_lines(path, [r.to_json() for r in recs])
            generated += len(recs)
            n_batches += 1
            if bar is not None:
                bar.update(len(recs))
                bar.set_postfix(flagged=n_flagged, refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return GenerationSummary(
        path=str(path), kind=kind_n, total=len(items), skipped=len(items) - len(todo),
        generated=generated, flagged=dict(flagged), n_batches=n_batches, n_tokens=n_tokens,
        n_flagged=n_flagged, elapsed_s=time.perf_counter() - t0,
    )


def _progress_bar(total: int, enabled: bool, desc: str) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, dynamic_ncols=True)
