"""The training child process: `python -m sgtui.train_worker --db DB --run RUN [options]`.

Stdout carries only JSON lines (one event each: start, progress, checkpoint, done, error); the
same progress rows go to the store's train_progress table. Library chatter goes to stderr, which
TrainingJob sends to the run's train.log. Exit codes: 0 done, 2 a SgtuiError, 3 out of memory,
4 the parent process went away (--parent).

Started by TrainingJob, the worker gets --parent PID and a stdin pipe that the parent holds open:
it dies with its parent (a parent-death signal on Linux, and EOF on that pipe everywhere), so a
killed `sgtui train` or TUI never leaves a training running on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

from backends.training import TrainSpec, default_cache, latest_checkpoint, select_trainer

from . import vram
from .errors import SgtuiError
from .models import resolve_model
from .store import Store, task_of
from .training import (
    TrainParams,
    adapter_dir,
    chat_format,
    checkpoints_dir,
    interrupted_training,
    read_data,
    render_pairs,
    run_dir,
    seed_texts,
    training_pairs,
    write_data,
)

DB_EVERY_S = 1.0
OOM_FIX = "train with a smaller --batch-size (e.g. 2) or --max-len (e.g. 512)"
EXIT_PARENT_GONE = 4
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sgtui.train_worker")
    ap.add_argument("--db", required=True)
    ap.add_argument("--run", type=int, required=True)
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last epoch checkpoint (its parameters win)",
    )
    ap.add_argument("--model", help="the base model (default: the run's model)")
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument(
        "--parent",
        type=int,
        metavar="PID",
        help="the process that started this one and holds stdin open as a pipe: "
        "exit as soon as it is gone",
    )
    ap.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="the training parameters as JSON (TrainParams.to_dict)",
    )
    return ap


# -- dying with the parent --------------------------------------------------------------------
def _set_parent_death_signal() -> None:
    """Linux: the kernel sends SIGKILL when the parent dies, even while this process is deep in
    C code loading a model (where neither a Python signal handler nor the stdin watcher, which
    needs the GIL, may run soon). The checkpoints are written to a temporary folder and renamed,
    so a kill at any moment leaves the last epoch's checkpoint whole."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the stdin watcher still ends this process


def _parent_gone(release: Callable[[], None]) -> None:
    """The parent is gone: say so in train.log (no traceback), release the run's lock and stop
    at once. Nothing is lost that a kill would not lose: the last epoch checkpoint stays."""
    try:
        sys.stderr.write(
            "sgtui train_worker: the parent process is gone; stopping (the last "
            "epoch checkpoint is kept; continue with sgtui train RUN --resume)\n"
        )
        sys.stderr.flush()
        release()
    finally:
        os._exit(EXIT_PARENT_GONE)


def _watch_stdin(release: Callable[[], None]) -> None:
    """The parent holds the other end of our stdin and never writes to it: end of file means it
    has exited, however it died. Works on every platform; a thread, so it also fires while the
    main thread is loading the model."""
    fd = sys.stdin.fileno()

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        _parent_gone(release)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def die_with_parent(parent: int, release: Callable[[], None]) -> None:
    """Tie this process's life to `parent`'s: the parent-death signal, then a check that the
    parent did not die before it was set (we would have been adopted by another process), then
    the stdin watcher. Ctrl-C in a terminal reaches the whole process group: the parent handles
    it and cancels this process with SIGTERM, so SIGINT is ignored here."""
    _set_parent_death_signal()
    if os.getppid() != parent:
        _parent_gone(release)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_stdin(release)


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
            raise SgtuiError(
                f"run {run_id} is already training in process {pid}",
                path=str(path),
                fix="wait for it, or stop that process first",
            )
    path.write_text(str(os.getpid()))


def _release_lock(lock: Path) -> None:
    """Remove the run's train.pid if this process holds it."""
    try:
        if lock.exists() and lock.read_text().strip() == str(os.getpid()):
            lock.unlink()
    except OSError:
        pass


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
        self.store.add_progress(
            self.run_id,
            **{
                k: event[k]
                for k in ("step", "epoch", "loss", "tokens_per_s", "eta_s", "total_steps")
            },
        )
        self.print(event)


