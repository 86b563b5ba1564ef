"""The command line. Headless commands never import Textual; bare `sgtui` opens the TUI."""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from . import cli_eval
from .config import DEFAULT_MODE, RunParams, cli_fields, range_text
from .cli_args import record_id
from .errors import SgtuiError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a .gguf file, a Hugging Face folder, ollama:NAME[:TAG], "
                                    "lmstudio:PUB/REPO or ORG/NAME in the local Hugging Face "
                                    "cache (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--backend", help="llama-cpp (default for .gguf), transformers, or openai (a "
                                     "server: --base-url)")
    g = p.add_argument_group("a server (--backend openai)")
    g.add_argument("--base-url", metavar="URL",
                   help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    g.add_argument("--served-model", metavar="NAME", help="the model's name on the server")
    g.add_argument("--api-key-env", metavar="VAR",
                   help="the environment variable that holds the API key (never the key)")
    g.add_argument("--concurrency", type=int, default=4, metavar="N",
                   help="parallel requests (default 4)")
    p.add_argument("--db", help="the SQLite database (default: $SGTUI_HOME/sgtui.db)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let transformers run code shipped with a model (off by default)")


def _add_run_params(p: argparse.ArgumentParser) -> None:
    """The RunParams fields that have a flag, from their one declaration (sgtui/config.py)."""
    g = p.add_argument_group("run parameters (defaults: the paper's, per task type)")
    for f in cli_fields():
        m = f.metadata
        if isinstance(f.default, bool):
            g.add_argument(m["flag"], dest=f.name, action=argparse.BooleanOptionalAction,
                           help=m["help"] or None)
        elif m["choices"]:
            g.add_argument(m["flag"], dest=f.name, choices=m["choices"], help=m["help"] or None)
        else:
            g.add_argument(m["flag"], dest=f.name, type=type(f.default),
                           metavar="N" if isinstance(f.default, int) else "X",
                           help=f"{m['help']} ({range_text(f)})".lstrip())


PARAM_KEYS = tuple(f.name for f in cli_fields())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sgtui", description="SELF-GUIDE in the terminal: a local "
                                 "model writes, filters and learns from its own task data.")
    sub = ap.add_subparsers(dest="command")

    p = sub.add_parser("generate", help="synthesise a training set for a task")
    p.add_argument("task", nargs="?", help="a task file (.toml / NI .json) or NI task folder")
    p.add_argument("--resume", type=record_id, metavar="RUN", help="continue a stopped or crashed run")
    _add_model_args(p)
    _add_run_params(p)
    p.add_argument("--quiet", action="store_true", help="print only the summary")

    p = sub.add_parser("samples", help="list or export a run's samples")
    p.add_argument("run", type=record_id)
    p.add_argument("--status", choices=["kept", "filtered", "training"],
                   help="training = what fine-tuning would use (honours marks)")
    p.add_argument("--export", metavar="OUT.jsonl")
    p.add_argument("--db")

    p = sub.add_parser("mark", help="keep or discard samples by hand")
    p.add_argument("mark", choices=["keep", "discard", "clear"])
    p.add_argument("ids", type=int, nargs="+")
    p.add_argument("--db")

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--db")

    p = sub.add_parser("search", help="the paper's 'one parameter fits all' grid search")
    p.add_argument("--tasks", required=True, help="comma-separated task files or NI task ids")
    p.add_argument("--grid", default=None, help="key=v1,v2;key=... over mode, gen_temperature, "
                   "rounds, small_filters, epochs")
    p.add_argument("--name", default="default", help="the search's name (resume by reusing it)")
    p.add_argument("--split", default="validation", help="NI split to score on")
    p.add_argument("--eval-limit", type=int, default=200,
                   help="rows each cell is scored on: the first N of a seeded shuffle of the "
                        "split, or all where fewer (default 200)")
    p.add_argument("--seeds", default="42,1,2",
                   help="training seeds: each cell synthesises once and trains once per seed; "
                        "it ranks by the mean over seeds (default 42,1,2)")
    p.add_argument("--db")

    p = sub.add_parser("doctor", help="show the bundled model, backends and data folder")

    p = sub.add_parser("tui", help="open the terminal UI")
    p.add_argument("--db")
    p.add_argument("--model")

    from . import cli_train
    cli_train.add_commands(sub, _add_model_args, _add_run_params)
    cli_eval.add_eval_command(sub, _add_model_args)
    from . import cli_plan
    cli_plan.add_plan_command(sub, _add_model_args)
    return ap


def _store(db: str | None):
    from .paths import default_db
    from .store import Store
    return Store(db or default_db())


def resolve_model(model: str | None, backend: str | None) -> tuple[str, str]:
    import backends
    from .paths import bundled_model
    from .models import resolve_model as by_name
    path = by_name(model) if model else str(bundled_model())
    return path, backend or backends.default_backend_for(path)


