"""The Tasks page and the task form: first start, new task with validation, edit."""

from __future__ import annotations

import pytest
from fakes import make_app, screen_text, wait_until
from textual.widgets import Input, TextArea

from sgtui.errors import SgtuiError
from sgtui.paths import example_tasks
from sgtui.store import Store
from sgtui.task import load_task, parse_task

pytestmark = pytest.mark.asyncio


async def test_first_start_imports_the_example_tasks(tmp_path):
    db = tmp_path / "first.db"
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        names = {load_task(p).name for p in example_tasks()}
        assert {t["name"] for t in Store(db).tasks()} == names
        assert app.page("tasks").query_one("#tasks-table").row_count == len(names)
        text = screen_text(app)
        assert "g: generate" in text  # the preview of the selected task says what to do next
    # a second start does not import them again
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert len(Store(db).tasks()) == len(names)


async def fill_example(pilot, inp: str, out: str) -> None:
    app = pilot.app
    await pilot.press("a")
    await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ExampleEditor")
    app.screen.query_one("#ex-input", TextArea).text = inp
    app.screen.query_one("#ex-output", TextArea).text = out
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: app.screen.__class__.__name__ == "TaskForm")


async def test_new_task_shows_the_cli_errors_inline_then_saves(tmp_path):
    db = tmp_path / "new.db"
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "TaskForm")
        form = app.screen
        await pilot.press(*"capitals")
        form.query_one("#f-instruction", TextArea).text = "Name the capital of the country."
        form.query_one("#f-examples").focus()
        await pilot.pause()
        await fill_example(pilot, "France", "Paris")
        await pilot.press("ctrl+s")
        await pilot.pause()
        # the same message and fix the CLI prints for a task file with one example
        data = form.form_data()
        with pytest.raises(SgtuiError) as err:
            parse_task(data, "task form")
        text = screen_text(app)
        assert err.value.message in text and f"fix: {err.value.fix}" in text
        assert app.screen is form
        await fill_example(pilot, "Japan", "Tokyo")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is app.main)
        saved = {t["name"]: t for t in Store(db).tasks()}
        assert "capitals" in saved
        task = Store(db).get_task(saved["capitals"]["id"])
        assert [(e.input, e.output) for e in task.examples] == [
            ("France", "Paris"),
            ("Japan", "Tokyo"),
        ]
        assert app.current_task_id == saved["capitals"]["id"]
        assert app.page("tasks").query_one("#tasks-table").row_count == 4


async def test_edit_checks_labels_and_cancel_keeps_the_task(tmp_path):
    db = tmp_path / "edit.db"
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.page("tasks").query_one("#tasks-table")
        names = [table.get_row_at(i)[0] for i in range(table.row_count)]
        for _ in range(names.index("review-sentiment")):
            await pilot.press("down")
        before = Store(db).get_task(app.current_task_id)
        await pilot.press("e")
        await wait_until(pilot, lambda: app.screen.__class__.__name__ == "TaskForm")
        form = app.screen
        assert form.query_one("#f-labels", Input).value == "positive, negative"
        form.query_one("#f-labels", Input).value = "good, bad"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "example 1's output 'positive' is not one of the labels" in screen_text(app)
        # removing examples with x works when the examples table has the focus
        form.query_one("#f-examples").focus()
        await pilot.pause()
        await pilot.press("x")
        assert len(form.examples) == len(before.examples) - 1
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.main)
        assert Store(db).get_task(app.current_task_id) == before


async def test_the_preview_stays_readable_at_40_columns(tmp_path):
    """At 40 columns the preview beside a 36-column list was one character wide; the list now
    sits above it."""
    app = make_app(tmp_path / "narrow.db")
    async with app.run_test(size=(40, 30)) as pilot:
        await pilot.pause()
        page = app.page("tasks")
        preview = page.query_one("#task-preview")
        assert preview.size.width >= 30, preview.size
        assert page.query_one("#tasks-table").size.height >= 3
        assert "g: generate" in screen_text(app)
