"""Resolving a model name or path: each bad input is a one-line ModelLoadError that says what is wrong
with which file (GGUF files: test_gguf.py)."""

from __future__ import annotations

import re
import shutil

import pytest

from llmaccel.models import ModelLoadError


def test_public_names_import_from_the_package():
    from llmaccel.models import (  # noqa: F401  (what the engine, CLI and bench import)
        ALIASES, DEFAULT_MODEL, LoadedModel, ModelLoadError, load, load_reference_model, load_tokenizer, resolve, wrap,
    )

    assert DEFAULT_MODEL in ALIASES


def broken_copy(model_dir, tmp_path, name: str):
    d = tmp_path / name
    shutil.copytree(model_dir, d)
    return d


@pytest.mark.parametrize("text,problem", [("{not json", "is not valid JSON"), ("[1, 2]", "holds a JSON list")])
def test_broken_config_json_names_the_file(model_dir, tmp_path, text, problem):
    from llmaccel import models

    d = broken_copy(model_dir[0], tmp_path, "broken")
    (d / "config.json").write_text(text)
    for loader in (models.load, models.load_tokenizer):
        with pytest.raises(ModelLoadError, match=f"^{re.escape(str(d / 'config.json'))} {problem}[^\n]*$"):
            loader(str(d))


def test_existing_file_that_is_no_model(tmp_path):
    from llmaccel import models

    doc = tmp_path / "doc1.txt"
    doc.write_text("some text")
    with pytest.raises(ModelLoadError, match="exists but is not a .gguf file or a model folder") as e:
        models.load(str(doc))
    assert "neither a known alias nor an existing path" not in str(e.value)


def test_folder_without_config(tmp_path):
    from llmaccel import models

    with pytest.raises(ModelLoadError, match="is a folder but not a model folder .no config.json."):
        models.resolve(str(tmp_path))


def test_folder_without_weights_is_one_line(model_dir, tmp_path):
    from llmaccel import models

    d = broken_copy(model_dir[0], tmp_path, "no-weights")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=f"^transformers cannot load the model in {re.escape(str(d))}: [^\n]+$") as e:
        models.load(str(d))
    assert "delete" not in str(e.value)  # not a folder of llmaccel's cache: nothing to convert again


def test_damaged_converted_folder_says_to_delete_it(model_dir, tmp_path, monkeypatch):
    """A cached conversion whose weights were cut off afterwards: deleting the folder converts again."""
    from llmaccel import models

    monkeypatch.setenv("LLMACCEL_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "cache" / "models" / "tiny-0123456789abcdef"
    shutil.copytree(model_dir[0], d)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=f"cannot load the model in {re.escape(str(d))}: .*; delete {re.escape(str(d))} to convert"):
        models.load(str(d))


@pytest.mark.parametrize("make", ["corrupt.gguf", "doc1.txt", "broken-config", "no-such-model"])
def test_cli_prints_one_line(model_dir, tmp_path, capsys, monkeypatch, make):
    import os

    from llmaccel.cli import main

    monkeypatch.setenv("LLMACCEL_CACHE", str(tmp_path / "cache"))
    target = tmp_path / make
    if make.endswith((".gguf", ".txt")):
        target.write_bytes(os.urandom(2048))
    elif make == "broken-config":
        shutil.copytree(model_dir[0], target)
        (target / "config.json").write_text("{")
    else:
        target = make
    assert main(["generate", "t1", "--model", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmaccel: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())
