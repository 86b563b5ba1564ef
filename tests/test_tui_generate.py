"""The Generate screen on the fake generator: flow and threading, not the model's quality."""

from __future__ import annotations

import threading
import time

import pytest
from fakes import FakeFactory, make_app, screen_text, settle, wait_until
from textual.widgets import DataTable, Input, Select
from textual.widgets.select import InvalidSelectValueError

from sgtui.config import RunParams
from sgtui.events import NoticeEvent, ProgressEvent, SampleEvent
from sgtui.store import Store
from sgtui.tui.messages import GenerationProgress, SamplesArrived
from sgtui.tui.model_owner import EventBatcher
from sgtui.tui.params import defaults


async def open_generate(pilot, task_name: str = "review-sentiment") -> None:
    """From the task list, pick the task with the keyboard and press g."""
    app = pilot.app
    table = app.page("tasks").query_one("#tasks-table", DataTable)
    names = [table.get_row_at(i)[0] for i in range(table.row_count)]
    for _ in range(names.index(task_name) - table.cursor_row):
        await pilot.press("down")
    await pilot.press("g")
    await wait_until(pilot, lambda: app.page_name == "generate", what="the Generate screen")


async def open_params_form(pilot):
    """Press p on Generate; returns the parameter form once it is up."""
    app = pilot.app
    await pilot.press("p")
    await wait_until(pilot, lambda: app.screen.__class__.__name__ == "ParamsForm")
    return app.screen


async def set_params(pilot, **values: object) -> None:
    """Open the parameter form, type the values, save."""
    app = pilot.app
    await open_params_form(pilot)
    for name, value in values.items():
        field = app.screen.query_one(f"#p-{name}", Input)
        field.focus()
        field.value = ""
        await pilot.press(*str(value))
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: app.screen is app.main)


SMALL = dict(rounds=2, per_round=4, n=3, best_of=3)