def _checkpoint_step(ck: Path | None) -> int:
    """The step an epoch checkpoint was saved at (0: no checkpoint)."""
    if ck is None:
        return 0
    return int(json.loads((ck / "state.json").read_text())["step"])


def _resume_notice(run_id: int, rdir: Path, meta: dict | None, ck: Path | None) -> str:
    if meta is None:
        return (
            f"run {run_id} has no interrupted training to resume (no train_meta.json and "
            f"train_data.jsonl in {rdir}); starting a new training with the parameters given"
        )
    p = meta["params"]
    kept = f"epochs {p['epochs']}, lr {p['lr']}, batch size {p['batch_size']}"
    if ck is None:
        return (
            f"the interrupted training of run {run_id} stopped before its first epoch "
            f"checkpoint; starting it again from step 0 with its data and parameters "
            f"({kept})"
        )
    return (
        f"continuing the interrupted training of run {run_id} with its data and parameters ({kept})"
    )


def train(args, emit: Callable[[dict], None], store) -> dict:

    run_id = args.run
    row = store.run(run_id)
    rdir = run_dir(store, run_id)
    rdir.mkdir(parents=True, exist_ok=True)
    ckdir = checkpoints_dir(store, run_id)
    data_path, meta_path = rdir / "train_data.jsonl", rdir / "train_meta.json"
    _take_lock(rdir / "train.pid", run_id)
    meta = interrupted_training(rdir) if args.resume else None
    ck = latest_checkpoint(ckdir) if meta is not None else None
    if args.resume:
        emit({"event": "notice", "text": _resume_notice(run_id, rdir, meta, ck)})
    params = TrainParams.from_dict(meta["params"] if meta else args.params)
    trainer = select_trainer(params.trainer, params.precision)
    trainer.prepare()
    plan = None
    if meta is not None:
        # the interrupted training's data, base model and parameters, so the result is the one
        # it would have given; before its first checkpoint it starts again from step 0
        base, add_bos = meta["base_model"], bool(meta["add_bos"])
        texts = read_data(data_path)
        done_step = _checkpoint_step(ck)
        if ck is None:
            shutil.rmtree(ckdir, ignore_errors=True)
        # rows the killed training wrote after its last checkpoint are written again below
        store.clear_progress(run_id, after_step=done_step)
    else:
        base = resolve_model(args.model) if args.model else row["model"]
        task = task_of(row)
        pairs = training_pairs(store, run_id, params.seeds_only)
        fmt = chat_format(base, args.trust_remote_code)
        add_bos = fmt.add_bos
        texts = render_pairs(task, pairs, fmt)
        if params.seed_repeats and not params.seeds_only:
            texts += seed_texts(task, fmt, params.seed_repeats)
        if trainer.uses_cuda:  # a resumed training keeps the settings it had (meta's)
            params, plan = fit_to_card(trainer, base, params, emit, texts)
        shutil.rmtree(ckdir, ignore_errors=True)
        store.clear_progress(run_id)
        write_data(data_path, texts)
        meta_path.write_text(
            json.dumps(
                {
                    "base_model": base,
                    "add_bos": add_bos,
                    "params": params.to_dict(),
                    "pairs": len(pairs),
                }
            )
        )
    spec = TrainSpec(
        base_model=base,
        texts=texts,
        params=params,
        out_dir=adapter_dir(store, run_id),
        checkpoints=ckdir,
        add_bos=add_bos,
        resume=ck is not None,
        trust_remote_code=args.trust_remote_code,
        cache_dir=default_cache(),
    )
    result = trainer.train(spec, emit)
    info = {
        "base_model": base,
        "backend": trainer.name,
        "params": params.to_dict(),
        "examples": result.n_examples,
        "dropped": result.dropped,
        "steps": result.steps,
        "tokens_per_s": result.tokens_per_s,
    }
    if trainer.uses_cuda:
        import torch

        # what the planner is checked against (bench/gpu_check.sh): torch's own peak, without
        # the CUDA context, which the plan's "CUDA context" line holds
        info["gpu_peak_allocated"] = int(torch.cuda.max_memory_allocated())
        if plan is not None:
            info["gpu_planned"] = plan.breakdown.total
            info["gpu_planned_context"] = plan.breakdown.components.get("CUDA context", 0)
    store.add_artifact(run_id, "adapter", str(result.adapter), info)
    return {
        "event": "done",
        "adapter": str(result.adapter),
        **info,
        "final_loss": result.losses[-1] if result.losses else None,
    }


