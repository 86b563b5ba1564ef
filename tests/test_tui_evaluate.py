"""The Evaluate page: before/after per metric, which model to use in plain words, and base vs
fine-tuned per sample."""

from __future__ import annotations

import pytest
from fakes import add_evaluations, make_app, make_reviewed_run, screen_text, settle

from sgtui.store import Store

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


def add_scores(db, run_id: int, base: float, tuned: float) -> None:
    """A base and a fine-tuned (self-guide) ROUGE-L score on one split, two items each."""
    store = Store(db)
    for system, score in (("base", base), ("self-guide", tuned)):
        items = [
            {"input": f"text {i}", "gold": "Good day.", "prediction": "Hi.", "score": score}
            for i in range(2)
        ]
        store.add_eval(run_id, system, "formal.eval.jsonl", "rouge", score, {}, "m.gguf", items)
    store.close()


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_a_worse_fine_tune_is_called_worse(tmp_path, size):
    db = tmp_path / "w.db"
    rid = make_reviewed_run(db)
    add_scores(db, rid, base=29.9, tuned=24.6)
    app = make_app(db)
    async with app.run_test(size=size) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        shown = " ".join(screen_text(app).split())  # words wrapped over lines joined again
        assert (
            "formal.eval.jsonl · rouge: the fine-tune is worse than the base model "
            "(24.6 against 29.9): keep using the base model"
        ) in shown


async def test_a_better_fine_tune_is_recommended(tmp_path):
    db = tmp_path / "b.db"
    rid = make_reviewed_run(db)
    add_scores(db, rid, base=24.6, tuned=29.9)
    app = make_app(db)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        shown = " ".join(screen_text(app).split())
        assert "use the fine-tune: it scored 29.9, +5.3 over the base model's 24.6" in shown
        assert "worse" not in shown
