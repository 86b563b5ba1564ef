"""The Review page: marks by key and in bulk, written to the database at once; search, views,
the detail pane; and reviewing while a (fake) generation is running."""

from __future__ import annotations

import pytest
from fakes import FakeFactory, make_app, make_reviewed_run, screen_text, settle, wait_until

from sgtui.store import Store

pytestmark = pytest.mark.asyncio


def marks(db, run_id: int) -> dict[int, str | None]:
    store = Store(db)
    try:
        return {r["id"]: r["mark"] for r in store.samples(run_id)}
    finally:
        store.close()


async def open_review(pilot) -> None:
    await pilot.press("3")
    await wait_until(pilot, lambda: pilot.app.page_name == "review")
    page = pilot.app.page("review")
    await wait_until(pilot, lambda: page.query_one("#rev-table").row_count > 0, what="rows")


async def test_keys_mark_and_the_database_has_it_at_once(tmp_path):
    db = tmp_path / "r.db"
    rid = make_reviewed_run(db)
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_review(pilot)
        page = app.page("review")
        first = page.current()["id"]
        await pilot.press("k")  # keep, and the cursor moves on
        second = page.current()["id"]
        await pilot.press("d")
        await settle(app, pilot)
        got = marks(db, rid)
        assert got[first] == "keep" and got[second] == "discard"
        # toggle flips whether a sample goes into training: the discarded one comes back
        await pilot.press("up")
        await pilot.press("space")
        await settle(app, pilot)
        assert marks(db, rid)[second] == "keep"
        await pilot.press("u")
        await settle(app, pilot)
        assert marks(db, rid)[second] is None
        assert "3 to train" in screen_text(app)  # the three kept answers


async def test_bulk_marks_by_filter_reason(tmp_path):
    db = tmp_path / "b.db"
    rid = make_reviewed_run(db)
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_review(pilot)
        await pilot.press("b")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "BulkMarks")
        text = screen_text(app)
        assert "filtered: noise  (2)" in text and "kept  (3)" in text
        groups = list(app.screen.groups)
        for _ in range(groups.index("filtered: noise")):
            await pilot.press("down")
        await pilot.press("k")
        await wait_until(pilot, lambda: app.screen is app.main)
        await settle(app, pilot)
        store = Store(db)
        noise = [r for r in store.samples(rid) if r["filter"] == "noise"]
        assert [r["mark"] for r in noise] == ["keep", "keep"]
        assert all(r["mark"] is None for r in store.samples(rid) if r["filter"] != "noise")
        # marked keep, but a filtered input has no answer, so it cannot be trained on
        assert len(store.training_pairs(rid)) == 3


async def test_search_view_and_detail(tmp_path):
    db = tmp_path / "s.db"
    make_reviewed_run(db)
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_review(pilot)
        page = app.page("review")
        table = page.query_one("#rev-table")
        assert table.row_count == 7
        # the detail pane shows the candidates and their votes
        text = screen_text(app)
        assert "votes: positive ×2, neutral ×1" in text
        assert "1. positive" in text and "3. neutral" in text
        await pilot.press("slash")
        await pilot.press(*"toaster")
        assert table.row_count == 1
        await pilot.press("escape")
        assert app.focused is table
        page.query_one("#rev-search").value = ""
        await pilot.pause()
        await pilot.press("v")  # kept only
        assert table.row_count == 3 and "kept" in screen_text(app)
        await pilot.press("v")  # filtered only
        assert table.row_count == 3


async def test_review_while_generation_runs(tmp_path):
    db = tmp_path / "live.db"
    factory = FakeFactory(delay=0.05)
    app = make_app(db, factory)
    async with app.run_test(size=(80, 24)) as pilot:
        from test_tui_generate import open_generate, set_params

        await open_generate(pilot)
        await set_params(pilot, rounds=3, per_round=4, n=2, best_of=2)
        await pilot.press("s")
        await pilot.press("3")
        await wait_until(pilot, lambda: app.page("review").query_one("#rev-table").row_count >= 2)
        page = app.page("review")
        first = page.current()["id"]
        await pilot.press("d")

        def annotated() -> int:
            return sum(1 for r in page.rows.values() if r.get("stage") == "annotated")

        seen = (len(page.rows), annotated())
        assert app.gen_state == "running"
        await settle(app, pilot)
        assert marks(db, app.current_run_id)[first] == "discard"
        # samples keep arriving (new inputs, or answers to earlier ones) while reviewing
        await wait_until(pilot, lambda: (len(page.rows), annotated()) > seen)
        await wait_until(pilot, lambda: app.gen_state == "done", timeout=30)
        await settle(app, pilot)
        # the mark survived the pipeline's later updates of the same sample
        assert marks(db, app.current_run_id)[first] == "discard"
        assert page.rows[first]["mark"] == "discard"


