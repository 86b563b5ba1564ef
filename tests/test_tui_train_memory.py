"""The Train page and memory: the VRAM plan for the run's model and card, and the generation
model closed while a training runs (so on one GPU the two never compete), then loaded again.

The generator is the bundled model through llama.cpp, loaded by the real model owner; the
training child is the scripted stand-in of tests/fakes.py, since what is checked is the order
of closing, training and loading."""

from __future__ import annotations

import pytest
from fakes import fake_training_job, make_app, make_reviewed_run, screen_text, settle, wait_until

from sgtui import vram
from sgtui.store import Store

pytestmark = pytest.mark.asyncio


def bundled_run(db, bundled_model) -> int:
    rid = make_reviewed_run(db)
    store = Store(db)
    store.update_run(rid, model=bundled_model)
    store.close()
    return rid


async def test_the_plan_lowers_the_batch_for_a_small_card(tmp_path, bundled_model, monkeypatch):
    db = tmp_path / "p.db"
    bundled_run(db, bundled_model)
    monkeypatch.setenv("SGTUI_GPU_MEM", "1")
    app = make_app(db)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        await wait_until(
            pilot, lambda: "memory: " in screen_text(app) and "GiB" in screen_text(app), timeout=60
        )
        text = screen_text(app)
        assert "in 1.00 GiB: batch size" in text and "[SGTUI_GPU_MEM]" in text
        assert "changed: batch size 8 -> " in text
        # a bigger card: the asked-for settings stand
        monkeypatch.setenv("SGTUI_GPU_MEM", "80")
        app.page("train").load_info(app.page("train").run_id)
        await wait_until(pilot, lambda: "nothing changed" in screen_text(app), timeout=60)


async def test_without_a_gpu_it_says_training_runs_on_the_cpu(tmp_path, bundled_model, monkeypatch):
    db = tmp_path / "c.db"
    bundled_run(db, bundled_model)
    monkeypatch.delenv("SGTUI_GPU_MEM", raising=False)
    monkeypatch.setattr(vram, "detect_gpu_memory", lambda: None)  # as on a machine without one
    app = make_app(db)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        await wait_until(pilot, lambda: "no GPU seen" in screen_text(app), timeout=60)
        assert "training runs on the CPU; 4-bit QLoRA on a card: 2.83 GiB" in screen_text(app)


async def test_a_model_that_cannot_be_read_gets_no_plan_and_says_why(tmp_path):
    db = tmp_path / "f.db"
    make_reviewed_run(db)  # its model is fake.gguf, which does not exist
    app = make_app(db)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        await wait_until(
            pilot, lambda: "memory: no plan (model not found)" in screen_text(app), timeout=30
        )


async def test_the_generation_model_is_closed_while_training_runs(tmp_path, bundled_model):
    import backends
    from sgtui.config import RunParams
    from sgtui.paths import REPO_DATA
    from sgtui.task import load_task
    from sgtui.tui.model_owner import GenerateRequest

    db = tmp_path / "g.db"
    rid = bundled_run(db, bundled_model)
    loads, closes = [], []

    def factory(backend: str, model: str):  # the real generator; its loads and closes counted
        gen = backends.load_generator(backend, model, n_threads=1)
        loads.append(model)
        close = gen.close
        gen.close = lambda: (closes.append(model), close())
        return gen

    jobs = fake_training_job(steps=3, delay=0.05)
    app = make_app(db, factory=factory, train_job_factory=jobs)
    async with app.run_test(size=(100, 30)) as pilot:
        store = Store(db)
        task = load_task(REPO_DATA / "tasks" / "sentiment.toml")
        tid = store.add_task(task)
        store.close()
        params = RunParams.defaults_for(task.type).override(rounds=1, per_round=1, n=1)
        assert app.start_generation(
            GenerateRequest(task_id=tid, params=params, model=bundled_model, backend="llama-cpp")
        )
        await wait_until(pilot, lambda: app.gen_state in ("done", "failed", "stopped"), timeout=300)
        assert app.owner.loaded == (bundled_model, "llama-cpp") and loads == [bundled_model]
        app.select_run(rid)  # the reviewed run, which has training pairs
        await pilot.press("4")
        await settle(app, pilot)
        await pilot.press("t")
        await wait_until(pilot, lambda: "training finished" in screen_text(app), timeout=60)
        assert "the generation model is closed while training runs" in screen_text(app)
        assert closes == [bundled_model]  # closed once, before the child started
        await wait_until(pilot, lambda: app.owner.loaded is not None, timeout=60)
        assert loads == [bundled_model, bundled_model]  # and loaded again after


async def test_training_waits_for_no_run_to_be_generating(tmp_path):
    """A paused run holds the model owner, which would never close the model for training:
    training is refused until the run is stopped or done."""
    db = tmp_path / "w.db"
    make_reviewed_run(db)
    jobs = fake_training_job(steps=2, delay=0.01)
    app = make_app(db, train_job_factory=jobs)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        app.gen_state = "paused"  # as the model owner leaves it when a run is paused
        await pilot.press("t")
        await settle(app, pilot)
        assert app.page("train").training_run is None and jobs.jobs == []
        assert any("a run is generating" in n.message for n in app._notifications)
        app.gen_state = "done"
        await pilot.press("t")
        await wait_until(pilot, lambda: "training finished" in screen_text(app), timeout=30)
