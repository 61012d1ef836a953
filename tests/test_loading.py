"""Loading with Hugging Face manners, and the refusals that keep model folders from running code.

Custom code (``auto_map``) and pickle weights are refused before transformers sees the folder;
dtype and device default to "auto"; the user's HF_HUB_OFFLINE is respected and never forced;
the CLI's argument checkers refuse bad values with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, tiny_tokenizer

from emolens.cli import main
from emolens.cli.common import (
    finite_float,
    nonneg_int,
    output_dir,
    output_file,
    positive_int,
)
from emolens.errors import ModelLoadError
from emolens.loading import load_model

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("the folder's code ran")
raise ImportError("evil module imported")
"""


class TtyStdin:
    """A stdin that claims to be a terminal and records (and refuses) every read."""

    def __init__(self) -> None:
        self.reads = 0

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 0

    def _read(self, *args: object) -> str:
        self.reads += 1
        raise AssertionError("stdin was read during model loading")

    read = readline = readlines = _read

    def __iter__(self):  # noqa: ANN204
        self._read()


def save_tiny(folder: Path, *, dtype: torch.dtype | None = None) -> Path:
    model = tiny_model("llama")
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def custom_code_folder(tmp_path: Path, where: str = "config.json") -> tuple[Path, Path]:
    folder = save_tiny(tmp_path / "custom")
    marker = tmp_path / "code-ran.txt"
    for module in ("modeling_evil", "configuration_evil", "tokenization_evil"):
        (folder / f"{module}.py").write_text(EVIL.format(marker=str(marker)))
    cfg_path = folder / where
    cfg = json.loads(cfg_path.read_text())
    if where == "config.json":
        cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                           "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    else:
        cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    cfg_path.write_text(json.dumps(cfg))
    return folder, marker


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> int:
    """Run the CLI in-process, with whatever the test's setup wrote to stderr cleared."""
    capsys.readouterr()
    return main(list(args))


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("emolens: error:") and "Traceback" not in err[0]
    return err[0]


