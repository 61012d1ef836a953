"""Every bad input to the ``emolens`` command: one error line, exit code 2, nothing written.

The table below runs the CLI in-process over bad options, bad files, bad model folders and
bad output targets across every subcommand. Each case must end with exit code 2 and exactly
one line on stderr, ``emolens: error: ...`` naming the problem, with no traceback, and must
leave every file it could reach as it was: the inputs, the output folder, the working
directory, HOME and every cache (all of them pointed into the test's temp dir), the
package's data folder and the user's real emolens cache.

Beside the table: the context-length check of the one input normaliser, a torn alert log
repaired (library and CLI), and stdin read as bytes with errors naming the line.

Related tests elsewhere (not repeated here):

* pickle-only and custom-code (``auto_map``) model folders refused, with stdin a simulated
  terminal and the folder's code never run: ``tests/test_loading.py``
  (``test_custom_code_folder_*``, ``test_pickle_only_folder_*``, ``test_evil_pickle_*``);
* a kill during a shard save leaves the old file (a shard is one file, replaced by a
  rename, so the old set or the new one): ``tests/test_extract.py``
  (``test_a_failed_shard_save_leaves_the_old_file``); merge refusing missing, duplicated and
  foreign shards: ``test_merge_refuses_missing_duplicated_and_mixed_shards``,
  ``test_merge_refuses_foreign_shards`` (and the CLI rows ``merge-*`` below);
* a complete last corpus record that only lacks its newline is kept, a torn one dropped:
  ``tests/test_corpus.py`` (``test_generation_keeps_a_complete_last_record_*``,
  ``test_generation_resumes_after_kill_and_torn_line``); resuming with other settings:
  ``test_resume_with_other_settings_is_refused_naming_each``;
* symlink, directory and device targets at the library level: ``tests/test_fileio.py``.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import tiny_lm

import emolens
from emolens.cli import build_parser, main
from emolens.corpus import Corpus, Record, generate_corpus
from emolens.errors import EmolensError
from emolens.testing import tiny_vectors

# ---- the world the cases run in -------------------------------------------------------------
W = SimpleNamespace  # the fixture's paths, as attributes


class _FakeWriter:
    """A corpus writer without a model (for a corpus whose settings a case then contradicts)."""

    name = "fake-writer"

    def generate_text(self, batch, **kwargs):  # noqa: ANN001, ANN003, ANN201
        return [SimpleNamespace(text="The kettle clicked off and she poured two cups while "
                                     f"the rain kept on falling number {i}.",
                                n_tokens=12, finished=True) for i, _ in enumerate(batch)]


def _save_vectors_variant(src: Path, dst: Path, header: dict | None = None,
                          tensors: dict | None = None, raw_meta: str | None = None) -> Path:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(src), "np") as f:
        meta = json.loads(f.metadata()["emolens"])
        data = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta.update(header or {})
    data.update(tensors or {})
    save_file(data, str(dst), metadata={"emolens": raw_meta if raw_meta is not None
                                        else json.dumps(meta)})
    return dst


class _Evil:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "the pickle ran"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> W:
    """Inputs of every kind, good and bad, built once in a temp dir."""
    from emolens.extract import collect
    from emolens.loading import load_model

    root = tmp_path_factory.mktemp("bad-inputs")
    inp = root / "in"
    inp.mkdir()
    w = W(root=root, inp=inp, out=root / "out", cwd=root / "cwd", home=root / "home")
    for folder in (w.out, w.cwd, w.home):
        folder.mkdir()
    w.mpl = tmp_path_factory.mktemp("matplotlib")  # its font cache: not ours, not watched

    # a loadable tiny model, its vectors, and vectors for a model of another width
    lm = tiny_lm("llama")
    lm.model.config.max_position_embeddings = 256  # the context the long-text cases exceed
    w.model = str(inp / "model")
    lm.model.save_pretrained(w.model)
    lm.tokenizer.save_pretrained(w.model)
    loaded = load_model(w.model)
    w.vectors = str(tiny_vectors(loaded).save(inp / "vecs.safetensors"))
    w.wide_vectors = str(tiny_vectors(tiny_lm("llama", d=64)).save(inp / "wide.safetensors"))
    src = Path(w.vectors)
    directions = tiny_vectors(loaded).directions.copy()
    nan, zero = directions.copy(), directions.copy()
    nan[0, 1] = np.nan
    zero[1] = 0.0
    w.v = {
        "emotions-number": _save_vectors_variant(src, inp / "v1.safetensors", {"emotions": 5}),
        "model-string": _save_vectors_variant(src, inp / "v2.safetensors", {"model": "llama"}),
        "layer-float": _save_vectors_variant(src, inp / "v3.safetensors",
                                             {"layers": [0, 1.5, 2, 3]}),
        "deep-json": _save_vectors_variant(
            src, inp / "v4.safetensors",
            raw_meta='{"kind": "emotion_vectors", "x": ' + "[" * 3000 + "]" * 3000 + "}"),
        "nan": _save_vectors_variant(src, inp / "v5.safetensors", tensors={"directions": nan}),
        "zero": _save_vectors_variant(src, inp / "v6.safetensors",
                                      tensors={"directions": zero}),
        "not-json": _save_vectors_variant(src, inp / "v7.safetensors", raw_meta="{not json"),
        "shard-kind": _save_vectors_variant(src, inp / "v8.safetensors",
                                            {"kind": "extraction_shard"}),
    }
    (inp / "garbage.safetensors").write_bytes(b"\x00" * 64)
    w.garbage = str(inp / "garbage.safetensors")
    w.pickled = str(inp / "weights.safetensors")
    with open(w.pickled, "wb") as f:
        pickle.dump({"w": 1}, f)

    # model folders that must never load
    w.marker = inp / "code-ran.txt"
    pickled = inp / "pickled-model"
    lm.model.save_pretrained(pickled)
    lm.tokenizer.save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    with open(pickled / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": _Evil(w.marker)}, f)
    w.pickled_model = str(pickled)
    custom = inp / "custom-model"
    lm.model.save_pretrained(custom)
    lm.tokenizer.save_pretrained(custom)
    (custom / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(w.marker)!r}).write_text('the code ran')\n")
    cfg = json.loads((custom / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (custom / "config.json").write_text(json.dumps(cfg))
    w.custom_model = str(custom)
    broken = inp / "broken-config"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", ')
    w.broken_model = str(broken)

    # text inputs
    w.dir = str(inp / "a-folder")
    os.mkdir(w.dir)
    (inp / "a-file.txt").write_text("a regular file\n")
    w.file = str(inp / "a-file.txt")
    os.symlink(w.file, inp / "link-to-file")
    w.link = str(inp / "link-to-file")
    os.symlink(w.out, inp / "link-to-folder")
    w.dir_link = str(inp / "link-to-folder")
    (inp / "latin1.txt").write_bytes(b"first line\nsecond caf\xe9\n")
    w.latin1 = str(inp / "latin1.txt")
    (inp / "latin1.jsonl").write_bytes(b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "caf\xe9"}\n')
    w.latin1_jsonl = str(inp / "latin1.jsonl")
    good = Record(id="story/calm/t000/0", kind="story", emotion="calm", topic=0,
                  text="She poured the tea.").to_json()
    (inp / "latin1-corpus.jsonl").write_bytes(good.encode() + b"\n" + good.encode()[:-2]
                                              + b'\xe9"}\n')
    w.latin1_corpus = str(inp / "latin1-corpus.jsonl")
    (inp / "broken.jsonl").write_text('{"id": 1, "text": "fine"}\n{"id": 2, "text": \n'
                                      '{"id": 3, "text": "fine"}\n')
    w.broken_jsonl = str(inp / "broken.jsonl")
    w.long_text = "The kettle clicked off and the rain went on. " * 60  # about 600 tokens
    (inp / "long.jsonl").write_text(json.dumps({"id": "a", "text": "short"}) + "\n\n"
                                    + json.dumps({"id": "b", "text": w.long_text}) + "\n")
    w.long_jsonl = str(inp / "long.jsonl")
    (inp / "broken-corpus.jsonl").write_text(good + "\n" + good[:30] + "\n" + good + "\n")
    w.broken_corpus = str(inp / "broken-corpus.jsonl")
    (inp / "array.jsonl").write_text('[1, 2]\n')
    w.array_jsonl = str(inp / "array.jsonl")
    (inp / "badrecord.jsonl").write_text('{"id": "s", "kind": "poem", "text": "x"}\n')
    w.bad_record = str(inp / "badrecord.jsonl")
    w.empty_dir = str(inp / "empty-corpus")
    os.mkdir(w.empty_dir)

    # a generated corpus whose settings a rerun contradicts
    w.corpus = str(inp / "corpus")
    generate_corpus(_FakeWriter(), w.corpus, emotions=["calm"], topics=1, progress=False)
    w.corpus_dir_log = str(inp / "corpus-log-is-folder")
    os.makedirs(Path(w.corpus_dir_log) / "stories.jsonl")

    # shards: two halves of one run, one of another model
    corpus = Corpus([Record(id=f"story/{e}/t{k:03d}/0", kind="story", emotion=e, topic=k,
                            text=f"{e} words number {k} go here and there again.")
                     for e in ("calm", "sad") for k in range(4)], "tiny")
    w.shards = [str(collect(lm, corpus, [1, 3], token_skip=2, shard=(i, 2)).save(inp / f"run{i}"))
                for i in range(2)]
    w.foreign_shard = str(collect(tiny_lm("gpt2"), corpus, [1, 3], token_skip=2,
                                  shard=(1, 2)).save(inp / "other"))
    return w


def snapshot(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """(mtime, size, mode) of every entry under ``roots`` (links not followed)."""
    seen: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                seen[os.path.join(dirpath, name)] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return seen


_REAL_CACHE = Path(os.environ.get("EMOLENS_CACHE") or Path.home() / ".cache" / "emolens")
_PACKAGE_DATA = Path(emolens.__file__).parent / "data"


@pytest.fixture
def sandbox(world: W, monkeypatch: pytest.MonkeyPatch) -> W:
    """cwd, HOME and every cache inside the temp dir; offline; no colour."""
    monkeypatch.chdir(world.cwd)
    monkeypatch.setenv("HOME", str(world.home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(world.home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(world.home / ".cache" / "huggingface"))
    monkeypatch.setenv("EMOLENS_CACHE", str(world.home / ".cache" / "emolens"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("MPLCONFIGDIR", str(world.mpl))
    return world


# ---- the table ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: the command line (built from the world), the words the line must hold."""

    id: str
    command: str  # the subcommand, for the count by subcommand
    kind: str  # the class of bad input
    argv: Callable[[W], list[str]]
    expect: str
    stdin: bytes | None = None
    tty: bool = False  # stdin claims to be a terminal (and refuses to be read)


