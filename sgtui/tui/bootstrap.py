"""First start and the model list: no Textual here, so it is easy to test on its own."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SgtuiError
from ..models import resolve_model
from ..paths import bundled_model, example_tasks, home
from ..store import Store
from ..task import load_task

MODELS_FILE = "tui-models.json"


def seed_example_tasks(store: Store) -> int:
    """On a database with no tasks, import the example tasks, so a new person never starts at
    an empty list. Returns how many were imported."""
    if store.tasks():
        return 0
    n = 0
    for path in example_tasks():
        try:
            store.add_task(load_task(path))
            n += 1
        except SgtuiError:
            continue  # a broken example must not keep the app from starting
    return n


def default_model() -> str | None:
    try:
        return str(bundled_model())
    except SgtuiError:
        return None


def backend_for(name: str) -> str:
    """transformers for a Hugging Face folder, llama-cpp for a GGUF; a name (ollama:NAME,
    ORG/NAME) by what it resolves to (sgtui/models.py)."""
    try:
        path = resolve_model(name)
    except SgtuiError:
        path = name  # loading it will say what is wrong
    return "transformers" if Path(path).is_dir() else "llama-cpp"


def check_model_path(text: str) -> tuple[str, str]:
    """Validate what the person typed: a GGUF file or a Hugging Face folder. Returns (path,
    backend), or raises SgtuiError in the CLI's words."""
    p = Path(text.strip()).expanduser()
    if not text.strip():
        raise SgtuiError(
            "no path given", fix="type the path of a .gguf file or a Hugging Face folder"
        )
    if not p.exists():
        raise SgtuiError(
            "model file not found",
            path=str(p),
            fix="give the path of a .gguf file or a Hugging Face folder",
        )
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise SgtuiError(
                "this folder has no config.json, so it is not a Hugging Face model",
                path=str(p),
                fix="pick the folder that holds config.json, or a .gguf file",
            )
        return str(p.resolve()), "transformers"
    with p.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise SgtuiError(
            "not a GGUF model file (it does not start with the GGUF magic)",
            path=str(p),
            fix="pass a .gguf file, or convert the model to GGUF",
        )
    return str(p.resolve()), "llama-cpp"


def saved_models() -> list[str]:
    f = home() / MODELS_FILE
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(x) for x in data if isinstance(x, str)] if isinstance(data, list) else []


def save_models(paths: list[str]) -> None:
    f = home() / MODELS_FILE
    try:
        f.write_text(json.dumps(list(dict.fromkeys(paths)), indent=1), encoding="utf-8")
    except OSError:
        pass  # remembering the list is a convenience, not worth failing over
