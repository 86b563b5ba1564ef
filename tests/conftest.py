from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
NI = ROOT.parent / "shared" / "ni"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    """Every test gets its own data folder and database."""
    monkeypatch.setenv("SGTUI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SGTUI_DB", raising=False)
    yield


@pytest.fixture(scope="session")
def bundled_model() -> str:
    from sgtui.paths import bundled_model
    return str(bundled_model())


@pytest.fixture(scope="session")
def llama(bundled_model):
    """The bundled model, loaded once through llama.cpp for the whole session."""
    import backends
    gen = backends.load_generator("llama-cpp", bundled_model)
    yield gen
    gen.close()


@pytest.fixture
def ni_dir() -> Path:
    if not NI.is_dir():
        pytest.skip("the Natural-Instructions tasks (../shared/ni) are not beside the project")
    return NI


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        cuda = torch.cuda.is_available()
    except Exception:
        cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
