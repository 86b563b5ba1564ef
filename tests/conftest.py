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


@pytest.fixture(scope="session")
def hf_cache_dir(request, tmp_path_factory) -> Path:
    """One folder per session for dequantised base models (training and export tests)."""
    from test_training import shared_cache_dir
    return shared_cache_dir(request.config, tmp_path_factory)


@pytest.fixture
def shared_cache(hf_cache_dir, monkeypatch):
    """Use with pytestmark = pytest.mark.usefixtures("shared_cache")."""
    monkeypatch.setenv("SGTUI_CACHE", str(hf_cache_dir))


@pytest.fixture(scope="session")
def hf_base(bundled_model, hf_cache_dir) -> Path:
    from backends.training import hf_folder
    return hf_folder(bundled_model, hf_cache_dir)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, bundled_model, hf_base, hf_cache_dir):
    """A run trained once per session (killed mid-way and resumed: tests/test_training.py)."""
    from test_training import trained_once
    return trained_once(tmp_path_factory, bundled_model, hf_cache_dir)


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