@pytest.mark.asyncio
async def test_samples_stream_into_the_table(tmp_path):
    factory = FakeFactory()
    app = make_app(tmp_path / "g.db", factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_generate(pilot)
        screen = app.page("generate")
        # the form starts from the paper's defaults for a classification task
        assert screen.params == defaults("classification")
        await set_params(pilot, **SMALL)
        assert (screen.params.rounds, screen.params.per_round, screen.params.n) == (2, 4, 3)
        await pilot.press("s")
        await wait_until(pilot, lambda: app.gen_state == "done", what="the run to finish")
        await settle(app, pilot)
        run_id = app.current_run_id
        store = Store(tmp_path / "g.db")
        rows = store.samples(run_id)
        assert len(rows) == 8
        table = screen.query_one("#gen-table")
        assert table.row_count == 8
        text = screen_text(app)
        assert "8/8" in text and "done" in text
        counts = store.counts(run_id)
        assert f"kept {counts['kept']}" in text
        # one model, loaded once, in one thread that is not the UI thread
        assert len(factory.loads) == 1
        (gen,) = factory.generators
        loader_thread = factory.loads[0][2]
        assert gen.threads == {loader_thread}
        assert loader_thread != threading.get_ident()
        assert store.run(run_id)["status"] == "done"


@pytest.mark.asyncio
async def test_pause_stop_and_resume(tmp_path):
    factory = FakeFactory(delay=0.08)
    app = make_app(tmp_path / "p.db", factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_generate(pilot)
        await set_params(pilot, rounds=4, per_round=5, n=2, best_of=2)
        await pilot.press("s")
        await wait_until(
            pilot,
            lambda: app.page("generate").query_one("#gen-table").row_count >= 2,
            what="the first samples",
        )
        await pilot.press("space")
        await wait_until(pilot, lambda: app.gen_state == "paused", what="pause")
        run_id = app.current_run_id
        store = Store(tmp_path / "p.db")
        n_paused = len(store.samples(run_id))
        await pilot.pause(0.4)
        assert len(store.samples(run_id)) == n_paused  # nothing is generated while paused
        await pilot.press("space")
        await wait_until(pilot, lambda: app.gen_state == "running", what="resume from pause")
        await pilot.press("x")
        await wait_until(pilot, lambda: app.gen_state == "stopped", what="stop")
        assert store.run(run_id)["status"] == "stopped"
        assert "stopped" in screen_text(app)
        await pilot.press("r")
        await wait_until(pilot, lambda: app.gen_state == "done", timeout=20, what="the resumed run")
        rows = store.samples(run_id)
        # every slot exactly once across the stop and the resume
        assert sorted((r["round"], r["slot"]) for r in rows) == [
            (r, s) for r in range(4) for s in range(5)
        ]
        assert len(factory.loads) == 1  # the resume reused the loaded model


@pytest.mark.asyncio
async def test_keys_are_answered_while_generating(tmp_path):
    factory = FakeFactory(delay=0.05)
    app = make_app(tmp_path / "k.db", factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_generate(pilot)
        await set_params(pilot, rounds=5, per_round=4, n=3, best_of=3)
        await pilot.press("s")
        await wait_until(pilot, lambda: app.gen_state == "running", what="running")
        for key, mode in (("3", "review"), ("6", "runs"), ("2", "generate")):
            t = time.monotonic()
            await pilot.press(key)
            await wait_until(pilot, lambda mode=mode: app.page_name == mode, timeout=2)
            # a busy 2-core CI box still answers well within this; a blocked UI would take
            # the rest of the run (several seconds)
            assert time.monotonic() - t < 1.5
        assert app.gen_state == "running"
        await pilot.press("x")
        await wait_until(pilot, lambda: app.gen_state == "stopped")


@pytest.mark.asyncio
async def test_a_failing_model_is_reported(tmp_path):
    factory = FakeFactory(fail_after=3)
    app = make_app(tmp_path / "f.db", factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_generate(pilot)
        await set_params(pilot, **SMALL)
        await pilot.press("s")
        await wait_until(pilot, lambda: app.gen_state == "failed")
        await settle(app, pilot)
        assert "scripted failure" in screen_text(app)
        assert Store(tmp_path / "f.db").run(app.current_run_id)["status"] == "failed"


@pytest.mark.asyncio
async def test_params_form_rejects_bad_values(tmp_path):
    app = make_app(tmp_path / "v.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_generate(pilot)
        form = await open_params_form(pilot)
        field = form.query_one("#p-best_of", Input)
        field.value = "2"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form
        assert "best of must be at least n" in screen_text(app)
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert form.query_one("#p-best_of", Input).value == str(defaults("classification").best_of)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.main)


@pytest.mark.asyncio
async def test_params_form_offers_declared_choices(tmp_path):
    """A field declared with its choices (--consensus, --annotator, --mode) is picked from
    them, not typed, and the pick is what the run gets."""
    app = make_app(tmp_path / "c.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_generate(pilot)
        form = await open_params_form(pilot)
        for name in ("mode", "consensus", "annotator"):
            with pytest.raises(InvalidSelectValueError):  # what is not a choice cannot be set
                form.query_one(f"#p-{name}", Select).value = "anything else"
        form.query_one("#p-consensus", Select).value = "mbr"
        form.query_one("#p-annotator", Select).value = "channel"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is app.main)
        params = app.page("generate").params
        assert (params.consensus, params.annotator) == ("mbr", "channel")


def test_batcher_posts_batches_and_flushes_on_close():
    posted: list = []
    b = EventBatcher(7, posted.append, interval=0.05).start()
    for i in range(50):
        b.add(SampleEvent({"id": i, "updated": 0}))
        b.add(ProgressEvent("inputs", i + 1, 50))
    b.add(SampleEvent({"id": 3, "updated": 1}))  # an update of a sample already buffered
    b.add(NoticeEvent("hello"))
    b.close()
    samples = [m for m in posted if isinstance(m, SamplesArrived)]
    progress = [m for m in posted if isinstance(m, GenerationProgress)]
    assert 1 <= len(samples) <= 3  # one burst, a handful of messages, not fifty
    got = {r["id"]: r for m in samples for r in m.rows}
    assert len(got) == 50 and got[3]["updated"] == 1
    assert progress[-1].stages["inputs"].done == 50
    assert progress[-1].can_replace(progress[0])
    assert not progress[-1].can_replace(GenerationProgress(8, {}))


def test_params_defaults_follow_the_core():
    from sgtui.config import DEFAULT_MODE

    for typ in ("generation", "classification"):
        assert defaults(typ) == RunParams.defaults_for(typ, DEFAULT_MODE)
        assert defaults(typ, "paper") == RunParams.defaults_for(typ, "paper")
    assert defaults("generation", "paper").rounds == 20 != defaults("generation").rounds
