"""The Evaluate page: before/after per metric, and base vs fine-tuned per sample."""

from __future__ import annotations

import pytest
from fakes import add_evaluations, make_app, make_reviewed_run, screen_text, settle

pytestmark = pytest.mark.asyncio


async def test_before_after_table_and_changed_samples(tmp_path):
    db = tmp_path / "e.db"
    rid = make_reviewed_run(db)
    add_evaluations(db, rid)
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        page = app.page("evaluate")
        scores = page.query_one("#eval-scores")
        header = [str(c.label) for c in scores.columns.values()]
        assert header == ["split", "metric", "base", "self-guide", "trivial", "Δ"]
        row = [str(c) for c in scores.get_row_at(0)]
        assert row[:5] == ["test", "exact_match", "50.0", "50.0", "50.0"] and row[5] == "+0.0"
        items = page.query_one("#eval-items")
        assert items.row_count == 4
        text = screen_text(app)
        assert "2 changed of 4" in text
        await pilot.press("c")
        assert items.row_count == 2  # only the samples whose answer changed
        deltas = [str(items.get_row_at(i)[1]) for i in range(2)]
        assert deltas == ["+100", "-100"]
        # the highlighted sample's full answers side by side
        assert "self-guide (score 100.0)" in screen_text(app)


async def test_no_evaluation_yet_says_how(tmp_path):
    db = tmp_path / "n.db"
    rid = make_reviewed_run(db)
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        assert f"sgtui eval --run {rid}" in screen_text(app)
