"""Starting and resuming synthesis runs: the glue between the CLI (or TUI) and the pipeline."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

import backends

from .config import RunParams
from .errors import SgtuiError
from .generator import SERVER, open_generator
from .interrupts import stopped_error
from .paths import default_db_path
from .pipeline import Stopped, SynthesisRun
from .store import Store
from .task import Task


def create_run(store: Store, task, params, model: str, backend: str) -> int:
    task_id = store.add_task(task)
    return store.create_run(task, task_id, params.to_dict(), model, backend)


def open_run(
    store: Store,
    task: Task,
    params: RunParams,
    model: str,
    backend: str,
    check: Callable[[object], None] | None = None,
    **options,
) -> tuple[int, object]:
    """Load the model, then create a run of `task` with `params`. Returns (run id, generator).
    `check(generator)` may refuse (raise) before the run is created; the model is closed then.
    `options` go to the backend (sgtui.generator.open_generator)."""
    if backend not in backends.names():
        raise SgtuiError(
            f"unknown backend {backend!r}", fix=f"use one of: {', '.join(backends.names())}"
        )
    generator = open_generator(model, backend, **options)
    if check is not None:
        try:
            check(generator)
        except BaseException:
            generator.close()
            raise
    # a server's "URL#MODEL" as the backend settled it, so a resumed run finds it again
    run_id = create_run(store, task, params, getattr(generator, "model_path", model), backend)
    return run_id, generator


def reopen_run(
    store: Store, run_id: int, base_url: str | None = None, **options
) -> tuple[int, object]:
    """Reopen a stopped or crashed run to continue it. Returns (run id, generator). base_url: a
    server run's new address (a restarted server may listen elsewhere; the model stored)."""
    row = store.run(run_id)
    if row["status"] == "done":
        raise SgtuiError(
            f"run {run_id} is already complete",
            path=str(store.path),
            fix="start a new run without --resume",
        )
    model, backend = row["model"], row["backend"]
    if backend == SERVER and base_url:
        served = model.split("#", 1)[1] if "#" in model else ""
        model = base_url + (f"#{served}" if served else "")
    # make sure nobody else holds the run before loading a model
    store.claim_run(run_id)
    store.release_run(run_id, "stopped")
    return run_id, open_generator(model, backend, **options)


def run_synthesis(store: Store, run_id: int, generator, emit) -> dict:
    """Run (or finish) a synthesis run in this thread.

    Ctrl-C, or SIGTERM under sgtui.interrupts.signals_interrupt (the CLI installs it), stops
    it at once: the run is marked stopped and RunStopped names the command that continues it."""
    try:
        return SynthesisRun(store, run_id, generator, emit).run()
    except (Stopped, KeyboardInterrupt) as e:
        raise stopped_error(run_id, e, "generation", resume_command(store, run_id)) from None


def resume_command(store: Store, run_id: int) -> str:
    """`sgtui generate --resume ID`, with --db when the run is not in the default database."""
    command = f"sgtui generate --resume {run_id}"
    try:
        default = default_db_path().resolve()
    except (SgtuiError, OSError):
        default = None
    if Path(store.path).resolve() != default:
        command += f" --db {shlex.quote(str(store.path))}"
    return command