# ---- custom code --------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_custom_code_folder_is_refused_and_its_code_never_runs(tmp_path, monkeypatch, where):
    folder, marker = custom_code_folder(tmp_path, where)
    stdin = TtyStdin()
    monkeypatch.setattr("sys.stdin", stdin)  # as if a person sat at a terminal
    with pytest.raises(ModelLoadError, match="auto_map.*trust_remote_code=True"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()
    assert stdin.reads == 0


def test_custom_code_folder_via_cli_is_one_line_and_names_the_flag(tmp_path, monkeypatch,
                                                                   capsys):
    folder, marker = custom_code_folder(tmp_path)
    stdin = TtyStdin()
    monkeypatch.setattr("sys.stdin", stdin)
    assert cli(capsys, "info", "--model", str(folder)) == 2
    assert "--trust-remote-code" in one_error_line(capsys)
    assert not marker.exists() and stdin.reads == 0


def test_trust_remote_code_is_passed_through_only_when_asked(tmp_path, monkeypatch):
    import transformers

    folder, _ = custom_code_folder(tmp_path)
    seen = []
    real_model, real_tok = tiny_model("llama"), tiny_tokenizer()

    def fake(result):  # noqa: ANN001, ANN202
        def from_pretrained(source, **kwargs):  # noqa: ANN001, ANN202, ANN003
            seen.append(kwargs)
            return result
        return from_pretrained

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake(real_model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake(real_tok))
    lm = load_model(str(folder), trust_remote_code=True, device="cpu")
    assert lm.n_layers == 4
    assert all(kw["trust_remote_code"] is True for kw in seen) and len(seen) == 2
    assert seen[1]["use_safetensors"] is True


def test_plain_folder_is_loaded_with_trust_remote_code_false(tmp_path, monkeypatch):
    import transformers

    folder = save_tiny(tmp_path / "m")
    real = transformers.AutoModelForCausalLM.from_pretrained
    seen = []

    def spy(source, **kwargs):  # noqa: ANN001, ANN202, ANN003
        seen.append(kwargs)
        return real(source, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model(str(folder), device="cpu")
    assert seen[0]["trust_remote_code"] is False and seen[0]["use_safetensors"] is True


# ---- pickles ------------------------------------------------------------------------------
def test_pickle_only_folder_is_refused_with_a_conversion_hint(tmp_path, monkeypatch, capsys):
    folder = save_tiny(tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    torch.save(tiny_model("llama").state_dict(), folder / "pytorch_model.bin")

    def no_unpickling(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("torch.load was called on a model folder")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(pytorch_model.bin\)") as info:
        load_model(str(folder), device="cpu")
    assert "save_pretrained" in str(info.value) and "\n" not in str(info.value)
    assert cli(capsys, "info", "--model", str(folder)) == 2
    assert "pickle" in one_error_line(capsys)


def test_folder_without_weights_is_refused(tmp_path):
    folder = save_tiny(tmp_path / "empty")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model weights"):
        load_model(str(folder), device="cpu")


def test_broken_config_json_is_one_clear_error(tmp_path):
    folder = save_tiny(tmp_path / "broken")
    (folder / "config.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(ModelLoadError, match="cannot read model config"):
        load_model(str(folder), device="cpu")
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="not a JSON object"):
        load_model(str(folder), device="cpu")


# ---- dtype and device ---------------------------------------------------------------------
def test_tiny_folder_loads_with_dtype_auto_as_float32_on_cpu(tmp_path):
    folder = save_tiny(tmp_path / "bf16", dtype=torch.bfloat16)
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    lm = load_model(str(folder), device="cpu")  # dtype="auto" is the default
    assert lm.dtype == torch.float32 and lm.device.type == "cpu"
    assert lm.source == f"local:{folder.resolve()}" and lm.revision is None
    assert load_model(str(folder), device="cpu", dtype="bfloat16").dtype == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_defaults_pick_the_cpu_without_cuda(tmp_path):
    lm = load_model(str(save_tiny(tmp_path / "m")))
    assert lm.device.type == "cpu" and lm.dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("flag, value, message", [
    ("--device", "cuda", "CUDA is not available"),
    ("--device", "cuda:3", "CUDA is not available"),
    ("--device", "tpu9", "unknown device"),
    ("--device-map", "everywhere", "unknown device map"),
    ("--device-map", "cuda", "CUDA is not available"),
    ("--dtype", "float8", "invalid choice"),
])
def test_bad_device_options_are_one_line_and_exit_2(flag, value, message, capsys):
    assert cli(capsys, "info", "--model", "default", flag, value) == 2
    line = one_error_line(capsys)
    assert message in line and flag in line


def test_library_device_errors(tmp_path):
    folder = str(save_tiny(tmp_path / "m"))
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_model(folder, device="quantum")
    with pytest.raises(ModelLoadError, match="not both"):
        load_model(folder, device="cpu", device_map="auto")
    with pytest.raises(ModelLoadError, match="hub ids only"):
        load_model(folder, revision="main")


def test_device_map_cpu_loads_on_cpu(tmp_path):
    lm = load_model(str(save_tiny(tmp_path / "m")), device_map="cpu")
    assert lm.device.type == "cpu" and lm.dtype == torch.float32


# ---- the hub: offline respected, never forced ---------------------------------------------
def test_offline_unknown_hub_id_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli(capsys, "info", "--model", "nobody/no-such-model-xyz") == 2
    line = one_error_line(capsys)
    assert "not in the local cache and HF_HUB_OFFLINE is set" in line


def test_cli_does_not_force_offline_mode(monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert cli(capsys, "--version") == 0
    assert cli(capsys, "info", "--model", str(Path("/nowhere/m.gguf"))) == 2
    assert "HF_HUB_OFFLINE" not in os.environ


def _fake_hub_cache(root: Path, repo: str, folder: Path, commit: str = "a" * 40) -> None:
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit)


def test_cached_hub_model_loads_offline_with_its_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    _fake_hub_cache(tmp_path / "hub", "tiny/llama", save_tiny(tmp_path / "m"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model("tiny/llama", device="cpu")
    assert lm.n_layers == 4 and lm.revision == "a" * 40
    assert lm.source == f"hub:tiny/llama@{'a' * 40}"


def test_cached_hub_model_with_custom_code_is_refused(tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder, marker = custom_code_folder(tmp_path)
    _fake_hub_cache(tmp_path / "hub", "evil/model", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("sys.stdin", TtyStdin())
    with pytest.raises(ModelLoadError, match="auto_map"):
        load_model("evil/model", device="cpu")
    assert not marker.exists()


# ---- logging manners ----------------------------------------------------------------------
def test_library_load_leaves_transformers_logging_alone_and_prints_nothing(tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    folder = str(save_tiny(tmp_path / "m"))
    hf_logging.set_verbosity_info()
    try:
        capsys.readouterr()
        load_model(folder, device="cpu")
        assert hf_logging.get_verbosity() == hf_logging.INFO
        assert capsys.readouterr().out == ""
        assert cli(capsys, "info", "--model", folder, "--json") == 0
        assert hf_logging.get_verbosity() == hf_logging.INFO  # restored after the command
    finally:
        hf_logging.set_verbosity_warning()
    assert not any(type(h).__name__ == "_StderrHandler"
                   for h in logging.getLogger("emolens").handlers)


def test_cli_logs_emolens_info_lines_to_stderr(tmp_path, monkeypatch, capsys):
    import emolens.cli.info as info

    def noisy(args):  # noqa: ANN001, ANN202
        logging.getLogger("emolens.loading").info("dequantising x once")
        return 0

    monkeypatch.setattr(info, "run", noisy)
    assert cli(capsys, "info") == 0
    assert capsys.readouterr().err == "emolens: dequantising x once\n"


# ---- argument checkers ----------------------------------------------------------------------
def test_int_and_float_checkers():
    assert positive_int("7") == 7 and nonneg_int("0") == 0
    for bad in ("0", "-1", "1.5", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
    with pytest.raises(argparse.ArgumentTypeError, match=">= 0"):
        nonneg_int("-3")
    temperature = finite_float(0, 5)
    assert temperature("0") == 0.0 and temperature("5") == 5.0
    for bad in ("nan", "inf", "-inf", "5.01", "-1", "1e300", "warm"):
        with pytest.raises(argparse.ArgumentTypeError):
            temperature(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
        finite_float(0, None, lo_open=True)("0")
    assert finite_float()("-1e6") == -1e6


def test_output_file_checker(tmp_path):
    new = tmp_path / "out.safetensors"
    assert output_file(str(new)) == str(new)
    new.write_text("old")
    assert output_file(str(new)) == str(new)
    link = tmp_path / "link"
    link.symlink_to(new)
    cases = {str(tmp_path): "is a directory", "/dev/null": "not a regular file",
             str(link): "symbolic link", str(tmp_path / "no" / "x"): "does not exist",
             "": "empty"}
    if Path("/dev/full").exists():
        cases["/dev/full"] = "not a regular file"
    for bad, message in cases.items():
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            output_file(bad)


def test_output_dir_checker(tmp_path):
    assert output_dir(str(tmp_path)) == str(tmp_path)
    assert output_dir(str(tmp_path / "new")) == str(tmp_path / "new")
    (tmp_path / "file").write_text("x")
    (tmp_path / "dirlink").symlink_to(tmp_path)
    for bad, message in {str(tmp_path / "file"): "existing file",
                         str(tmp_path / "dirlink"): "symbolic link",
                         "/dev/null": "device",
                         str(tmp_path / "a" / "b"): "does not exist"}.items():
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            output_dir(bad)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_checkers_refuse_unwritable_folders(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(argparse.ArgumentTypeError, match="not writable"):
        output_file(str(locked / "x"))
    with pytest.raises(argparse.ArgumentTypeError, match="not writable"):
        output_dir(str(locked / "x"))


def test_argparse_errors_are_one_line_exit_2(capsys):
    assert cli(capsys, "info", "--no-such-flag") == 2
    assert "unrecognized arguments" in one_error_line(capsys)
    assert cli(capsys, "no-such-command") == 2
    assert "invalid choice" in one_error_line(capsys)


class _Evil:
    """Unpickling this writes a marker file (what a hostile ``pytorch_model.bin`` could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "the pickle ran"))


@pytest.mark.parametrize("command", [["info"], ["probe", "--text", "hi", "--vectors", "v"],
                                     ["generate", "--prompt", "hi"],
                                     ["extract", "--out", "v.safetensors"]])
def test_evil_pickle_folder_never_runs_even_at_a_terminal(tmp_path, monkeypatch, capsys,
                                                          command):
    """A folder with only a hostile pickle: refused by every command, stdin a terminal that
    is never read, and the pickle never unpickled (its marker never written)."""
    import pickle

    folder = save_tiny(tmp_path / "evil")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pickle-ran.txt"
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": _Evil(marker)}, f)
    pickle.loads((folder / "pytorch_model.bin").read_bytes())  # the marker does work...
    assert marker.exists()
    marker.unlink()
    stdin = TtyStdin()
    monkeypatch.setattr("sys.stdin", stdin)
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, *command, "--model", str(folder)) == 2
    assert "pickle" in one_error_line(capsys)
    assert not marker.exists() and stdin.reads == 0  # ...and emolens never ran it
