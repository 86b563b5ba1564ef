"""Opening a model for generation: the one place that decides which backend loads it.

Everything that loads a model (`sgtui generate`, `run`, `eval`, `search`, the loop, the TUI)
calls `open_generator`; the backends themselves sit behind backends.load_generator and import
their heavy library only when used.

The rules:
* a GGUF file loads through llama.cpp (the batched backend), a Hugging Face folder through
  transformers, unless a backend is named;
* a GGUF LoRA adapter (`lora_path`) needs llama.cpp: a run made with another backend is scored
  through llama.cpp;
* a peft adapter folder (`adapter`) needs transformers;
* `openai` is a server: its "model" is "URL#MODEL" and is passed on as it is.
"""

from __future__ import annotations

from pathlib import Path

import backends

from .errors import SgtuiError
from .models import resolve_model
from .paths import bundled_model

LLAMA_CPP = "llama-cpp"
TRANSFORMERS = "transformers"
SERVER = "openai"


def is_llama_cpp(backend: str) -> bool:
    return backend.startswith(LLAMA_CPP)


def default_backend(model_path: str) -> str:
    """transformers for a Hugging Face folder, llama.cpp for anything else (a GGUF file)."""
    return TRANSFORMERS if Path(model_path).is_dir() else LLAMA_CPP


def resolve(model: str | None, backend: str | None = None) -> tuple[str, str]:
    """(path, backend) for what the person named: a path, ollama:NAME, lmstudio:..., ORG/NAME
    in the local cache, or nothing for the bundled model (sgtui/models.py)."""
    path = resolve_model(model) if model else str(bundled_model())
    return path, backend or default_backend(path)


def open_generator(
    model: str,
    backend: str | None = None,
    *,
    lora_path: str | None = None,
    adapter: str | None = None,
    trust_remote_code: bool = False,
    **options,
):
    """Load `model` (a path, or a server's "URL#MODEL") for generation.

    backend: the run's backend, or None for the model's default. lora_path: a GGUF LoRA adapter
    (llama.cpp). adapter: a peft adapter folder (transformers). Other options go to the backend
    as they are (n_threads, api_key_env, concurrency, ...)."""
    backend = backend or default_backend(model)
    if lora_path:
        backend = backend if is_llama_cpp(backend) else LLAMA_CPP
        options["lora_path"] = lora_path
    elif adapter:
        backend = TRANSFORMERS
        options["adapter"] = adapter
    if backend == TRANSFORMERS:
        options["trust_remote_code"] = trust_remote_code
    return backends.load_generator(backend, model, **options)


TRAIN_MODEL = "train-model"  # the artifact that records a server run's local weights
LOCAL_WEIGHTS = (
    "the served model's weights: a .gguf file, a Hugging Face folder, ollama:NAME[:TAG], "
    "lmstudio:PUB/REPO or ORG/NAME in the local cache"
)


def ollama_weights(generator) -> str | None:
    """The GGUF blob behind an Ollama server's model name, when that model is in this
    machine's Ollama store (a server elsewhere, or another name, gives None)."""
    if getattr(generator, "flavour", None) != "ollama" or not generator.served_model:
        return None
    try:
        return resolve_model(f"ollama:{generator.served_model}")
    except SgtuiError:
        return None


def train_weights(store, run_id: int, given: str | None = None) -> str | None:
    """The local weights run `run_id` trains on and is scored with: `given` (resolved, and
    recorded with the run), else what was recorded, else the run's own model when it is not a
    server's. None for a server run with none recorded."""
    row = store.run(run_id)
    if given:
        path = resolve_model(given)
        if row["backend"] == SERVER:
            store.add_artifact(run_id, TRAIN_MODEL, path)
        return path
    if row["backend"] != SERVER:
        return row["model"]
    recorded = store.artifacts(run_id, TRAIN_MODEL)
    return recorded[-1]["path"] if recorded else None
