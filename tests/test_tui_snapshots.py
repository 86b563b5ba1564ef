"""Snapshots of the main screens at 80x24 (and two at 120x36), on a database filled by hand so
every screen is the same on every run. Update with: pytest tests/test_tui_snapshots.py
--snapshot-update (then look at the SVGs)."""

from __future__ import annotations

import time

import pytest
from fakes import add_evaluations, make_app, make_reviewed_run, settle

from sgtui.store import Store

SMALL, LARGE = (80, 24), (120, 36)


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    path = tmp_path / "snap.db"
    rid = make_reviewed_run(path)
    add_evaluations(path, rid)
    store = Store(path)
    store.update_run(rid, created=1_700_000_000.0, summary={"kept": 3})
    for step, loss in enumerate([2.4, 2.1, 1.7, 1.5, 1.2, 1.1, 0.9, 0.85], 1):
        store.add_progress(
            rid,
            step=step,
            epoch=step / 4,
            loss=loss,
            tokens_per_s=640.0,
            eta_s=(12 - step) * 5.0,
            total_steps=12,
        )
    store.close()
    yield path
    time.tzset()


def page(keys: str):
    async def run_before(pilot) -> None:
        await settle(pilot.app, pilot)
        for key in keys.split():
            await pilot.press(key)
            await settle(pilot.app, pilot)

    return run_before


@pytest.mark.parametrize(
    "name,keys",
    [
        ("tasks", "1"),
        ("generate", "2"),
        ("review", "3"),
        ("train", "4"),
        ("evaluate", "5"),
        ("runs", "6"),
        ("help", "question_mark"),
    ],
)
def test_screen_80x24(snap_compare, db, name, keys):
    assert snap_compare(make_app(db), terminal_size=SMALL, run_before=page(keys))


@pytest.mark.parametrize("name,keys", [("generate", "2"), ("review", "3")])
def test_screen_120x36(snap_compare, db, name, keys):
    assert snap_compare(make_app(db), terminal_size=LARGE, run_before=page(keys))


def test_train_page_shows_the_memory_plan(snap_compare, db, bundled_model, monkeypatch):
    """The run's model is the bundled GGUF and the card 1.5 GB (SGTUI_GPU_MEM, as a person
    sharing a card sets it): the plan lowers the batch size and says why."""
    store = Store(db)
    store.update_run(store.runs()[0]["id"], model=bundled_model)
    store.close()
    monkeypatch.setenv("SGTUI_GPU_MEM", "1.5")
    assert snap_compare(make_app(db), terminal_size=SMALL, run_before=page("4"))
