"""The Train page: progress and the loss plot from train_progress rows, a training child process
(a scripted stand-in for the worker) with live progress, and cancel."""

from __future__ import annotations

import pytest
from fakes import fake_training_job, make_app, make_reviewed_run, screen_text, settle, wait_until
from textual.widgets import Sparkline

from sgtui.store import Store

pytestmark = pytest.mark.asyncio


async def training_finished(app, pilot) -> None:
    await wait_until(
        pilot,
        lambda: app.page("train").training_run is None and "training finished" in screen_text(app),
        timeout=20,
    )


async def test_progress_rows_show_as_bar_and_loss_plot(tmp_path):
    db = tmp_path / "t.db"
    rid = make_reviewed_run(db)
    store = Store(db)
    losses = [2.5, 2.0, 1.6, 1.3, 1.2]
    for step, loss in enumerate(losses, 1):
        store.add_progress(
            rid,
            step=step,
            epoch=step / 5,
            loss=loss,
            tokens_per_s=850.0,
            eta_s=(10 - step) * 6.0,
            total_steps=10,
        )
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        page = app.page("train")
        assert page.query_one("#train-loss", Sparkline).data == losses
        text = screen_text(app)
        assert "step 5/10" in text and "50%" in text
        assert "loss 1.2000" in text and "850 tok/s" in text and "ETA 30s" in text
        assert "first 2.500 → last 1.200" in text
        assert "3 training pairs" in text


async def test_training_runs_in_a_child_process_and_reports(tmp_path):
    db = tmp_path / "c.db"
    make_reviewed_run(db)
    factory = fake_training_job(steps=4, delay=0.05)
    app = make_app(db, train_job_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        await pilot.press("t")
        await training_finished(app, pilot)
        (job,) = factory.jobs
        assert job.proc.returncode == 0
        text = screen_text(app)
        assert "step 4/4" in text and "100%" in text and "started: fake on cpu" in text
        assert app.page("train").query_one("#train-loss", Sparkline).data == [2.0, 1.0, 2 / 3, 0.5]


async def test_cancel_terminates_the_training_process(tmp_path):
    db = tmp_path / "x.db"
    make_reviewed_run(db)
    factory = fake_training_job(steps=200, delay=0.05)
    app = make_app(db, train_job_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        await pilot.press("t")
        await wait_until(pilot, lambda: len(app.page("train").rows) >= 2, timeout=20)
        await pilot.press("c")
        await wait_until(pilot, lambda: app.page("train").training_run is None, timeout=10)
        (job,) = factory.jobs
        assert job.proc.returncode is not None and job.proc.returncode != 0
        assert "training cancelled" in screen_text(app)


async def test_no_training_pairs_is_refused_with_the_reason(tmp_path):
    db = tmp_path / "e.db"
    rid = make_reviewed_run(db)
    store = Store(db)
    for r in store.samples(rid):
        store.mark(r["id"], "discard")
    factory = fake_training_job(steps=2, delay=0.01)
    app = make_app(db, train_job_factory=factory)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:  # toasts drawn
        await pilot.press("4")
        await settle(app, pilot)
        assert "0 training pairs" in screen_text(app)
        assert not app._notifications
        await pilot.press("t")
        await settle(app, pilot)
        assert app.page("train").training_run is None and factory.jobs == []  # nothing started
        (note,) = app._notifications
        assert note.severity == "warning"
        assert note.message == "no training pairs: keep some samples first (3 Review)"

        # the toast is on the screen, reason and way out included (its lines wrap inside a
        # border drawn with "▌")
        def toast() -> str:
            lines = [ln for ln in screen_text(app).splitlines() if "▌" in ln]
            return " ".join(" ".join(lines).replace("▌", " ").split())

        await wait_until(pilot, lambda: toast(), what="the toast")
        assert toast() == note.message


async def test_training_defaults_follow_the_task_type_until_edited(tmp_path):
    """A classification run starts at the epochs the search chose for classification, not the
    generic default; parameters the person edits are kept."""
    from sgtui.training import EPOCHS_BY_TYPE, TrainParams

    db = tmp_path / "d.db"
    make_reviewed_run(db)  # the sentiment task: classification
    want = EPOCHS_BY_TYPE["classification"]
    assert want != TrainParams().epochs  # otherwise this test could not tell them apart
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        page = app.page("train")
        await wait_until(pilot, lambda: page.train_params.epochs == want, timeout=10)
        assert f"{want} epoch{'s' if want != 1 else ''} ·" in screen_text(app)
        page.train_params, page.params_edited = TrainParams(epochs=5), True
        page.show_run(page.run_id)  # reloading the run keeps what the person chose
        await settle(app, pilot)
        assert page.train_params.epochs == 5


async def test_a_server_run_without_local_weights_is_refused_and_one_with_them_trains_on_them(
    tmp_path,
):
    """A run generated through a server has a URL for a model: the Train page refuses it with
    the way out until weights are recorded (as `sgtui run --train-model` records them), then
    trains on those."""
    from sgtui.generator import TRAIN_MODEL

    db = tmp_path / "s.db"
    rid = make_reviewed_run(db)
    store = Store(db)
    local = store.run(rid)["model"]
    store.update_run(rid, model="http://127.0.0.1:9/v1#smol", backend="openai")
    factory = fake_training_job(steps=2, delay=0.01)
    app = make_app(db, train_job_factory=factory)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        await pilot.press("t")
        await settle(app, pilot)
        assert app.page("train").training_run is None and factory.jobs == []
        (note,) = app._notifications
        assert note.severity == "warning" and "generated through a server" in note.message
        assert f"sgtui train {rid} --model" in note.message

        store.add_artifact(rid, TRAIN_MODEL, local)
        await pilot.press("t")
        await training_finished(app, pilot)
        (job,) = factory.jobs
        argv = job.worker_argv
        assert argv[argv.index("--model") + 1] == local
