"""The one registry of analyses: the CLI, the report (and the web app) enumerate it.

An :class:`Analysis` declares what it is (name, title, the study section it reproduces, a
description), what it needs (a model, a corpus) and its options (name, default, help), and
runs as ``analysis.run(ctx, **options) -> Result``. A :class:`Result` holds numbers only:
``summary()`` for people, ``to_json()`` for machines (JSON-safe: every rate carries its n
and interval, every correlation its n and p), and a ``kind`` that
:mod:`emolens.report.figures` uses to pick its figures.

Each analysis module registers itself when imported; :mod:`emolens.experiments` imports the
built-in modules in the report's order. Adding an analysis is one module (plus one line in
that list, and one figure function if it draws):

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Count(Result):
...     kind = "count"
...     n: int
...     def summary(self) -> str:
...         return f"{self.n} emotions"
>>> toy = Analysis("count", "Count the emotions", "-", "How many vectors the file has.",
...                run=lambda ctx, plus=0: Count(len(ctx.vectors) + plus),
...                options=(Option("plus", 0, "added to the count"),), needs_model=False)
>>> _ = register(toy)
>>> get("count").run(Context(None, vecs), plus=1).summary()
'7 emotions'
>>> get("count").run(Context(None, vecs)).to_json()
{'n': 6, 'kind': 'count'}
>>> unregister("count")
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from emolens.errors import EmolensError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.corpus import Corpus
    from emolens.lens import LanguageModel
    from emolens.vectors import EmotionVectors

__all__ = [
    "Analysis",
    "Context",
    "Option",
    "Result",
    "WordingComparison",
    "analyses",
    "get",
    "jsonable",
    "register",
    "unregister",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """Plain JSON types from results: NamedTuples (:class:`~emolens.stats.Rate`,
    :class:`~emolens.stats.Correlation`) and dataclasses become dicts, arrays lists, NaN and
    infinities None.

    >>> from emolens.stats import rate
    >>> jsonable({"r": rate(1, 2), "x": np.array([1.0, np.nan])})["x"]
    [1.0, None]
    >>> sorted(jsonable(rate(1, 2)))
    ['ci_high', 'ci_low', 'hits', 'n', 'value']
    """
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return {k: jsonable(v) for k, v in obj._asdict().items()}
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


class Result:
    """Base of every analysis result: numbers, never figures.

    Subclasses are (usually frozen) dataclasses that set the class attribute ``kind`` and
    implement :meth:`summary`; :meth:`to_json` turns their fields into JSON types (override
    it for a different shape). Rates are :class:`emolens.stats.Rate` (n and Wilson
    interval), correlations :class:`emolens.stats.Correlation` (n, p and interval).
    """

    #: Which figures :mod:`emolens.report.figures` draws for this result.
    kind: ClassVar[str] = "result"

    def summary(self) -> str:
        """A few readable lines: the numbers that matter, with n and intervals."""
        raise NotImplementedError(f"{type(self).__name__} has no summary()")

    def records(self) -> list[dict[str, Any]]:
        """The rows behind the numbers, for an audit (every graded reply of a behavioural
        evaluation); written as ``NAME-records.jsonl`` beside the figures and left out of
        :meth:`to_json`. Most results have none."""
        return []

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (NaN becomes null), with the result's ``kind``."""
        out = jsonable(self)
        if not isinstance(out, dict):
            raise EmolensError(f"{type(self).__name__}.to_json needs a dataclass or an override")
        out.setdefault("kind", self.kind)
        return out


@dataclass(frozen=True, eq=False)
class WordingComparison(Result):
    """One check on two batteries side by side: ``in_project`` (the project's own wording)
    and ``fresh`` (the evaluation set's, written apart). Subclasses set ``kind`` and the
    ``analysis`` default."""

    layer: int
    mode: str
    in_project: Result
    fresh: Result
    analysis: str = ""

    def summary(self) -> str:
        """Both blocks, labelled."""
        return f"{self.in_project.summary()}\n\n{self.fresh.summary()}"

    def to_json(self) -> dict[str, Any]:
        """``in_project`` and ``fresh`` as their own blocks."""
        return {"kind": self.kind, "analysis": self.analysis, "layer": self.layer,
                "mode": self.mode, "in_project": self.in_project.to_json(),
                "fresh": self.fresh.to_json()}

    @classmethod
    def run_both(cls, ctx: Context, mode: str, in_project: Callable[..., Any],
                 fresh: Callable[..., Any]) -> WordingComparison:
        """Run one check on both batteries at the context's layer with read-out ``mode``:
        ``in_project(lm, vectors, layer=, batch_size=, mode=)`` and ``fresh`` alike."""
        from emolens.experiments.common import resolve_layer

        lm = ctx.model()
        layer = resolve_layer(lm, ctx.vectors, ctx.layer)
        kw = dict(layer=layer, batch_size=ctx.batch_size, mode=mode)
        mine = in_project(lm, ctx.vectors, **kw)
        return cls(layer, mine.mode, mine, fresh(lm, ctx.vectors, **kw))


