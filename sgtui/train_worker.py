"""The training child process: `python -m sgtui.train_worker --db DB --run RUN [options]`.

Stdout carries only JSON lines (one event each: start, progress, checkpoint, done, error); the
same progress rows go to the store's train_progress table. Library chatter goes to stderr, which
TrainingJob sends to the run's train.log. Exit codes: 0 done, 2 a SgtuiError, 3 out of memory.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable, TextIO

from .errors import SgtuiError
from .training import (TrainParams, add_param_args, adapter_dir, chat_format, checkpoints_dir,
                       params_from_args, read_data, render_pairs, run_dir, training_pairs,
                       write_data)

DB_EVERY_S = 1.0
OOM_FIX = "train with a smaller --batch-size (e.g. 2) or --max-len (e.g. 512)"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sgtui.train_worker")
    ap.add_argument("--db", required=True)
    ap.add_argument("--run", type=int, required=True)
    ap.add_argument("--resume", action="store_true",
                    help="continue from the last epoch checkpoint (its parameters win)")
    ap.add_argument("--model", help="the base model (default: the run's model)")
    ap.add_argument("--trust-remote-code", action="store_true")
    add_param_args(ap)
    return ap


def _json_stdout() -> TextIO:
    """Keep the real stdout for JSON lines and send everything else written to fd 1 (print
    calls in libraries, llama.cpp's C logging) to stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lock(path: Path, run_id: int) -> None:
    if path.exists():
        try:
            pid = int(path.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and pid != os.getpid() and _pid_alive(pid):
            raise SgtuiError(f"run {run_id} is already training in process {pid}", path=str(path),
                             fix="wait for it, or stop that process first")
    path.write_text(str(os.getpid()))


class Reporter:
    """Prints every event as a JSON line; writes progress rows to SQLite at most every second
    (and always at an epoch's end), printing exactly the rows it writes."""

    def __init__(self, out: TextIO, store, run_id: int):
        self.out, self.store, self.run_id = out, store, run_id
        self.last_db = 0.0

    def print(self, event: dict) -> None:
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()

    def __call__(self, event: dict) -> None:
        if event.get("event") != "progress":
            self.print(event)
            return
        now = time.monotonic()
        last = event["step"] == event["total_steps"]
        if not (event["epoch_end"] or last or now - self.last_db >= DB_EVERY_S):
            return
        self.last_db = now
        self.store.add_progress(self.run_id, **{k: event[k] for k in (
            "step", "epoch", "loss", "tokens_per_s", "eta_s", "total_steps")})
        self.print(event)


def train(args, emit: Callable[[dict], None], store) -> dict:
    from backends.training import TrainSpec, default_cache, latest_checkpoint, select_trainer
    from .task import Task

    run_id = args.run
    row = store.run(run_id)
    rdir = run_dir(run_id)
    rdir.mkdir(parents=True, exist_ok=True)
    ckdir = checkpoints_dir(run_id)
    data_path, meta_path = rdir / "train_data.jsonl", rdir / "train_meta.json"
    _take_lock(rdir / "train.pid", run_id)
    ck = latest_checkpoint(ckdir) if args.resume else None
    if args.resume and (ck is None or not data_path.is_file() or not meta_path.is_file()):
        emit({"event": "notice", "text": "no checkpoint to resume from; starting from the "
                                         "beginning"})
        ck = None
    meta = json.loads(meta_path.read_text()) if ck is not None else None
    params = TrainParams.from_dict(meta["params"]) if meta else params_from_args(args)
    trainer = select_trainer(params.trainer, params.precision)
    trainer.prepare()
    if meta is not None:
        base, add_bos = meta["base_model"], bool(meta["add_bos"])
        texts = read_data(data_path)
    else:
        base = args.model or row["model"]
        task = Task.from_dict(json.loads(row["task"]), f"run {run_id}")
        pairs = training_pairs(store, run_id, params.seeds_only)
        fmt = chat_format(base, args.trust_remote_code)
        add_bos = fmt.add_bos
        texts = render_pairs(task, pairs, fmt)
        shutil.rmtree(ckdir, ignore_errors=True)
        store.db["train_progress"].delete_where("run_id = ?", [run_id])
        write_data(data_path, texts)
        meta_path.write_text(json.dumps({"base_model": base, "add_bos": add_bos,
                                         "params": params.to_dict(), "pairs": len(pairs)}))
    spec = TrainSpec(base_model=base, texts=texts, params=params, out_dir=adapter_dir(run_id),
                     checkpoints=ckdir, add_bos=add_bos, resume=ck is not None,
                     trust_remote_code=args.trust_remote_code, cache_dir=default_cache())
    result = trainer.train(spec, emit)
    info = {"base_model": base, "backend": trainer.name, "params": params.to_dict(),
            "examples": result.n_examples, "dropped": result.dropped, "steps": result.steps,
            "tokens_per_s": result.tokens_per_s}
    store.add_artifact(run_id, "adapter", str(result.adapter), info)
    return {"event": "done", "adapter": str(result.adapter), **info,
            "final_loss": result.losses[-1] if result.losses else None}


def _is_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = _json_stdout()
    from .store import Store

    # SIGTERM (cancel) ends through Python, so the lock is released; memory goes with the process
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    store = None
    rdir = run_dir(args.run)
    try:
        store = Store(args.db)
        reporter = Reporter(out, store, args.run)
        reporter(train(args, reporter, store))
        return 0
    except SgtuiError as e:
        Reporter(out, None, args.run).print({"event": "error", "message": e.message,
                                             "path": e.path, "fix": e.fix})
        return 2
    except Exception as e:  # noqa: BLE001 - reported to the parent, traceback kept in the log
        if not _is_oom(e):
            raise
        where = "GPU" if "cuda" in str(e).lower() or "gpu" in str(e).lower() else "machine"
        Reporter(out, None, args.run).print({
            "event": "error", "kind": "oom",
            "message": f"training ran out of memory on the {where} (the last epoch checkpoint "
                       "is kept)", "path": None, "fix": OOM_FIX + ", then resume with --resume"})
        return 3
    finally:
        lock = rdir / "train.pid"
        try:
            if lock.exists() and lock.read_text().strip() == str(os.getpid()):
                lock.unlink()
        except OSError:
            pass
        if store is not None:
            store.close()
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
