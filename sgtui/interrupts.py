"""Ctrl-C and SIGTERM: stop the command at once, keep what is saved, say how to continue.

`signals_interrupt` makes SIGINT and SIGTERM raise `Interrupted`, a KeyboardInterrupt, so
every clean-up written for Ctrl-C (the synthesis run marking itself stopped, the training job
cancelling its child) runs for SIGTERM too. (Before, SIGTERM only set a flag that the run
looked at after each finished vote of n answers: more than 30 s.) The CLI then exits 128 +
the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report a process killed by
that signal.

Python runs a signal handler between two bytecodes, so not during one long call into native
code (a llama.cpp decode of a 500-token prompt chunk can take seconds on a busy CPU), and an
exception raised in a callback that native code makes is lost. Such a call runs inside
`native_call()`: there the handler only records the signal, the native code polls
`pending()` (llama.cpp's abort callback, between two graph nodes) and returns early, and
Interrupted is raised when the call is over.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import threading
from collections.abc import Iterator

from .errors import SgtuiError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a command ran."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code_of(exc: BaseException) -> int:
    """128 + the signal's number; a plain KeyboardInterrupt is SIGINT's 130."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


class RunStopped(SgtuiError):
    """A run stopped by a signal. It can be continued; the CLI exits 128 + the signal."""

    def __init__(
        self, message: str, *, exit_code: int = 130, path: str | None = None, fix: str | None = None
    ):
        super().__init__(message, path=path, fix=fix)
        self.exit_code = exit_code


def stopped_error(run_id: int, exc: BaseException, stage: str, fix: str) -> RunStopped:
    """The message for a run stopped by `exc` during `stage`, naming the command that
    continues it."""
    name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
    return RunStopped(
        f"run {run_id} stopped ({name}) during {stage}; everything done so far is saved",
        exit_code=exit_code_of(exc),
        fix=f"continue it with: {fix}",
    )


_signum: int | None = None  # the signal that arrived, if one did
_native = 0  # depth of native_call() blocks in the main thread


def _raise_interrupted(signum: int, frame) -> None:
    global _signum
    _signum = signum
    if not _native:
        raise Interrupted(signum)


def pending() -> bool:
    """True once SIGINT or SIGTERM has arrived (under signals_interrupt)."""
    return _signum is not None


@contextlib.contextmanager
def native_call() -> Iterator[None]:
    """Around a long native call that polls pending() and returns early: a signal arriving
    meanwhile is raised as Interrupted when the block ends (instead of whatever error the
    aborted call led to)."""
    global _native
    main = threading.current_thread() is threading.main_thread()
    _native += main
    try:
        yield
    finally:
        _native -= main
        if main and not _native and _signum is not None:
            raise Interrupted(_signum)


def interrupted_message(args, exc: BaseException) -> str:
    """What the CLI says when a signal stopped a command outside a synthesis run (a stopped
    synthesis raises RunStopped with its own message). `sgtui run` records in args.run and
    args.stage how far it got."""
    name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
    command, run = getattr(args, "command", None), getattr(args, "run", None)
    db = f" --db {shlex.quote(str(args.db))}" if getattr(args, "db", None) else ""
    stage = "training" if command == "train" else getattr(args, "stage", None)
    if run is not None and stage == "training":
        then = f", then: sgtui eval --run {run}{db}" if command == "run" else ""
        return (
            f"run {run} stopped ({name}) during training; its samples and epoch "
            f"checkpoints are kept\n  fix: continue it with: sgtui train {run} --resume{db}"
            f"{then}"
        )
    if run is not None and stage == "evaluation":
        return (
            f"run {run} stopped ({name}) during evaluation; its samples and adapter are "
            f"kept\n  fix: evaluate it with: sgtui export {run} --format gguf{db}, then "
            f"sgtui eval --run {run} --adapter ADAPTER.gguf{db}"
        )
    return f"stopped ({name}); everything committed so far is saved"


@contextlib.contextmanager
def signals_interrupt(enabled: bool = True) -> Iterator[None]:
    """Within this block, SIGINT and SIGTERM raise Interrupted in the main thread. Disabled,
    or outside the main thread (where Python cannot install handlers), it changes nothing."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    global _signum
    _signum = None
    previous = {s: signal.signal(s, _raise_interrupted) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _signum = None
