"""Backend registry: cheap names(), and load() that imports the heavy library only when used."""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from sgtui.errors import SgtuiError

from .base import BackendInfo, ChatMessage, Completion, Generator, SamplingParams

GENERATORS = {
    "llama-cpp": ("backends.llama_batch", "BatchedLlamaCppGenerator", "llama_cpp"),
    "llama-cpp-sequential": ("backends.llama_cpp", "LlamaCppGenerator", "llama_cpp"),
    "transformers": ("backends.transformers_gen", "TransformersGenerator", "transformers"),
    # any OpenAI-compatible server (llama-server, vLLM, Ollama, LM Studio); the standard
    # library is all it needs
    "openai": ("backends.openai_server", "OpenAIServerGenerator", "http.client"),
}

__all__ = [
    "BackendInfo",
    "ChatMessage",
    "Completion",
    "Generator",
    "SamplingParams",
    "names",
    "info",
    "load_generator",
    "default_backend_for",
]


def names() -> list[str]:
    return list(GENERATORS)


def info() -> list[BackendInfo]:
    out = []
    for name, (_, _, lib) in GENERATORS.items():
        ok = find_spec(lib) is not None
        out.append(BackendInfo(name, ok, "" if ok else f"python package {lib!r} is not installed"))
    return out


def default_backend_for(model_path: str) -> str:
    from pathlib import Path

    return "transformers" if Path(model_path).is_dir() else "llama-cpp"


def load_generator(name: str, model_path: str, **options) -> Generator:
    if name not in GENERATORS:
        raise SgtuiError(f"unknown backend {name!r}", fix=f"use one of: {', '.join(GENERATORS)}")
    module, cls, lib = GENERATORS[name]
    if find_spec(lib) is None:
        raise SgtuiError(
            f"backend {name!r} needs the python package {lib!r}, which is not installed",
            fix="run ./install.sh",
        )
    mod = import_module(module)
    return getattr(mod, cls)(model_path, **options)