LONG_INPUT = (
    "hey can u send me the report by tmrw, i need it for the meeting w/ the boss and honestly "
    "its kinda urgent so pls dont forget ok thx"
)
LONG_ANSWER = (
    "Could you please send me the report by tomorrow? I need it for the meeting with my manager, "
    "and it is rather urgent, so I would be grateful if you remembered."
)


def make_long_run(db) -> int:
    """A formal-rewrite run whose first sample has a long input and a ~150-character answer."""
    from sgtui.config import RunParams
    from sgtui.paths import REPO_DATA
    from sgtui.synthesis import create_run
    from sgtui.task import load_task

    store = Store(db)
    task = load_task(REPO_DATA / "tasks" / "formal-rewrite.toml")
    rid = create_run(store, task, RunParams.defaults_for(task.type), "fake.gguf", "llama-cpp")
    for slot, (inp, out) in enumerate(
        [(LONG_INPUT, LONG_ANSWER), ("yo whats up", "Good afternoon, how are you?")]
    ):
        store.add_sample(
            rid,
            round=0,
            slot=slot,
            stage="annotated",
            input=inp,
            raw_output=inp,
            candidates=[out, "Send it."],
            output=out,
            status="kept",
        )
    store.update_run(rid, status="done", stage="done")
    store.close()
    return rid


def drawn(app, widget) -> str:
    """The text drawn on screen where `widget` is, lines joined by spaces: what a person sees
    there, cut off wherever the widget is cut off."""
    r = widget.region
    strips = app.screen._compositor.render_strips()[r.y : r.bottom]
    return " ".join(" ".join(s.crop(r.x, r.right).text.split()) for s in strips).strip()


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
async def test_the_whole_answer_is_shown_beside_its_input(tmp_path, size):
    db = tmp_path / "long.db"
    make_long_run(db)
    app = make_app(db)
    async with app.run_test(size=size) as pilot:
        await open_review(pilot)
        await settle(app, pilot)
        page = app.page("review")
        assert page.current()["output"] == LONG_ANSWER
        box = page.query_one("#rev-detail-box")
        inp, ans = page.query_one("#rev-input"), page.query_one("#rev-answer")
        # side by side, both inside the part of the detail pane that is on screen
        assert inp.region.y == ans.region.y and inp.region.right <= ans.region.x
        assert box.content_region.contains_region(ans.region)
        assert box.content_region.contains_region(inp.region)
        assert drawn(app, ans) == "answer: " + LONG_ANSWER
        assert drawn(app, inp) == "input: " + LONG_INPUT


async def test_the_answer_column_shares_the_width_with_the_input(tmp_path):
    db = tmp_path / "cols.db"
    make_long_run(db)
    app = make_app(db)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_review(pilot)
        lines = screen_text(app).splitlines()
        header = next(line for line in lines if line.startswith(" mark"))
        row = next(line for line in lines if LONG_INPUT[:10] in line)
        start = header.index("answer")
        cell = row[start:].rstrip().rstrip("…")
        assert len(cell) > 14 and LONG_ANSWER.startswith(cell), row
        assert header.index("answer") - header.index("input") > 14  # the input keeps its share


async def test_short_labels_leave_the_width_to_the_input(tmp_path):
    db = tmp_path / "short.db"
    make_reviewed_run(db)
    app = make_app(db)
    async with app.run_test(size=(120, 36)) as pilot:
        await open_review(pilot)
        text = screen_text(app)
        # a label answer needs no more than its column's least width
        assert "The blender is loud but it crushes ice in a few seconds." in text
