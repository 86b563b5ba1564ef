"""Ctrl-C and SIGTERM, and resuming after them or after SIGKILL, on the real bundled model.

- `sgtui generate` stopped by SIGINT or SIGTERM during annotation exits within seconds (130 /
  143, no traceback), leaves the run `stopped`, and names `sgtui generate --resume ID`; the
  resume finishes the run and clears an error an earlier attempt left on it.
- A signal that arrives in the middle of one long llama.cpp decode stops it at once (the
  decode is given up, not finished), and a stop event does the same without an exception.
- `sgtui run` stopped during training or evaluation ends cleanly: no training child left,
  and the message names the command that continues.
- A run SIGKILLed several times during annotation and resumed ends with every annotation byte
  for byte that of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sgtui.paths import REPO_DATA

pytestmark = pytest.mark.slow

# llama.cpp threads in the children, as test_concurrency runs them
THREADS = os.environ.get("SGTUI_THREADS", "1")

TASK = str(REPO_DATA / "tasks" / "formal-rewrite.toml")
# small enough for a busy 2-core machine, large enough that annotation takes several seconds
SMALL = [
    "--rounds",
    "2",
    "--per-round",
    "6",
    "--gen-max-tokens",
    "32",
    "--n",
    "6",
    "--ann-max-tokens",
    "32",
    "--mode",
    "small",
]
LIMIT_S = 2.0  # what the issue asks
SLACK_S = 5.0  # what a test allows on a loaded CI machine (the time is printed)


def _env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "SGTUI_HOME": str(tmp_path / "home"),
        "PYTHONUNBUFFERED": "1",
        "SGTUI_THREADS": THREADS,
    }


def _sgtui(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sgtui", *args],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _row(db: Path, run_id: int = 1) -> dict | None:
    if not db.exists():
        return None
    c = sqlite3.connect(db, timeout=30)
    c.row_factory = sqlite3.Row
    try:
        row = c.execute("select * from runs where id = ?", [run_id]).fetchone()
        return dict(row) if row else None
    except sqlite3.OperationalError:  # the tables are not there yet
        return None
    finally:
        c.close()


def _annotated(db: Path) -> int:
    c = sqlite3.connect(db, timeout=30)
    try:
        return c.execute("select count(*) from samples where stage = 'annotated'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        c.close()


def _wait(proc: subprocess.Popen, ready, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the process ended before {what}: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


def _signal_and_time(proc: subprocess.Popen, signum: int) -> tuple[float, str, str]:
    t = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return time.monotonic() - t, out, err


# -- generate ---------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_annotation_stops_the_run_for_resuming(tmp_path, signum):
    db = tmp_path / "s.db"
    proc = _sgtui(tmp_path, "generate", TASK, "--db", str(db), *SMALL)
    try:
        _wait(
            proc,
            lambda: (_row(db) or {}).get("stage") == "annotate" and _annotated(db) >= 1,
            "the first annotation",
        )
        took, _, err = _signal_and_time(proc, signum)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\n{signal.Signals(signum).name} during annotation: exit after {took:.2f} s")
    assert proc.returncode == 128 + signum, err
    assert took < SLACK_S, f"{took:.2f} s (the goal is {LIMIT_S} s)"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert f"sgtui generate --resume 1 --db {db}" in err, err
    row = _row(db)
    assert row["status"] == "stopped" and row["pid"] is None and row["error"] is None, row
    left = _annotated(db)

    # an earlier version marked such a run failed with "KeyboardInterrupt"; resuming a run
    # in that state finishes it and clears the error
    c = sqlite3.connect(db)
    with c:
        c.execute("update runs set status = 'failed', error = 'KeyboardInterrupt: ' where id = 1")
    c.close()
    done = subprocess.run(
        [sys.executable, "-m", "sgtui", "generate", "--resume", "1", "--db", str(db), "--quiet"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    row = _row(db)
    assert row["status"] == "done" and row["error"] is None, row
    assert _annotated(db) > left


# -- one long decode --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_thread_llama(bundled_model):
    from backends.llama_batch import BatchedLlamaCppGenerator

    gen = BatchedLlamaCppGenerator(bundled_model, n_threads=1)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def long_prompt(one_thread_llama) -> tuple[str, float]:
    """A prompt of two 500-token chunks, and how long one chunk (one llama.cpp decode) takes
    on this machine."""
    from backends.base import ChatMessage, SamplingParams

    gen = one_thread_llama
    text = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(70))
    prompt = gen.render_chat([ChatMessage("user", text)])
    t = time.monotonic()
    list(gen.generate([prompt], SamplingParams(max_tokens=1)))
    return prompt, (time.monotonic() - t) / len(gen._chunks(0, len(gen._tokenize(prompt))))


def test_a_signal_inside_a_long_decode_stops_it_at_once(one_thread_llama, long_prompt):
    """Python runs signal handlers between bytecodes only: without llama.cpp's abort callback
    the signal waited for the whole decode of a prompt chunk (several seconds on a busy CPU)."""
    from backends.base import SamplingParams
    from sgtui.interrupts import Interrupted, signals_interrupt

    prompt, chunk = long_prompt
    sent: list[float] = []

    def send() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Timer(chunk / 4, send)
    with signals_interrupt(), pytest.raises(Interrupted) as caught:
        timer.start()
        list(one_thread_llama.generate([prompt], SamplingParams(max_tokens=4)))
    latency = time.monotonic() - sent[0]
    timer.join()
    print(
        f"\none decode {chunk:.2f} s; SIGTERM {chunk / 4:.2f} s into it ended the call "
        f"{latency * 1000:.0f} ms later"
    )
    assert caught.value.signum == signal.SIGTERM
    assert latency < min(LIMIT_S, chunk / 2), (latency, chunk)
    _still_usable(one_thread_llama)


def test_a_stop_event_inside_a_long_decode_ends_the_stream(one_thread_llama, long_prompt):
    """The TUI's stop (a threading.Event, no signal): the stream ends early, without an
    exception, and the model stays loaded and usable."""
    from backends.base import SamplingParams

    prompt, chunk = long_prompt
    stop = threading.Event()
    asked: list[float] = []

    def fire() -> None:
        asked.append(time.monotonic())
        stop.set()

    timer = threading.Timer(chunk / 4, fire)
    timer.start()
    got = list(one_thread_llama.generate([prompt], SamplingParams(max_tokens=4), stop=stop))
    took = time.monotonic() - asked[0]
    timer.join()
    print(
        f"\nstop event {chunk / 4:.2f} s into a {chunk:.2f} s decode ended the stream "
        f"{took * 1000:.0f} ms later"
    )
    assert got == [] and took < min(LIMIT_S, chunk / 2), (took, chunk)
    _still_usable(one_thread_llama)


def _still_usable(gen) -> None:
    """After a decode given up, the generator works (the TUI keeps its model loaded)."""
    from backends.base import ChatMessage, SamplingParams

    prompt = gen.render_chat([ChatMessage("user", "Name a colour.")])
    got = list(gen.generate([prompt] * 2, SamplingParams(max_tokens=3, n=2)))
    assert len(got) == 4 and all(c.n_tokens >= 1 for c in got)


# -- sgtui run: training and evaluation -------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the parent's pid
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "stage,signum,marker,fix",
    [
        ("training", signal.SIGTERM, "training ", "sgtui train 1 --resume"),
        ("evaluation", signal.SIGINT, "evaluating base", "sgtui eval --run 1"),
    ],
    ids=["training", "evaluation"],
)
def test_a_signal_during_run_ends_cleanly(tmp_path, stage, signum, marker, fix):
    db = tmp_path / "r.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sgtui",
            "run",
            TASK,
            "--db",
            str(db),
            "--rounds",
            "1",
            "--per-round",
            "6",
            "--gen-max-tokens",
            "32",
            "--n",
            "3",
            "--ann-max-tokens",
            "24",
            "--mode",
            "small",
            "--epochs",
            "2",
            "--eval-limit",
            "4",
        ],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(900), "".join(lines)[-3000:]
        time.sleep(0.5)
        children = _children(proc.pid)
        t = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=120)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    output = "".join(lines)
    print(f"\n{signal.Signals(signum).name} during {stage}: exit after {took:.2f} s")
    assert proc.returncode == 128 + signum, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert f"stopped ({signal.Signals(signum).name}) during {stage}" in output, output[-3000:]
    assert fix in output, output[-3000:]
    assert took < SLACK_S, f"{took:.2f} s (the goal is {LIMIT_S} s)"
    time.sleep(0.5)
    assert not [c for c in children if _alive(c)], "a child of sgtui run outlived it"


# -- resume exactness -------------------------------------------------------------------------
ROW = (
    "round",
    "slot",
    "stage",
    "status",
    "filter",
    "reason",
    "input",
    "raw_output",
    "output",
    "label",
    "candidates",
    "votes",
)


def _samples(db: Path) -> dict[tuple[int, int], dict]:
    c = sqlite3.connect(db)
    c.row_factory = sqlite3.Row
    try:
        return {
            (r["round"], r["slot"]): {k: r[k] for k in ROW}
            for r in c.execute(f"select {', '.join(ROW)} from samples where run_id = 1")
        }
    finally:
        c.close()


def test_annotations_after_kills_equal_an_uninterrupted_run(tmp_path):
    """SIGKILL three times during annotation, resume each time: every sample, its candidates
    (all n answers), votes, output and kept/filtered status are byte for byte those of an
    uninterrupted run. (With a shared KV cell pool, as before, an independent probe found 23
    of 27 annotations different after 6 kills, and 4 samples moved between kept and
    filtered.)"""
    args = [
        TASK,
        "--rounds",
        "2",
        "--per-round",
        "6",
        "--gen-max-tokens",
        "32",
        "--n",
        "8",
        "--ann-max-tokens",
        "32",
        "--mode",
        "small",
        "--quiet",
    ]
    whole = tmp_path / "whole.db"
    ref = subprocess.run(
        [sys.executable, "-m", "sgtui", "generate", *args, "--db", str(whole)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ref.returncode == 0, ref.stderr
    want = _samples(whole)

    db = tmp_path / "killed.db"
    kills = 0
    first = True
    while kills < 3:
        command = [*args, "--db", str(db)] if first else ["--resume", "1", "--db", str(db)]
        proc = _sgtui(tmp_path, "generate", *command)
        first = False
        try:
            start = _annotated(db) if db.exists() else 0
            _wait(proc, lambda: db.exists() and _annotated(db) > start, "an annotation")
            if (_row(db) or {}).get("stage") != "annotate":
                proc.wait(timeout=900)
                break  # the run finished before the kill (a fast machine)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if (_row(db) or {}).get("status") != "done":
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sgtui",
                "generate",
                "--resume",
                "1",
                "--db",
                str(db),
                "--quiet",
            ],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr
    got = _samples(db)
    annotated = [k for k, r in want.items() if r["stage"] == "annotated"]
    differ = [k for k in want if got.get(k) != want[k]]
    print(
        f"\n{kills} kills during annotation; {len(annotated)} annotations, "
        f"{len(differ)} samples differ from the uninterrupted run"
    )
    assert kills >= 2, "the run finished before the kills"
    assert len(annotated) >= 6 and json.loads(want[annotated[0]]["candidates"])
    assert got.keys() == want.keys() and differ == []
