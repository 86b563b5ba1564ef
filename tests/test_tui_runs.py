"""The Runs page: history with parameters and results; open a run, resume a stopped one."""

from __future__ import annotations

import pytest
from fakes import FakeFactory, make_app, make_reviewed_run, screen_text, settle, wait_until

from sgtui.config import RunParams
from sgtui.paths import REPO_DATA
from sgtui.store import Store
from sgtui.synthesis import create_run
from sgtui.task import load_task

pytestmark = pytest.mark.asyncio


def stopped_run(db) -> int:
    store = Store(db)
    task = load_task(REPO_DATA / "tasks" / "sentiment.toml")
    params = RunParams.defaults_for(task.type).override(rounds=2, per_round=3, n=2, best_of=2)
    rid = create_run(store, task, params, "fake.gguf", "llama-cpp")
    store.update_run(rid, status="stopped")
    store.close()
    return rid


async def test_history_open_and_resume(tmp_path):
    db = tmp_path / "runs.db"
    done = make_reviewed_run(db)
    stopped = stopped_run(db)
    factory = FakeFactory()
    app = make_app(db, factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await settle(app, pilot)
        page = app.page("runs")
        table = page.query_one("#runs-table")
        assert table.row_count == 2
        text = screen_text(app)
        assert "review-sentiment" in text and "stopped" in text and "done" in text
        # parameters and results of the highlighted run (the newest, the stopped one)
        assert "changed: rounds=2, per_round=3" in text
        await pilot.press("down")  # the finished run
        await pilot.press("o")
        await wait_until(pilot, lambda: app.page_name == "review")
        assert app.current_run_id == done
        await pilot.press("6")
        await settle(app, pilot)
        await pilot.press("up")
        await pilot.press("r")  # resume the stopped run
        await wait_until(pilot, lambda: app.page_name == "generate")
        await wait_until(pilot, lambda: app.gen_state == "done", timeout=20)
        await settle(app, pilot)
        store = Store(db)
        assert store.run(stopped)["status"] == "done"
        assert len(store.samples(stopped)) == 6
        assert app.page("generate").query_one("#gen-table").row_count == 6
        await pilot.press("6")
        await settle(app, pilot)
        assert "stopped" not in screen_text(app).split("\n")[2]


async def test_annotation_warnings_stay_on_the_runs_and_train_pages(tmp_path):
    """Annotation sanity (one label for nearly everything) is shown with the run, not only as a
    toast while it is generated: the Runs detail and the Train page say it."""
    from sgtui.pipeline import annotation_warnings

    db = tmp_path / "w.db"
    rid = make_reviewed_run(db)
    task = load_task(REPO_DATA / "tasks" / "sentiment.toml")
    warnings = annotation_warnings(task, [{"label": "positive"}] * 9 + [{"label": "negative"}])
    assert warnings and "'positive' to 9 of 10" in warnings[0]
    store = Store(db)
    store.update_run(rid, summary={"warnings": warnings})
    store.close()
    app = make_app(db)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await settle(app, pilot)
        assert "'positive' to 9 of 10" in screen_text(app)
        await pilot.press("4")
        await settle(app, pilot)
        await wait_until(pilot, lambda: "'positive' to 9 of 10" in screen_text(app), timeout=10)