# --------------------------------------------------------------------------------------------
# options and analyses
# --------------------------------------------------------------------------------------------


def _comma_list(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(item(x.strip()) for x in str(text).split(",") if x.strip())

    parse.__name__ = f"list of {getattr(item, '__name__', 'values')}"
    return parse


def _as_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


@dataclass(frozen=True)
class Option:
    """One option of an analysis: a keyword argument of its ``run`` with a default and help.

    ``parse`` turns a command-line string into the value (default: inferred from the
    default's type; a tuple default takes a comma-separated list). ``choices`` limits it.

    >>> Option("strengths", (-0.1, 0.1), "steering strengths").parse("-0.2, 0, 0.2")
    (-0.2, 0.0, 0.2)
    >>> Option("max_new_tokens", 20, "reply length").flag
    '--max-new-tokens'
    """

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise EmolensError(f"option name {self.name!r} is not a Python identifier")
        if self.parse is None:
            object.__setattr__(self, "parse", self._infer())

    def _infer(self) -> Callable[[str], Any]:
        d = self.default
        if isinstance(d, bool):
            return _as_bool
        if isinstance(d, int):
            return int
        if isinstance(d, float):
            return float
        if isinstance(d, (tuple, list)):
            first = d[0] if d else ""
            return _comma_list(float if isinstance(first, float) else
                               int if isinstance(first, int) and not isinstance(first, bool)
                               else str)
        return str

    @property
    def flag(self) -> str:
        """The command-line spelling, e.g. ``--max-new-tokens``."""
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` if allowed (a string is parsed first), else EmolensError."""
        if isinstance(value, str) and not isinstance(self.default, str) and self.parse:
            try:
                value = self.parse(value)
            except ValueError as exc:
                raise EmolensError(f"option {self.flag}: {exc}") from None
        if self.choices is not None and value not in self.choices:
            raise EmolensError(f"option {self.flag} must be one of "
                               f"{', '.join(map(str, self.choices))}, got {value!r}")
        return value


#: The model :meth:`Analysis.scale_command` names: an open 8B chat model, large enough to
#: follow the study's scenarios and small enough for one GPU in bfloat16.
SCALE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Context:
    """What an analysis runs on: the model, the vectors, the corpus, the layer, a seed.

    ``lm`` may be None for analyses that need only the vectors (``needs_model=False``);
    ``corpus`` may be None unless the analysis says ``needs_corpus``. ``layer`` None means
    the vector file's recommended layer. ``log`` receives progress lines (they also go to
    the ``emolens.experiments`` logger).
    """

    lm: LanguageModel | None
    vectors: EmotionVectors
    corpus: Corpus | None = None
    layer: int | float | str | None = None
    seed: int = 0
    batch_size: int = 16
    log: Callable[[str], None] | None = None
    #: What analyses of one run share (pooled read-outs of texts, see ``read_scores``).
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    def say(self, message: str) -> None:
        """Report progress: to the logger, and to ``log`` when one is given."""
        logger.info(message)
        if self.log is not None:
            self.log(message)

    def model(self, who: str = "this analysis") -> LanguageModel:
        """The model, or a clear error when the context has none."""
        if self.lm is None:
            raise EmolensError(f"{who} needs a model")
        return self.lm

    def need_corpus(self, who: str = "this analysis") -> Corpus:
        """The corpus, or a clear error when the context has none."""
        if self.corpus is None:
            raise EmolensError(f"{who} needs a corpus (pass --corpus)")
        return self.corpus


@dataclass(frozen=True)
class Analysis:
    """One analysis of the study.

    ``run(ctx, **options)`` returns a :class:`Result`; call it through :meth:`__call__` (or
    :meth:`execute`) to get the option defaults, checks and the input checks. ``section``
    is the study's section it reproduces (``"5.1"``), ``study`` what the study reported
    (one sentence, shown beside our numbers), ``aliases`` older spellings of the name, and
    ``at_scale`` the options that run it at the study's scale (see :meth:`scale_command`).
    """

    name: str
    title: str
    section: str
    description: str
    run: Callable[..., Result]
    options: tuple[Option, ...] = ()
    needs_model: bool = True
    needs_corpus: bool = False
    study: str = ""
    aliases: tuple[str, ...] = ()
    at_scale: str = ""

    def scale_command(self, model: str = SCALE_MODEL) -> str:
        """The commands that run this analysis on one GPU on ``model`` (by default one large
        enough to follow the study's scenarios), with its ``at_scale`` options: what to run
        where a small model shows no effect.

        >>> print(Analysis("x", "X", "0", "", run=print, at_scale="--n 50").scale_command("M"))
        emolens extract --model M --dtype bfloat16 --out M.emotions.safetensors
        emolens validate x --model M --dtype bfloat16 --vectors M.emotions.safetensors --n 50 \\
            --out results/x
        """
        vectors = f"{model.rsplit('/', 1)[-1]}.emotions.safetensors"
        extra = f" {self.at_scale}" if self.at_scale else ""
        return (f"emolens extract --model {model} --dtype bfloat16 --out {vectors}\n"
                f"emolens validate {self.name} --model {model} --dtype bfloat16 --vectors "
                f"{vectors}{extra} \\\n    --out results/{self.name}")

    def option(self, name: str) -> Option:
        """The option called ``name`` (EmolensError listing the others if there is none)."""
        for o in self.options:
            if o.name == name:
                return o
        have = ", ".join(o.name for o in self.options) or "none"
        raise EmolensError(f"analysis {self.name!r} has no option {name!r} (options: {have})")

    def defaults(self) -> dict[str, Any]:
        """Every option at its default."""
        return {o.name: o.default for o in self.options}

    def resolve(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with ``options`` (checked; unknown names are an error)."""
        out = self.defaults()
        for k, v in (options or {}).items():
            out[k] = self.option(k).check(v)
        return out

    def __call__(self, ctx: Context, **options: Any) -> Result:
        """Run with ``options`` over the defaults, after checking the context has the inputs."""
        return self.execute(ctx, options)

    def execute(self, ctx: Context, options: Mapping[str, Any] | None = None) -> Result:
        """:meth:`__call__` with the options as a mapping."""
        if self.needs_model:
            ctx.model(f"the {self.name} analysis")
        if self.needs_corpus:
            ctx.need_corpus(f"the {self.name} analysis")
        result = self.run(ctx, **self.resolve(options))
        if not isinstance(result, Result):
            raise EmolensError(f"analysis {self.name!r} returned {type(result).__name__}, "
                               "not a Result")
        return result

    def options_key(self, options: Mapping[str, Any] | None = None) -> str:
        """A short hash of the resolved options (part of the report's cache key).

        >>> Analysis("x", "X", "-", "", run=lambda ctx: None).options_key()
        '44136fa3'
        """
        blob = json.dumps(jsonable(self.resolve(options)), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Analysis] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register(analysis: Analysis, *, replace: bool = False) -> Analysis:
    """Add ``analysis`` to the registry (after those already there); returns it.

    Names are compared with ``_`` and ``-`` alike. Registering a taken name raises unless
    ``replace`` (which keeps the old entry's place in the order).
    """
    key = _key(analysis.name)
    taken = {_key(a): n for n, x in _REGISTRY.items() for a in (n, *x.aliases)}
    clash = [k for k in (key, *map(_key, analysis.aliases)) if k in taken and taken[k] != key]
    if (key in _REGISTRY and not replace) or clash:
        raise EmolensError(f"an analysis called {analysis.name!r} is already registered")
    _REGISTRY[key] = analysis
    return analysis


def unregister(name: str) -> None:
    """Remove an analysis (no error if it is not there)."""
    _REGISTRY.pop(_key(name), None)


def get(name: str) -> Analysis:
    """The analysis called ``name`` (or one of its aliases), else EmolensError listing them.

    >>> from emolens.experiments import get
    >>> get("logit_lens").name
    'logit-lens'
    """
    key = _key(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    for a in _REGISTRY.values():
        if key in map(_key, a.aliases):
            return a
    raise EmolensError(f"unknown analysis {name!r}; choose from "
                       + ", ".join(a.name for a in _REGISTRY.values()))


def analyses(names: Sequence[str] | None = None) -> list[Analysis]:
    """Every registered analysis in registration order, or those ``names`` (in that order).

    >>> from emolens.experiments import analyses
    >>> [a.name for a in analyses()][:3]
    ['layers', 'heldout', 'outofstyle']
    """
    if names is None:
        return list(_REGISTRY.values())
    return [get(n) for n in names]
