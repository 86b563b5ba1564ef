"""Starting and resuming synthesis runs: the glue between the CLI (or TUI) and the pipeline."""
from __future__ import annotations

import shlex
from pathlib import Path

from .errors import SgtuiError
from .interrupts import stopped_error
from .pipeline import Stopped, SynthesisRun
from .store import Store


def create_run(store: Store, task, params, model: str, backend: str) -> int:
    task_id = store.add_task(task)
    return store.create_run(task, task_id, params.to_dict(), model, backend)


def open_run(store: Store, args, load_task, resolve_model, params_from_args):
    """Create a run from CLI arguments, or reopen one with --resume. Returns (run id, generator)."""
    import backends
    if args.resume is not None:
        row = store.run(args.resume)
        if row["status"] == "done":
            raise SgtuiError(f"run {args.resume} is already complete", path=str(store.path),
                             fix="start a new run without --resume")
        model, backend = row["model"], row["backend"]
        if backend == "openai" and getattr(args, "base_url", None):
            # a restarted server may listen elsewhere: the URL given, the model stored
            served = model.split("#", 1)[1] if "#" in model else ""
            model = args.base_url + (f"#{served}" if served else "")
        run_id = args.resume
    else:
        task = load_task(args.task)
        if getattr(args, "backend", None) == "openai":
            model, backend = server_spec(args), "openai"
        else:
            model, backend = resolve_model(args.model, args.backend)
        params = params_from_args(args, task.type)
        if backend not in backends.names():
            raise SgtuiError(f"unknown backend {backend!r}", fix=f"use one of: {', '.join(backends.names())}")
        generator = backends.load_generator(backend, model, **_gen_options(args, backend))
        # a server's "URL#MODEL" as the backend settled it, so --resume finds it again
        run_id = create_run(store, task, params, getattr(generator, "model_path", model), backend)
        return run_id, generator
    # resuming: make sure nobody else holds the run before loading a model
    store.claim_run(run_id)
    store.release_run(run_id, "stopped")
    generator = backends.load_generator(backend, model, **_gen_options(args, backend))
    return run_id, generator


def server_spec(args) -> str:
    """--base-url [and --served-model] as the openai backend's model: "URL#MODEL"."""
    if not getattr(args, "base_url", None):
        raise SgtuiError("--backend openai needs the server's address",
                         fix="pass --base-url, e.g. --base-url http://127.0.0.1:8080/v1")
    served = getattr(args, "served_model", None)
    return args.base_url + (f"#{served}" if served else "")


def _gen_options(args, backend: str) -> dict:
    if backend == "transformers":
        return {"trust_remote_code": bool(getattr(args, "trust_remote_code", False))}
    if backend == "openai":
        from .models import resolve_model
        model = getattr(args, "model", None)
        concurrency = getattr(args, "concurrency", 4) or 4
        if concurrency < 1:
            raise SgtuiError(f"--concurrency must be at least 1 (got {concurrency})",
                             fix="pass --concurrency 4, or leave it out")
        # --model with a server: the local copy whose template and tokenizer the server runs
        return {"api_key_env": getattr(args, "api_key_env", None), "concurrency": concurrency,
                "template_from": resolve_model(model) if model else None}
    return {}


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
        from .paths import default_db_path
        default = default_db_path().resolve()
    except (SgtuiError, OSError):
        default = None
    if Path(store.path).resolve() != default:
        command += f" --db {shlex.quote(str(store.path))}"
    return command