def params_from_args(args, task_type: str):
    """The run's parameters: the defaults for the task type with the flags given, validated
    (an SgtuiError naming the flag) before any model is loaded or run created."""
    mode = getattr(args, "mode", None) or DEFAULT_MODE
    return RunParams.defaults_for(task_type, mode).override(
        **{k: getattr(args, k, None) for k in PARAM_KEYS})


class Printer:
    """A live one-line progress display on a terminal; periodic lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, event) -> None:
        from .events import NoticeEvent, ProgressEvent
        if self.quiet:
            return
        if isinstance(event, NoticeEvent):
            print(("\n" if self.tty else "") + f"[{event.level}] {event.text}", file=sys.stderr)
        elif isinstance(event, ProgressEvent):
            now = time.monotonic()
            final = event.done >= event.total
            if not final and now - self.last < (0.2 if self.tty else 5.0):
                return
            self.last = now
            line = (f"{event.stage:>8}: {event.done}/{event.total}  kept {event.kept}  "
                    f"filtered {event.filtered}  {event.tokens_per_s:.0f} tok/s")
            if self.tty:
                print("\r" + line.ljust(78), end="\n" if final else "", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)


def print_summary(run_id: int, summary: dict, store) -> None:
    print(f"run {run_id}: {summary['candidates']} candidate inputs, {summary['inputs_kept']} "
          f"passed the input filters, {summary['kept']} annotated samples kept "
          f"({summary['training_pairs']} training pairs after marks)")
    for name, n in sorted(summary["filtered"].items(), key=lambda kv: -kv[1]):
        print(f"  filtered by {name:<14} {n}")
    for w in summary.get("warnings", []):
        print(f"  warning: {w}")
    print(f"  database: {store.path}")


def cmd_generate(args) -> int:
    from .task import load_task
    from .synthesis import open_run, run_synthesis
    store = _store(args.db)
    if args.resume is None and not args.task:
        raise SgtuiError("give a task file, or --resume RUN", fix="sgtui generate data/tasks/<file>.toml")
    run_id, generator = open_run(store, args, load_task, resolve_model, params_from_args)
    summary = run_synthesis(store, run_id, generator, Printer(args.quiet))
    print_summary(run_id, summary, store)
    return 0


def write_jsonl(path: Path, rows) -> None:
    """Write rows as JSON lines through a temporary file beside `path`, then rename: a failed
    export leaves whatever was at `path` as it was. Errors the person can fix are SgtuiErrors."""
    if path.is_dir():
        raise SgtuiError("this is a folder; the export needs a file name", path=str(path),
                         fix=f"pass a file path, e.g. --export {path / 'samples.jsonl'}")
    if not path.parent.is_dir():
        raise SgtuiError("the folder to export into does not exist", path=str(path),
                         fix=f"create it first (mkdir -p {path.parent}), or pick another path")
    if path.exists() and not path.is_file() and not path.is_char_device():
        raise SgtuiError("this is not a regular file; the export will not replace it",
                         path=str(path), fix="pass the path of a new or regular file")
    if path.is_char_device():  # /dev/stdout, /dev/null, /dev/full: write through, no rename
        with open(path, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == 28:
            raise
        raise SgtuiError(f"cannot write the export ({e.strerror or e})", path=str(path),
                         fix="pick a path in a folder you can write")


def cmd_samples(args) -> int:
    store = _store(args.db)
    store.run(args.run)
    if args.status == "training":
        rows = store.training_pairs(args.run)
    elif args.status:
        rows = store.samples(args.run, "status = ?", [args.status])
    else:
        rows = store.samples(args.run)
    if args.export:
        write_jsonl(Path(args.export), ({"input": r["input"], "output": r["output"],
                                         "status": r["status"], "filter": r["filter"],
                                         "mark": r["mark"], "id": r["id"]} for r in rows))
        print(f"wrote {len(rows)} samples to {args.export}")
        return 0
    for r in rows:
        flag = {"keep": "+", "discard": "-"}.get(r["mark"] or "", " ")
        why = r["filter"] or ""
        text = (r["input"] or "").replace("\n", " ")[:60]
        out = (r["output"] or "").replace("\n", " ")[:30]
        print(f"{r['id']:>6} {flag} r{r['round']:<3} {r['status']:<8} {why:<13} {text:<60} -> {out}")
    return 0


def cmd_mark(args) -> int:
    """Mark the samples that exist; name the ids that do not, and exit 2 if there are any."""
    store = _store(args.db)
    ids, mark = list(dict.fromkeys(args.ids)), None if args.mark == "clear" else args.mark
    missing = [sid for sid in ids if not store.mark(sid, mark)]
    print(f"marked {len(ids) - len(missing)} sample(s) {args.mark}")
    if missing:
        shown = ", ".join(str(sid) for sid in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise SgtuiError(f"no sample with id {shown}{more} in this database; "
                         f"{len(missing)} id(s) not marked", path=str(store.path),
                         fix="see a run's sample ids with `sgtui samples RUN`, or pass --db "
                             "with the database that holds them")
    return 0


def cmd_runs(args) -> int:
    store = _store(args.db)
    for r in store.runs():
        task = json.loads(r["task"])["name"]
        s = r["summary"]
        print(f"{r['id']:>4}  {r['status']:<9} {r['stage']:<9} {task:<24} kept {s.get('kept', '-'):<5}"
              f" {Path(r['model']).name}")
    return 0


def cmd_doctor(args) -> int:
    import backends
    from .paths import bundled_model, default_db, home
    try:
        print(f"bundled model: {bundled_model()}")
    except SgtuiError as e:
        print(f"bundled model: missing ({e.message})")
    for b in backends.info():
        print(f"backend {b.name:<21} {'ok' if b.available else 'unavailable: ' + b.reason}")
    try:
        print(f"data folder:   {home()}")
        print(f"database:      {default_db()}")
    except SgtuiError as e:
        print("data folder:   unusable (below)")
        print(f"sgtui: {e.render()}", file=sys.stderr)
        return 2
    return 0


def cmd_search(args) -> int:
    from .paths import bundled_model
    from .search import (DEFAULT_GRID, parse_grid, parse_seeds, ranking_text, real_measure,
                         run_search)
    if args.eval_limit < 1:
        raise SgtuiError(f"--eval-limit must be at least 1 (got {args.eval_limit})",
                         fix="give --eval-limit a number of rows, or leave it out (default 200)")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise SgtuiError("--tasks names no task", fix="give comma-separated task files or NI "
                         "task ids, e.g. --tasks task1195,task036")
    seeds = parse_seeds(args.seeds)
    configs = parse_grid(args.grid or DEFAULT_GRID)
    store = _store(args.db)
    max_epochs = max(c.get("epochs", 3) for c in configs)
    measure = real_measure(store, str(bundled_model()), args.split, args.eval_limit, {},
                           search=args.name, max_epochs=max_epochs)
    ranking = run_search(store, args.name, configs, tasks, measure, seeds)
    print(ranking_text(ranking))
    return 0


def cmd_tui(args) -> int:
    try:
        from .tui.app import run_app
    except ImportError as e:
        raise SgtuiError(f"the TUI is not available ({e})", fix="run ./install.sh")
    return run_app(db=getattr(args, "db", None), model=getattr(args, "model", None)) or 0


def _database_error(e: Exception, db: str | None) -> str | None:
    """A clear message for SQLite failures the person can act on; None for the rest (bugs)."""
    from .paths import default_db
    text = str(e)
    path = db or default_db()
    if "disk is full" in text:  # SQLITE_FULL: "database or disk is full"
        return (f"{path}: the disk is full; everything committed so far is kept.\n"
                "  fix: free some space, then resume the run (sgtui generate --resume RUN)")
    if "readonly" in text or "read-only" in text:
        return (f"{path}: the database is read-only, so this command cannot write to it\n"
                "  fix: make it and its folder writable (chmod u+w), or copy the database "
                "somewhere writable and pass --db with the copy")
    if "malformed" in text or "not a database" in text:
        return (f"{path}: the database is damaged ({text})\n  fix: restore a backup, or "
                "salvage it with `sqlite3 DB .recover`, or pass --db to use another database")
    if "locked" in text or "busy" in text:
        return (f"{path}: the database stayed locked by another process ({text})\n"
                "  fix: wait for the other sgtui process to finish, then try again")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"generate": cmd_generate, "samples": cmd_samples, "mark": cmd_mark,
                "runs": cmd_runs, "doctor": cmd_doctor, "search": cmd_search, "tui": cmd_tui, None: cmd_tui,
                "eval": cli_eval.cmd_eval}
    from . import cli_train
    handlers.update(cli_train.HANDLERS)
    from . import cli_plan
    handlers["plan"] = cli_plan.cmd_plan
    from .interrupts import exit_code_of, interrupted_message, signals_interrupt
    try:
        # SIGTERM stops a headless command as Ctrl-C does (the TUI handles its own keys)
        with signals_interrupt(args.command not in ("tui", None)):
            code = handlers[args.command](args)
    except SgtuiError as e:
        print(f"sgtui: {e.render()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM outside a run (RunStopped names one)
        print(f"\nsgtui: {interrupted_message(args, e)}", file=sys.stderr)
        return exit_code_of(e)
    except BrokenPipeError:
        # `sgtui runs | head -1`: the reader has gone; stop quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            print(f"sgtui: the disk is full ({e.filename or 'database'}); everything committed "
                  "so far is kept.\n  fix: free some space, then resume the run", file=sys.stderr)
            return 2
        raise
    except sqlite3.DatabaseError as e:
        message = _database_error(e, getattr(args, "db", None))
        if message is None:
            raise
        print(f"sgtui: {message}", file=sys.stderr)
        return 2
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
