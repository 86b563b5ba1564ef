from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
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
    """One folder per session for dequantised base models (training and export tests), kept in
    pytest's cache folder when the cache plugin is on, so a second run skips that minute."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("sgtui-hf"))
    return tmp_path_factory.mktemp("sgtui-hf")


@pytest.fixture
def shared_cache(hf_cache_dir, monkeypatch):
    """Use with pytestmark = pytest.mark.usefixtures("shared_cache")."""
    monkeypatch.setenv("SGTUI_CACHE", str(hf_cache_dir))


@pytest.fixture(scope="session")
def hf_base(bundled_model, hf_cache_dir) -> Path:
    from backends.training import hf_folder

    return hf_folder(bundled_model, hf_cache_dir)


@dataclass
class Trained:
    """One training of the bundled model, killed with SIGKILL after its first epoch and resumed
    with `sgtui train --resume`; shared by the tests that need a trained adapter."""

    db: Path
    run_id: int
    adapter: Path
    checkpoints: Path
    events_before_kill: list[dict]
    kill_returncode: int
    log_tail: str
    progress_after_kill: list[dict]
    had_epoch1: bool
    had_adapter_after_kill: bool
    resume: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def trained(tmp_path_factory, bundled_model, hf_base, hf_cache_dir) -> Trained:
    """A run of the word task trained once per session: killed mid-way and resumed
    (tests/test_training.py checks both; the export tests use its adapter)."""
    from word_task import COLOURS, WORD, make_run

    from sgtui.store import Store
    from sgtui.training import TrainingJob, TrainParams, adapter_dir, checkpoints_dir

    home = tmp_path_factory.mktemp("trained-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SGTUI_HOME", str(home))
        mp.setenv("SGTUI_CACHE", str(hf_cache_dir))
        db = home / "t.db"
        store = Store(db)
        run_id = make_run(store, [(c, WORD) for c in COLOURS[:2]], model=bundled_model)
        job = TrainingJob()
        job.start(db, run_id, TrainParams(epochs=2, batch_size=1, lr=3e-3))
        seen = []
        for event in job.events():
            seen.append(event)
            if event["event"] == "checkpoint" and event["epoch"] == 1:
                job.proc.send_signal(signal.SIGKILL)  # no warning, no cleanup
                break
        job.proc.wait()
        ck = checkpoints_dir(db, run_id)
        killed = dict(
            events_before_kill=seen,
            kill_returncode=job.proc.returncode,
            log_tail=job.log_path.read_text()[-2000:],
            progress_after_kill=store.progress(run_id),
            had_epoch1=(ck / "epoch-1" / "adapter_model.safetensors").is_file(),
            had_adapter_after_kill=adapter_dir(db, run_id).exists(),
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        resume = subprocess.run(
            [sys.executable, "-m", "sgtui", "train", str(run_id), "--resume", "--db", str(db)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return Trained(db, run_id, adapter_dir(db, run_id), ck, resume=resume, **killed)


@pytest.fixture(scope="session")
def random_lora(hf_base):
    """make(out, scale, targets="all-linear"): a LoRA of the bundled model with random B
    matrices (peft starts B at zero, which would change nothing), saved into `out` as peft saves
    it; returns the peft model in eval mode. Seeded: the same adapter every run."""

    def make(out: Path, scale: float, targets: str | list[str] = "all-linear"):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(hf_base))
        torch.manual_seed(0)  # lora_A's initialisation
        peft_model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM")
        )
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
        peft_model.save_pretrained(str(out))
        return peft_model.eval()

    return make


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