def M(w: W) -> list[str]:  # noqa: N802 - short on purpose: the tiny model
    return ["--model", w.model]


def MV(w: W) -> list[str]:  # noqa: N802 - the tiny model and its vectors
    return ["--model", w.model, "--vectors", w.vectors]


def GEN(w: W, *extra: str) -> list[str]:  # noqa: N802 - corpus generate into a fresh folder
    return ["corpus", "generate", *M(w), "--out", str(w.out / "c"), *extra]


OPTION, OUTPUT, ENCODING, VECTORS, MODEL, FILES, LENGTH, RESUME, SPEC, DEVICE = (
    "option value", "output target", "text encoding", "vector file", "model folder",
    "corpus or shard file", "context length", "resume settings", "steer/alert spec", "device")

CASES = [
    # info: devices and model folders
    Case("info-device-unknown", "info", DEVICE, lambda w: ["info", *M(w), "--device", "gpu"],
         "unknown device 'gpu'"),
    Case("info-device-index", "info", DEVICE, lambda w: ["info", *M(w), "--device", "cuda:99"],
         "cuda:99"),
    Case("info-device-map", "info", DEVICE,
         lambda w: ["info", *M(w), "--device-map", "everywhere"], "unknown device map"),
    Case("info-dtype", "info", OPTION, lambda w: ["info", *M(w), "--dtype", "float8"],
         "invalid choice: 'float8'"),
    Case("info-pickle-folder", "info", MODEL, lambda w: ["info", "--model", w.pickled_model],
         "pickle", tty=True),
    Case("info-custom-code", "info", MODEL, lambda w: ["info", "--model", w.custom_model],
         "--trust-remote-code", tty=True),
    Case("info-no-config", "info", MODEL, lambda w: ["info", "--model", w.dir], "config.json"),
    Case("info-broken-config", "info", MODEL, lambda w: ["info", "--model", w.broken_model],
         "config.json"),
    Case("info-model-is-file", "info", MODEL, lambda w: ["info", "--model", w.file],
         "not a model folder"),
    Case("info-missing-gguf", "info", MODEL, lambda w: ["info", "--model", "/nowhere/m.gguf"],
         "not found"),
    Case("info-offline-hub-id", "info", MODEL,
         lambda w: ["info", "--model", "nobody/not-a-model"], "HF_HUB_OFFLINE"),
    # corpus generate
    Case("corpus-gen-max-new-tokens-0", "corpus generate", OPTION,
         lambda w: GEN(w, "--max-new-tokens", "0"), "--max-new-tokens"),
    Case("corpus-gen-temperature-negative", "corpus generate", OPTION,
         lambda w: GEN(w, "--temperature", "-1"), "--temperature"),
    Case("corpus-gen-temperature-nan", "corpus generate", OPTION,
         lambda w: GEN(w, "--temperature", "nan"), "finite"),
    Case("corpus-gen-top-p-5", "corpus generate", OPTION,
         lambda w: GEN(w, "--top-p", "5"), "--top-p"),
    Case("corpus-gen-top-p-0", "corpus generate", OPTION,
         lambda w: GEN(w, "--top-p", "0"), "> 0"),
    Case("corpus-gen-per-topic-0", "corpus generate", OPTION,
         lambda w: GEN(w, "--per-topic", "0"), "--per-topic"),
    Case("corpus-gen-batch-size-negative", "corpus generate", OPTION,
         lambda w: GEN(w, "--batch-size", "-2"), "--batch-size"),
    Case("corpus-gen-seed-negative", "corpus generate", OPTION,
         lambda w: GEN(w, "--seed", "-1"), "seed"),
    Case("corpus-gen-topics-0", "corpus generate", OPTION,
         lambda w: GEN(w, "--topics", "0"), "--topics"),
    Case("corpus-gen-topics-too-many", "corpus generate", OPTION,
         lambda w: GEN(w, "--topics", "500"), "number of topics must be in 1..100"),
    Case("corpus-gen-emotion-unknown", "corpus generate", OPTION,
         lambda w: GEN(w, "--emotions", "calm,clam"), "unknown emotion 'clam'"),
    Case("corpus-gen-emotion-twice", "corpus generate", OPTION,
         lambda w: GEN(w, "--emotions", "calm,calm"), "given twice"),
    Case("corpus-gen-out-is-file", "corpus generate", OUTPUT,
         lambda w: ["corpus", "generate", *M(w), "--out", w.file], "existing file"),
    Case("corpus-gen-out-parent-missing", "corpus generate", OUTPUT,
         lambda w: ["corpus", "generate", *M(w), "--out", str(w.out / "no" / "c")],
         "does not exist"),
    Case("corpus-gen-out-symlink", "corpus generate", OUTPUT,
         lambda w: ["corpus", "generate", *M(w), "--out", w.dir_link], "symbolic link"),
    Case("corpus-gen-resume-other-settings", "corpus generate", RESUME,
         lambda w: ["corpus", "generate", *M(w), "--out", w.corpus, "--emotions", "calm",
                    "--topics", "1", "--temperature", "0.5", "--seed", "3"],
         "seed 0 there, 3 now; temperature 0.8 there, 0.5 now"),
    Case("corpus-gen-log-is-folder", "corpus generate", FILES,
         lambda w: ["corpus", "generate", *M(w), "--out", w.corpus_dir_log], "a directory"),
    # corpus check / stats
    Case("check-emotion-unknown", "corpus check", OPTION,
         lambda w: ["corpus", "check", "default", "--emotions", "nosuch"],
         "unknown emotion 'nosuch'"),
    Case("check-min-negative", "corpus check", OPTION,
         lambda w: ["corpus", "check", "default", "--min-per-emotion", "-1"], ">= 0"),
    Case("check-missing", "corpus check", FILES, lambda w: ["corpus", "check", "/nowhere/c"],
         "no such corpus"),
    Case("check-latin1", "corpus check", ENCODING, lambda w: ["corpus", "check", w.latin1_corpus],
         ":2: not UTF-8"),
    Case("check-broken-json", "corpus check", FILES,
         lambda w: ["corpus", "check", w.broken_corpus], ":2: invalid JSON"),
    Case("corpus-no-subcommand", "corpus", OPTION, lambda w: ["corpus"], "required"),
    Case("stats-empty-folder", "corpus stats", FILES, lambda w: ["corpus", "stats", w.empty_dir],
         "no .jsonl files"),
    Case("stats-json-array", "corpus stats", FILES,
         lambda w: ["corpus", "stats", w.array_jsonl], "expected a JSON object"),
    Case("stats-bad-record", "corpus stats", FILES, lambda w: ["corpus", "stats", w.bad_record],
         ":1:"),
    # extract
    Case("extract-out-folder", "extract", OUTPUT,
         lambda w: ["extract", *M(w), "--out", str(w.out)], "is a directory"),
    Case("extract-out-device", "extract", OUTPUT,
         lambda w: ["extract", *M(w), "--out", "/dev/full"], "not a regular file"),
    Case("extract-out-symlink", "extract", OUTPUT,
         lambda w: ["extract", *M(w), "--out", w.link], "symbolic link"),
    Case("extract-out-parent-missing", "extract", OUTPUT,
         lambda w: ["extract", *M(w), "--out", str(w.out / "no" / "v.safetensors")],
         "does not exist"),
    Case("extract-batch-0", "extract", OPTION,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--batch-size", "0"],
         "--batch-size"),
    Case("extract-layers-word", "extract", OPTION,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--layers", "abc"],
         "cannot read layer spec 'abc'"),
    Case("extract-token-skip-negative", "extract", OPTION,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--token-skip", "-1"],
         "--token-skip"),
    Case("extract-variance-2", "extract", OPTION,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--variance", "2"],
         "--variance"),
    Case("extract-shard-range", "extract", OPTION,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--shard", "3/2"],
         "out of range"),
    Case("extract-shard-word", "extract", OPTION,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--shard", "half"],
         "0/4"),
    Case("extract-corpus-missing", "extract", FILES,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--corpus", "/nowhere"],
         "no such corpus"),
    Case("extract-corpus-latin1", "extract", ENCODING,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--corpus",
                    w.latin1_corpus],
         "not UTF-8"),
    Case("extract-layer-out-of-range", "extract", OPTION,
         lambda w: ["extract", *M(w), "--out", str(w.out / "v"), "--layers", "99",
                    "--corpus", w.corpus], "layer 99 is out of range"),
    # extract merge
    Case("merge-garbage", "extract merge", FILES,
         lambda w: ["extract", "merge", w.garbage, "--out", str(w.out / "m.safetensors")],
         "not a readable safetensors"),
    Case("merge-vectors-as-shard", "extract merge", FILES,
         lambda w: ["extract", "merge", w.vectors, "--out", str(w.out / "m.safetensors")],
         "not extraction_shard"),
    Case("merge-shard-missing-fields", "extract merge", FILES,
         lambda w: ["extract", "merge", str(w.v["shard-kind"]), "--out",
                    str(w.out / "m.safetensors")], "v8.safetensors"),
    Case("merge-missing-file", "extract merge", FILES,
         lambda w: ["extract", "merge", str(w.inp / "nothing"), "--out",
                    str(w.out / "m.safetensors")], "not found"),
    Case("merge-duplicated", "extract merge", FILES,
         lambda w: ["extract", "merge", *w.shards, w.shards[1], "--out",
                    str(w.out / "m.safetensors")], "given twice"),
    Case("merge-missing-shard", "extract merge", FILES,
         lambda w: ["extract", "merge", w.shards[0], "--out", str(w.out / "m.safetensors")],
         "missing"),
    Case("merge-foreign", "extract merge", FILES,
         lambda w: ["extract", "merge", w.shards[0], w.foreign_shard, "--out",
                    str(w.out / "m.safetensors")], "different model"),
    Case("merge-out-folder", "extract merge", OUTPUT,
         lambda w: ["extract", "merge", *w.shards, "--out", str(w.out)], "is a directory"),
    Case("merge-variance-nan", "extract merge", OPTION,
         lambda w: ["extract", "merge", *w.shards, "--out", str(w.out / "m"),
                    "--variance", "nan"], "finite"),
    # export gguf
    Case("export-no-format", "export gguf", OPTION, lambda w: ["export"], "FORMAT"),
    Case("export-strength-huge", "export gguf", OPTION,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "calm", "--out",
                    str(w.out / "c.gguf"), "--strength", "1e300"], "--strength"),
    Case("export-strength-nan", "export gguf", OPTION,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "calm", "--out",
                    str(w.out / "c.gguf"), "--strength", "nan"], "finite"),
    Case("export-out-device", "export gguf", OUTPUT,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "calm", "--out",
                    "/dev/full"], "not a regular file"),
    Case("export-out-folder", "export gguf", OUTPUT,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "calm", "--out",
                    str(w.out)], "is a directory"),
    Case("export-out-symlink", "export gguf", OUTPUT,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "calm", "--out",
                    w.link], "symbolic link"),
    Case("export-layers-word", "export gguf", OPTION,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "calm", "--out",
                    str(w.out / "c.gguf"), "--layers", "ten"], "--layers"),
    Case("export-layers-out-of-range", "export gguf", OPTION,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "calm", "--out",
                    str(w.out / "c.gguf"), "--layers", "99"], "layer 99"),
    Case("export-emotion-unknown", "export gguf", OPTION,
         lambda w: ["export", "gguf", "--vectors", w.vectors, "--emotion", "clam", "--out",
                    str(w.out / "c.gguf")], "unknown emotion 'clam'"),
    Case("export-nan-vectors", "export gguf", VECTORS,
         lambda w: ["export", "gguf", "--vectors", str(w.v["nan"]), "--emotion", "calm",
                    "--out", str(w.out / "c.gguf")], "NaN"),
    Case("export-zero-vectors", "export gguf", VECTORS,
         lambda w: ["export", "gguf", "--vectors", str(w.v["zero"]), "--emotion", "calm",
                    "--out", str(w.out / "c.gguf")], "all zeros"),
    # validate
    Case("validate-unknown", "validate", OPTION, lambda w: ["validate", "nosuch"],
         "invalid choice: 'nosuch'"),
    Case("validate-out-file", "validate", OUTPUT,
         lambda w: ["validate", "heldout", *MV(w), "--out", w.file], "existing file"),
    Case("validate-out-device", "validate", OUTPUT,
         lambda w: ["validate", "heldout", *MV(w), "--out", "/dev/null"], "device"),
    Case("validate-batch-0", "validate", OPTION,
         lambda w: ["validate", "heldout", *MV(w), "--batch-size", "0"], "--batch-size"),
    Case("validate-seed-negative", "validate", OPTION,
         lambda w: ["validate", "heldout", *MV(w), "--seed", "-3"], "seed"),
    Case("validate-layer-word", "validate", OPTION,
         lambda w: ["validate", "heldout", *MV(w), "--layer", "x"], "layer spec"),
    Case("validate-k-0", "validate", OPTION,
         lambda w: ["validate", "logit-lens", *MV(w), "--k", "0"], "--k"),
    Case("validate-strength-huge", "validate", OPTION,
         lambda w: ["validate", "steering", *MV(w), "--strength", "1e300"], "--strength"),
    Case("validate-all-n-boot-0", "validate", OPTION,
         lambda w: ["validate", "all", *MV(w), "--n-boot", "0"], "--n-boot"),
    Case("validate-vectors-wrong-type", "validate", VECTORS,
         lambda w: ["validate", "scenarios", *M(w), "--vectors", str(w.v["emotions-number"])],
         "'emotions'"),
    # report and demo
    Case("report-out-file", "report", OUTPUT, lambda w: ["report", *MV(w), "--out", w.file],
         "existing file"),
    Case("report-out-parent-missing", "report", OUTPUT,
         lambda w: ["report", *MV(w), "--out", str(w.out / "no" / "r")], "does not exist"),
    Case("report-out-symlink", "report", OUTPUT,
         lambda w: ["report", *MV(w), "--out", w.dir_link], "symbolic link"),
    Case("report-only-unknown", "report", OPTION,
         lambda w: ["report", *MV(w), "--out", str(w.out / "r"), "--only", "nosuch"],
         "unknown analysis 'nosuch'"),
    Case("report-seed-negative", "report", OPTION,
         lambda w: ["report", *MV(w), "--out", str(w.out / "r"), "--seed", "-1"], "seed"),
    Case("report-layer-fraction", "report", OPTION,
         lambda w: ["report", *MV(w), "--out", str(w.out / "r"), "--layer", "1.5"],
         "layer spec"),
    Case("demo-out-file", "demo", OUTPUT, lambda w: ["demo", "--out", w.file], "existing file"),
    Case("demo-out-device", "demo", OUTPUT, lambda w: ["demo", "--out", "/dev/null"], "device"),
    # probe
    Case("probe-window-0", "probe", OPTION,
         lambda w: ["probe", "--text", "hi", *MV(w), "--window", "0"], "--window"),
    Case("probe-batch-0", "probe", OPTION,
         lambda w: ["probe", "--jsonl", w.broken_jsonl, *MV(w), "--batch-size", "0"],
         "--batch-size"),
    Case("probe-top-0", "probe", OPTION,
         lambda w: ["probe", "--text", "hi", *MV(w), "--top", "0"], "--top"),
    Case("probe-mode", "probe", OPTION,
         lambda w: ["probe", "--text", "hi", *MV(w), "--mode", "loud"], "invalid choice"),
    Case("probe-layer-word", "probe", OPTION,
         lambda w: ["probe", "--text", "hi", *MV(w), "--layer", "xyz"], "layer spec 'xyz'"),
    Case("probe-layer-out-of-range", "probe", OPTION,
         lambda w: ["probe", "--text", "hi there", *MV(w), "--layer", "99"],
         "layer 99 is out of range"),
    Case("probe-file-latin1", "probe", ENCODING,
         lambda w: ["probe", "--file", w.latin1, *MV(w)], "latin1.txt line 2 is not UTF-8"),
    Case("probe-stdin-latin1", "probe", ENCODING, lambda w: ["probe", "--file", "-", *MV(w)],
         "stdin line 3 is not UTF-8", stdin=b"one\ntwo\nthr\xe9e\n"),
    Case("probe-jsonl-latin1", "probe", ENCODING,
         lambda w: ["probe", "--jsonl", w.latin1_jsonl, *MV(w)], "latin1.jsonl line 2"),
    Case("probe-text-bad-bytes", "probe", ENCODING,
         lambda w: ["probe", "--text", "caf\udce9", *MV(w)], "not UTF-8"),
    Case("probe-jsonl-broken", "probe", FILES,
         lambda w: ["probe", "--jsonl", w.broken_jsonl, *MV(w)], "line 2: invalid JSON"),
    Case("probe-file-missing", "probe", FILES,
         lambda w: ["probe", "--file", "/nowhere.txt", *MV(w)], "cannot read /nowhere.txt"),
    Case("probe-file-folder", "probe", FILES, lambda w: ["probe", "--file", w.dir, *MV(w)],
         "cannot read"),
    Case("probe-text-empty", "probe", OPTION, lambda w: ["probe", "--text", " ", *MV(w)],
         "empty"),
    Case("probe-chat-not-json", "probe", OPTION,
         lambda w: ["probe", "--text", "hello", "--chat", *MV(w)], "JSON list"),
    Case("probe-at-needs-chat", "probe", OPTION,
         lambda w: ["probe", "--text", "hello", "--at", "assistant_start", *MV(w)],
         "needs a chat"),
    Case("probe-text-too-long", "probe", LENGTH, lambda w: ["probe", "--text", w.long_text,
                                                           *MV(w)], "split it into parts"),
    Case("probe-jsonl-too-long", "probe", LENGTH,
         lambda w: ["probe", "--jsonl", w.long_jsonl, *MV(w)], "long.jsonl line 3"),
    Case("probe-out-folder", "probe", OUTPUT,
         lambda w: ["probe", "--jsonl", w.broken_jsonl, *MV(w), "--out", str(w.out)],
         "is a directory"),
    Case("probe-out-device", "probe", OUTPUT,
         lambda w: ["probe", "--jsonl", w.broken_jsonl, *MV(w), "--out", "/dev/full"],
         "not a regular file"),
    Case("probe-out-symlink", "probe", OUTPUT,
         lambda w: ["probe", "--jsonl", w.broken_jsonl, *MV(w), "--out", w.link],
         "symbolic link"),
    Case("probe-out-without-jsonl", "probe", OPTION,
         lambda w: ["probe", "--text", "hi", *MV(w), "--out", str(w.out / "r.jsonl")],
         "--out goes with --jsonl"),
    Case("probe-no-vectors", "probe", VECTORS, lambda w: ["probe", "--text", "hi", *M(w)],
         "--vectors FILE is required"),
    *[Case(f"probe-vectors-{name}", "probe", VECTORS,
           lambda w, name=name: ["probe", "--text", "hi there", *M(w), "--vectors",
                                 str(w.v[name])], expect)
      for name, expect in (("emotions-number", "'emotions' must be a list"),
                           ("model-string", "'model' must be an object"),
                           ("layer-float", "'layers'"), ("deep-json", "nested deeper"),
                           ("nan", "NaN"), ("zero", "all zeros"), ("not-json", "not valid JSON"))],
    Case("probe-vectors-garbage", "probe", VECTORS,
         lambda w: ["probe", "--text", "hi", *M(w), "--vectors", w.garbage],
         "not a readable safetensors"),
    Case("probe-vectors-pickle", "probe", VECTORS,
         lambda w: ["probe", "--text", "hi", *M(w), "--vectors", w.pickled],
         "not a readable safetensors"),
    Case("probe-vectors-folder", "probe", VECTORS,
         lambda w: ["probe", "--text", "hi", *M(w), "--vectors", w.dir], "not a file"),
    Case("probe-vectors-device", "probe", VECTORS,
         lambda w: ["probe", "--text", "hi", *M(w), "--vectors", "/dev/null"], "not a file"),
    Case("probe-jsonl-empty", "probe", FILES,
         lambda w: ["probe", "--jsonl", "/dev/null", *MV(w)], "holds no texts"),
    Case("probe-vectors-other-model", "probe", VECTORS,
         lambda w: ["probe", "--text", "hi", *M(w), "--vectors", w.wide_vectors], "64"),
    Case("probe-pickle-folder", "probe", MODEL,
         lambda w: ["probe", "--text", "hi", "--model", w.pickled_model, "--vectors",
                    w.vectors], "pickle", tty=True),
    # generate
    Case("gen-steer-huge", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--steer", "calm=1e300"], "±10"),
    Case("gen-steer-nan", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--steer", "calm=nan"], "finite"),
    Case("gen-steer-no-value", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--steer", "calm"], "NAME=STRENGTH"),
    Case("gen-steer-unknown", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--steer", "clam=0.1"],
         "unknown emotion 'clam'"),
    Case("gen-steer-layers-word", "generate", OPTION,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--steer", "calm=0.1",
                    "--steer-layers", "x"], "layer spec"),
    Case("gen-alert-nan", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--alert", "calm>nan"], "finite"),
    Case("gen-alert-window-0", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--alert", "calm>0.1@0"],
         "window must be >= 1"),
    Case("gen-alert-no-op", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--alert", "calm"],
         "cannot read alert rule"),
    Case("gen-guard-no-steer", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--guard", "calm>0.1"],
         "cannot read guard"),
    Case("gen-guard-inf", "generate", SPEC,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--guard", "calm>0.1:calm=inf"],
         "finite"),
    Case("gen-temperature-nan", "generate", OPTION,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--temperature", "nan"], "finite"),
    Case("gen-temperature-negative", "generate", OPTION,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--temperature", "-1"],
         "--temperature"),
    Case("gen-top-p-5", "generate", OPTION,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--top-p", "5"], "--top-p"),
    Case("gen-max-new-tokens-0", "generate", OPTION,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--max-new-tokens", "0"],
         "--max-new-tokens"),
    Case("gen-seed-huge", "generate", OPTION,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--seed", str(2**70)], "seed"),
    Case("gen-alert-log-folder", "generate", OUTPUT,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--alert", "calm>0.1",
                    "--alert-log", str(w.out)], "is a directory"),
    Case("gen-alert-log-parent-missing", "generate", OUTPUT,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--alert", "calm>0.1",
                    "--alert-log", str(w.out / "no" / "a.jsonl")], "does not exist"),
    Case("gen-alert-log-symlink", "generate", OUTPUT,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--alert", "calm>0.1",
                    "--alert-log", w.link], "symbolic link"),
    Case("gen-alert-log-device", "generate", OUTPUT,
         lambda w: ["generate", "--prompt", "hi", *MV(w), "--alert", "calm>0.1",
                    "--alert-log", "/dev/full"], "not a regular file"),
    Case("gen-prompt-bad-bytes", "generate", ENCODING,
         lambda w: ["generate", "--prompt", "\udcff", *MV(w)], "not UTF-8"),
    Case("gen-prompt-too-long", "generate", LENGTH,
         lambda w: ["generate", "--prompt", w.long_text, "--raw", *MV(w)], "split it"),
    Case("gen-custom-code", "generate", MODEL,
         lambda w: ["generate", "--prompt", "hi", "--model", w.custom_model],
         "--trust-remote-code", tty=True),
    # chat
    Case("chat-top-p-0", "chat", OPTION, lambda w: ["chat", *MV(w), "--top-p", "0"], "> 0"),
    Case("chat-steer-huge", "chat", SPEC, lambda w: ["chat", *MV(w), "--steer", "calm=20"],
         "±10"),
    Case("chat-alert-log-folder", "chat", OUTPUT,
         lambda w: ["chat", *MV(w), "--alert", "calm>0.1", "--alert-log", str(w.out)],
         "is a directory"),
    Case("chat-system-bad-bytes", "chat", ENCODING,
         lambda w: ["chat", *MV(w), "--system", "\udcff"], "not UTF-8"),
    Case("chat-stdin-latin1", "chat", ENCODING,
         lambda w: ["chat", *MV(w), "--max-new-tokens", "2", "--no-color"],
         "stdin line 2 is not UTF-8", stdin=b"hello\nd\xe9j\xe0 vu\n"),
    # serve and compare: only when the command is there (their own modules check the rest)
    Case("serve-port-0", "serve", OPTION, lambda w: ["serve", *MV(w), "--port", "0"], "port"),
    Case("serve-port-word", "serve", OPTION, lambda w: ["serve", *MV(w), "--port", "http"],
         "port"),
    Case("serve-queue-negative", "serve", OPTION, lambda w: ["serve", *MV(w), "--queue", "-1"],
         "--queue"),
    Case("serve-layer-word", "serve", OPTION, lambda w: ["serve", *MV(w), "--layer", "x"],
         "layer spec"),
    Case("compare-n-boot-0", "compare", OPTION,
         lambda w: ["compare", *MV(w), "--model-b", "copy:bfloat16", "--n-boot", "0"],
         "--n-boot"),
    Case("compare-seed-negative", "compare", OPTION,
         lambda w: ["compare", *MV(w), "--model-b", "copy:bfloat16", "--seed", "-1"], "seed"),
    Case("compare-out-file", "compare", OUTPUT,
         lambda w: ["compare", *MV(w), "--model-b", "copy:bfloat16", "--out", w.file],
         "existing file"),
    Case("compare-layer-word", "compare", OPTION,
         lambda w: ["compare", *MV(w), "--model-b", "copy:bfloat16", "--layer", "top"],
         "layer spec"),
]


@functools.cache
def _registered() -> frozenset[str]:
    """The subcommands of this checkout's ``emolens`` parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return frozenset(sub.choices)


class _TtyStdin(io.StringIO):
    """A stdin that claims to be a terminal and fails the test if anything reads it."""

    def isatty(self) -> bool:
        return True

    def read(self, *args: object) -> str:  # noqa: ARG002
        raise AssertionError("stdin was read")

    readline = read


def _stdin(case: Case) -> io.TextIOBase:
    if case.tty:
        return _TtyStdin()
    return io.TextIOWrapper(io.BytesIO(case.stdin or b""), encoding="utf-8")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, sandbox: W,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]):
    if case.command.split()[0] not in _registered():
        pytest.skip(f"no '{case.command}' command in this checkout")
    argv = case.argv(sandbox)
    watched = (sandbox.root, _PACKAGE_DATA, _REAL_CACHE)
    before = snapshot(*watched)
    monkeypatch.setattr("sys.stdin", _stdin(case))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("emolens: error: "), lines[0]
    assert "Traceback" not in err
    assert case.expect in lines[0], lines[0]
    assert snapshot(*watched) == before, "a refused command changed files"
    assert not sandbox.marker.exists(), "a model folder's code or pickle ran"
    print(f"{case.id}: {lines[0]}")  # shown with pytest -rP: the table's lines, for reading


def test_the_table_covers_every_subcommand_and_class():
    commands = {c.command for c in CASES}
    assert {"info", "corpus generate", "corpus check", "corpus stats", "extract",
            "extract merge", "export gguf", "validate", "report", "demo", "probe", "generate",
            "chat"} <= commands
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.kind for c in CASES} == {OPTION, OUTPUT, ENCODING, VECTORS, MODEL, FILES, LENGTH,
                                       RESUME, SPEC, DEVICE}


# ---- the context length: refused with a line saying where to split ------------------------
def test_texts_beyond_the_context_are_refused_not_silently_read(llama_lm):
    lm = llama_lm
    lm.model.config.max_position_embeddings = 256  # (RoPE: the weights do not depend on it)
    assert lm.max_positions == 256
    text = "The kettle clicked off. " * 80  # 800 tokens of the tiny tokenizer
    assert len(lm.encode_input(text[:200]).input_ids) <= 256  # short texts go through
    with pytest.raises(EmolensError) as info:
        lm.encode_input(text)
    line = str(info.value)
    assert "is 1,600 tokens but tiny-llama reads at most 256" in line
    assert "split it into parts of at most 256 tokens" in line and "\n" not in line
    cut = int(line.rsplit("end at character ", 1)[1].split(")")[0].replace(",", ""))
    assert 250 <= len(lm.encode_input(text[:cut]).input_ids) <= 256  # where to split
    with pytest.raises(EmolensError, match="the chat is"):
        lm.encode_input([{"role": "user", "content": text}])
    with pytest.raises(EmolensError, match="the token list is 300 tokens"):
        lm.encode_input(list(range(5, 305)))
    with pytest.raises(EmolensError, match="reads at most"):
        lm.batch(["short", text])
    short = lm.encode_input("A short prompt.", room=10)
    with pytest.raises(EmolensError, match="ask for at most"):
        lm.encode_input("A short prompt.", room=256 - len(short.input_ids) + 1)


def test_gpt2_style_configs_give_n_positions():
    lm = tiny_lm("gpt2")
    n = lm.model.config.n_positions
    assert lm.max_positions == n == lm.model.transformer.wpe.weight.shape[0]
    with pytest.raises(EmolensError, match=f"reads at most {n:,}"):
        lm.encode_input(list(range(3, 3 + n + 1)))


# ---- the alert log: a torn tail is repaired before the next alert ---------------------------
def test_torn_alert_log_is_repaired_by_the_engine(tmp_path):
    from emolens.alerts import AlertEngine

    log = tmp_path / "alerts.jsonl"
    log.write_text('{"rule": "kept"}\n{"rule": "torn in the mid')
    eng = AlertEngine(["calm", "sad"], ["sad>0.5"], log_path=log)
    with pytest.warns(UserWarning, match="torn"):
        eng.update(np.array([0.0, 0.9]), 0, "tok")
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[0] == {"rule": "kept"} and lines[1]["rule"] == "sad>0.5"
    assert len(lines) == 2 and log.read_text().endswith("\n")
    # a complete last record that only lost its newline is kept
    log.write_text('{"rule": "complete"}')
    eng.reset()
    eng.update(np.array([0.0, 0.9]), 0, "tok")
    assert [json.loads(x)["rule"] for x in log.read_text().splitlines()] == ["complete",
                                                                              "sad>0.5"]


def test_torn_alert_log_is_repaired_by_the_cli(world, sandbox, capsys):
    log = sandbox.out / "cli-alerts.jsonl"
    log.write_text('{"rule": "earlier"}\n{"rule": "cut off')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(["generate", "--prompt", "hi", *MV(world), "--max-new-tokens", "3",
                         "--alert", "calm>-2", "--alert-log", str(log), "--json"])
        assert code == 0, capsys.readouterr().err
        rows = [json.loads(x) for x in log.read_text().splitlines()]
        assert rows[0] == {"rule": "earlier"} and rows[1]["rule"] == "calm>-2"
        assert log.read_text().endswith("\n")
    finally:
        log.unlink()


# ---- stdin is read as bytes: a bad byte names its line, good text goes through -------------
def test_probe_reads_utf8_stdin_and_chat_reads_line_by_line(world, sandbox, monkeypatch,
                                                            capsys):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("Café au lait.\n".encode()),
                                                      encoding="utf-8"))
    assert main(["probe", "--file", "-", *MV(world), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_tokens"] > 3
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"hello\n/quit\n"),
                                                      encoding="utf-8"))
    assert main(["chat", *MV(world), "--max-new-tokens", "2", "--no-color"]) == 0
    assert "top emotions" in capsys.readouterr().out


def test_checkers_refuse_at_parse_time_before_any_model_loads(world, sandbox, monkeypatch,
                                                              capsys):
    import emolens.loading

    def no_loading(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded for a bad argument")

    monkeypatch.setattr(emolens.loading, "load_model", no_loading)
    for argv in (["generate", "--prompt", "hi", *MV(world), "--steer", "calm=1e300"],
                 ["generate", "--prompt", "hi", *MV(world), "--alert", "calm>nan"],
                 ["corpus", "generate", *M(world), "--out", world.corpus, "--temperature",
                  "0.3", "--emotions", "calm", "--topics", "1"],
                 ["validate", "logit-lens", *MV(world), "--k", "0"]):
        assert main(argv) == 2
        assert capsys.readouterr().err.count("emolens: error:") == 1


def test_the_pickle_marker_works(tmp_path):
    """The evil pickle of the table does run when unpickled (so its absence means something)."""
    marker = tmp_path / "ran.txt"
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.read_text() == "the pickle ran"