def fit_to_card(
    trainer, base: str, params: TrainParams, emit, texts: Sequence[tuple[str, str]] = ()
) -> tuple[TrainParams, object]:
    """The VRAM planner's settings for this card (sgtui/vram.py): the batch size and maximum
    length lowered, and gradient checkpointing turned on, where the ones asked for would not
    fit. The card is what is free on it now plus the CUDA context the plan counts itself (a
    generator may hold part of it), or SGTUI_GPU_MEM GB. `texts` (prompt, answer): the longest
    example bounds how far max_len may be lowered, and the longest answer is where the peft
    loss computes logits; both in tokens estimated at 3 characters each, which overestimates
    English (about 4), so the plan errs towards memory."""
    given = os.environ.get("SGTUI_GPU_MEM", "").strip()
    try:
        if given:
            card = int(float(given) * vram.GiB)
        else:
            import torch

            card = int(torch.cuda.mem_get_info()[0]) + vram.CUDA_CONTEXT
    except ValueError:
        raise SgtuiError(
            f"SGTUI_GPU_MEM must be a number of GB (got {given!r})",
            fix="set it to the memory training may use, e.g. 7.5",
        ) from None
    try:
        dims = vram.model_dims(base)
    except SgtuiError as e:  # the training will say what is wrong with the model itself
        emit({"event": "notice", "text": f"no memory plan: {e.message}"})
        return params, None
    longest = max((len(p) + len(a) for p, a in texts), default=0) // 3 + 8
    answer = max((len(a) for _, a in texts), default=0) // 3 + 2
    peft = trainer.name != "unsloth"
    wanted = vram.TrainSettings.from_params(
        params,
        checkpointing=bool(trainer.quantized_4bit),
        quant_4bit=bool(trainer.quantized_4bit),
        trainer="peft" if peft else "unsloth",
        loss_tokens=answer if peft and texts else None,
    )
    plan = vram.fit_training(
        dims, card, wanted, min_len=min(params.max_len, max(vram.MIN_MAX_LEN, longest))
    )
    s = plan.settings
    if s.checkpointing and not wanted.checkpointing:
        trainer.checkpointing = True
    if plan.changes or not plan.fits:
        emit({"event": "notice", "text": "memory plan: " + plan.text()})
    return params.override(batch_size=s.batch_size, max_len=s.max_len), plan


def _is_oom(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rdir: Path | None = None  # the run folder, once known; its lock is released on every path

    def release_lock() -> None:
        if rdir is not None:
            _release_lock(rdir / "train.pid")

    if args.parent:  # first, so that not even the imports below outlive the parent
        die_with_parent(args.parent, release_lock)
    out = _json_stdout()

    # SIGTERM (cancel) ends through Python, so the lock is released; memory goes with the process
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    store = None
    rdir = run_dir(args.db, args.run)
    try:
        store = Store(args.db)
        reporter = Reporter(out, store, args.run)
        reporter(train(args, reporter, store))
        return 0
    except SgtuiError as e:
        Reporter(out, None, args.run).print(
            {"event": "error", "message": e.message, "path": e.path, "fix": e.fix}
        )
        return 2
    except Exception as e:  # noqa: BLE001 - reported to the parent, traceback kept in the log
        if not _is_oom(e):
            raise
        where = "GPU" if "cuda" in str(e).lower() or "gpu" in str(e).lower() else "machine"
        Reporter(out, None, args.run).print(
            {
                "event": "error",
                "kind": "oom",
                "message": f"training ran out of memory on the {where} (the last epoch checkpoint "
                "is kept)",
                "path": None,
                "fix": OOM_FIX + ", then resume with --resume",
            }
        )
        return 3
    finally:
        release_lock()
        if store is not None:
            store.close()
        signal.signal(signal.SIGTERM, previous)


def _exit(code: int) -> None:
    """Cancelled (SIGTERM): the lock is released and checkpoints are whole, so leave at once;
    a normal interpreter exit with torch loaded takes seconds."""
    if code == 143:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    try:
        _code = main()
    except SystemExit as _e:
        _code = _e.code if isinstance(_e.code, int) else 1
    _exit(_code)
