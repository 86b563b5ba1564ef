"""The command line. Headless commands never import Textual; bare `sgtui` opens the TUI."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

import backends
from backends.llama_cpp import decode_check

from . import cli_eval, cli_plan, cli_train
from .cli_args import (
    Printer,
    add_model_args,
    add_run_params,
    open_run_from_args,
    print_summary,
    record_id,
    store_of,
)
from .errors import SgtuiError
from .interrupts import exit_code_of, interrupted_message, signals_interrupt
from .paths import bundled_model, default_db, home
from .search import DEFAULT_GRID, parse_grid, parse_seeds, ranking_text, real_measure, run_search
from .store import task_fields
from .synthesis import run_synthesis


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sgtui",
        description="SELF-GUIDE in the terminal: a local "
        "model writes, filters and learns from its own task data.",
    )
    sub = ap.add_subparsers(dest="command")

    p = sub.add_parser("generate", help="synthesise a training set for a task")
    p.add_argument("task", nargs="?", help="a task file (.toml / NI .json) or NI task folder")
    p.add_argument(
        "--resume", type=record_id, metavar="RUN", help="continue a stopped or crashed run"
    )
    add_model_args(p)
    add_run_params(p)
    p.add_argument("--quiet", action="store_true", help="print only the summary")

    p = sub.add_parser("samples", help="list or export a run's samples")
    p.add_argument("run", type=record_id)
    p.add_argument(
        "--status",
        choices=["kept", "filtered", "training"],
        help="training = what fine-tuning would use (honours marks)",
    )
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
    p.add_argument(
        "--grid",
        default=None,
        help="key=v1,v2;key=... over mode, gen_temperature, rounds, small_filters, epochs",
    )
    p.add_argument("--name", default="default", help="the search's name (resume by reusing it)")
    p.add_argument("--split", default="validation", help="NI split to score on")
    p.add_argument(
        "--eval-limit",
        type=int,
        default=200,
        help="rows each cell is scored on: the first N of a seeded shuffle of the "
        "split, or all where fewer (default 200)",
    )
    p.add_argument(
        "--seeds",
        default="42,1,2",
        help="training seeds: each cell synthesises once and trains once per seed; "
        "it ranks by the mean over seeds (default 42,1,2)",
    )
    p.add_argument("--db")

    p = sub.add_parser("doctor", help="show the bundled model, backends and data folder")

    p = sub.add_parser("tui", help="open the terminal UI")
    p.add_argument("--db")
    p.add_argument("--model")

    cli_train.add_commands(sub)
    cli_eval.add_eval_command(sub)
    cli_plan.add_plan_command(sub)
    return ap


def cmd_generate(args) -> int:
    store = store_of(args.db)
    if args.resume is None and not args.task:
        raise SgtuiError(
            "give a task file, or --resume RUN", fix="sgtui generate data/tasks/<file>.toml"
        )
    run_id, generator = open_run_from_args(store, args)
    summary = run_synthesis(store, run_id, generator, Printer(args.quiet))
    print_summary(run_id, summary, store)
    return 0


def write_jsonl(path: Path, rows) -> None:
    """Write rows as JSON lines through a temporary file beside `path`, then rename: a failed
    export leaves whatever was at `path` as it was. Errors the person can fix are SgtuiErrors."""
    if path.is_dir():
        raise SgtuiError(
            "this is a folder; the export needs a file name",
            path=str(path),
            fix=f"pass a file path, e.g. --export {path / 'samples.jsonl'}",
        )
    if not path.parent.is_dir():
        raise SgtuiError(
            "the folder to export into does not exist",
            path=str(path),
            fix=f"create it first (mkdir -p {path.parent}), or pick another path",
        )
    if path.exists() and not path.is_file() and not path.is_char_device():
        raise SgtuiError(
            "this is not a regular file; the export will not replace it",
            path=str(path),
            fix="pass the path of a new or regular file",
        )
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
        raise SgtuiError(
            f"cannot write the export ({e.strerror or e})",
            path=str(path),
            fix="pick a path in a folder you can write",
        )


def cmd_samples(args) -> int:
    store = store_of(args.db)
    store.run(args.run)
    if args.status == "training":
        rows = store.training_pairs(args.run)
    elif args.status:
        rows = store.samples(args.run, "status = ?", [args.status])
    else:
        rows = store.samples(args.run)
    if args.export:
        write_jsonl(
            Path(args.export),
            (
                {
                    "input": r["input"],
                    "output": r["output"],
                    "status": r["status"],
                    "filter": r["filter"],
                    "mark": r["mark"],
                    "id": r["id"],
                }
                for r in rows
            ),
        )
        print(f"wrote {len(rows)} samples to {args.export}")
        return 0
    for r in rows:
        flag = {"keep": "+", "discard": "-"}.get(r["mark"] or "", " ")
        why = r["filter"] or ""
        text = (r["input"] or "").replace("\n", " ")[:60]
        out = (r["output"] or "").replace("\n", " ")[:30]
        print(
            f"{r['id']:>6} {flag} r{r['round']:<3} {r['status']:<8} {why:<13} {text:<60} -> {out}"
        )
    return 0


def cmd_mark(args) -> int:
    """Mark the samples that exist; name the ids that do not, and exit 2 if there are any."""
    store = store_of(args.db)
    ids, mark = list(dict.fromkeys(args.ids)), None if args.mark == "clear" else args.mark
    missing = [sid for sid in ids if not store.mark(sid, mark)]
    print(f"marked {len(ids) - len(missing)} sample(s) {args.mark}")
    if missing:
        shown = ", ".join(str(sid) for sid in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise SgtuiError(
            f"no sample with id {shown}{more} in this database; {len(missing)} id(s) not marked",
            path=str(store.path),
            fix="see a run's sample ids with `sgtui samples RUN`, or pass --db "
            "with the database that holds them",
        )
    return 0


def cmd_runs(args) -> int:
    store = store_of(args.db)
    for r in store.runs():
        task = task_fields(r)["name"]
        s = r["summary"]
        print(
            f"{r['id']:>4}  {r['status']:<9} {r['stage']:<9} {task:<24} kept {s.get('kept', '-'):<5}"
            f" {Path(r['model']).name}"
        )
    return 0


def llama_decode_problem() -> tuple[bool, str | None]:
    """Whether the llama.cpp build was checked on the bundled model (not when either is
    missing: doctor lists those above), and what stopped it decoding, or None."""
    if not any(b.name == "llama-cpp" and b.available for b in backends.info()):
        return False, None
    try:
        model = bundled_model()
    except SgtuiError:
        return False, None
    return True, decode_check(model)


def cmd_doctor(args) -> int:
    try:
        print(f"bundled model: {bundled_model()}")
    except SgtuiError as e:
        print(f"bundled model: missing ({e.message})")
    for b in backends.info():
        print(f"backend {b.name:<21} {'ok' if b.available else 'unavailable: ' + b.reason}")
    checked, broken = llama_decode_problem()
    if checked and not broken:
        print(f"{'llama.cpp decode':<30}ok")
    if broken:
        print(f"{'llama.cpp decode':<30}FAILED: {broken}")
        print(
            "sgtui: llama.cpp cannot decode on this machine; run ./install.sh again: it "
            "rebuilds llama-cpp-python (without the AMX kernels on a CPU that has them)",
            file=sys.stderr,
        )
        return 1
    try:
        print(f"data folder:   {home()}")
        print(f"database:      {default_db()}")
    except SgtuiError as e:
        print("data folder:   unusable (below)")
        print(f"sgtui: {e.render()}", file=sys.stderr)
        return 2
    return 0


def cmd_search(args) -> int:
    if args.eval_limit < 1:
        raise SgtuiError(
            f"--eval-limit must be at least 1 (got {args.eval_limit})",
            fix="give --eval-limit a number of rows, or leave it out (default 200)",
        )
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise SgtuiError(
            "--tasks names no task",
            fix="give comma-separated task files or NI task ids, e.g. --tasks task1195,task036",
        )
    seeds = parse_seeds(args.seeds)
    configs = parse_grid(args.grid or DEFAULT_GRID)
    store = store_of(args.db)
    max_epochs = max(c.get("epochs", 3) for c in configs)
    measure = real_measure(
        store,
        str(bundled_model()),
        args.split,
        args.eval_limit,
        {},
        search=args.name,
        max_epochs=max_epochs,
    )
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
    text = str(e)
    path = db or default_db()
    if "disk is full" in text:  # SQLITE_FULL: "database or disk is full"
        return (
            f"{path}: the disk is full; everything committed so far is kept.\n"
            "  fix: free some space, then resume the run (sgtui generate --resume RUN)"
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"{path}: the database is read-only, so this command cannot write to it\n"
            "  fix: make it and its folder writable (chmod u+w), or copy the database "
            "somewhere writable and pass --db with the copy"
        )
    if "malformed" in text or "not a database" in text:
        return (
            f"{path}: the database is damaged ({text})\n  fix: restore a backup, or "
            "salvage it with `sqlite3 DB .recover`, or pass --db to use another database"
        )
    if "locked" in text or "busy" in text:
        return (
            f"{path}: the database stayed locked by another process ({text})\n"
            "  fix: wait for the other sgtui process to finish, then try again"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "generate": cmd_generate,
        "samples": cmd_samples,
        "mark": cmd_mark,
        "runs": cmd_runs,
        "doctor": cmd_doctor,
        "search": cmd_search,
        "tui": cmd_tui,
        None: cmd_tui,
        "eval": cli_eval.cmd_eval,
    }
    handlers.update(cli_train.HANDLERS)
    handlers["plan"] = cli_plan.cmd_plan
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
            print(
                f"sgtui: the disk is full ({e.filename or 'database'}); everything committed "
                "so far is kept.\n  fix: free some space, then resume the run",
                file=sys.stderr,
            )
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
