"""The real app on the bundled model (llama.cpp): a tiny generation driven through the UI, then a
keep and a discard mark, checked in the database."""

from __future__ import annotations

import pytest
from fakes import screen_text, settle, wait_until

from sgtui.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]


async def test_tiny_generation_and_marks_on_the_bundled_model(tmp_path, bundled_model):
    from test_tui_generate import open_generate, set_params

    from sgtui.tui.app import SgtuiApp

    db = tmp_path / "real.db"
    app = SgtuiApp(db=db, cursor_blink=False)  # the default: bundled model, llama-cpp
    assert (app.model_path, app.backend) == (bundled_model, "llama-cpp")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_generate(pilot)
        await set_params(
            pilot, rounds=1, per_round=2, n=2, best_of=2, gen_max_tokens=32, ann_max_tokens=8
        )
        await pilot.press("s")
        await wait_until(
            pilot, lambda: app.gen_state in ("done", "failed"), timeout=300, what="the real run"
        )
        await settle(app, pilot)
        assert app.gen_state == "done", app.gen_detail
        run_id = app.current_run_id
        store = Store(db)
        run = store.run(run_id)
        assert run["status"] == "done" and run["model"] == bundled_model
        rows = store.samples(run_id)
        assert sorted((r["round"], r["slot"]) for r in rows) == [(0, 0), (0, 1)]
        gen_table = app.page("generate").query_one("#gen-table")
        assert gen_table.row_count == 2
        assert "2/2" in screen_text(app)

        await pilot.press("3")
        await wait_until(pilot, lambda: app.page("review").query_one("#rev-table").row_count == 2)
        await pilot.press("k", "d")
        await settle(app, pilot)
        marks = {r["slot"]: r["mark"] for r in store.samples(run_id)}
        assert marks == {0: "keep", 1: "discard"}
