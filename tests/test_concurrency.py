"""Two writers on one database: a real generation (a child process) and the person's marks
(a Store in this process, as the TUI has); and two processes that try to resume the same run.

No "database is locked", no lost mark, one run worked on by one process at a time, and the
database sound afterwards. And several processes creating one new database at once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtui.config import RunParams
from sgtui.paths import REPO_DATA
from sgtui.store import MIGRATIONS, Store
from sgtui.synthesis import create_run
from sgtui.task import load_task

TASK = str(REPO_DATA / "tasks" / "formal-rewrite.toml")
# llama.cpp threads in the children (SGTUI_THREADS; 0 keeps sgtui's default of one per core):
# on a busy 2-core machine two threads spin against each other and run several times slower
THREADS = os.environ.get("SGTUI_THREADS", "1")
SMALL = [
    "--rounds",
    "2",
    "--per-round",
    "4",
    "--gen-max-tokens",
    "32",
    "--n",
    "2",
    "--best-of",
    "2",
    "--ann-max-tokens",
    "16",
]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "SGTUI_HOME": str(tmp_path / "home"), "SGTUI_THREADS": THREADS}


def _start(tmp_path: Path, *args: str, log: str) -> subprocess.Popen:
    with (tmp_path / log).open("wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "sgtui", *args],
            env=_env(tmp_path),
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def _wait_for_samples(db: Path, proc: subprocess.Popen, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the generation ended early"
        if db.exists():
            try:
                s = Store(db)
                try:
                    if s.db["samples"].exists() and s.db["samples"].count >= n:
                        return
                finally:
                    s.close()
            except Exception:  # noqa: BLE001 - the child may still be creating the schema
                pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} samples after {timeout} s")


def _sound(db: Path, run_id: int = 1) -> list[dict]:
    s = Store(db)
    try:
        assert s.db.execute("pragma integrity_check").fetchone()[0] == "ok"
        rows = s.samples(run_id)
        slots = [(r["round"], r["slot"]) for r in rows]
        assert len(slots) == len(set(slots))
        return rows
    finally:
        s.close()


@pytest.mark.slow
def test_ten_thousand_marks_while_generating(tmp_path):
    db = tmp_path / "c.db"
    proc = _start(tmp_path, "generate", TASK, *SMALL, "--db", str(db), "--quiet", log="gen.log")
    try:
        _wait_for_samples(db, proc, 2)
        store = Store(db)  # this process's connection, like the TUI's
        rng = random.Random(3)
        last: dict[int, str] = {}
        ids: list[int] = []

        def commits() -> int:  # samples stored plus annotations stored, by the generator
            return store.db.execute(
                "select count(*) + sum(stage = 'annotated') from samples"
            ).fetchone()[0]

        n_at_start = commits()
        alive_at_start = proc.poll() is None
        slowest = 0.0
        t0 = time.monotonic()
        for i in range(10_000):
            if i % 250 == 0:  # new samples keep arriving; mark those too
                ids = [r[0] for r in store.db.execute("select id from samples")]
            if i % 100 == 0:  # marks in bursts, spread over the generation's commits
                time.sleep(0.4)
            sid = rng.choice(ids)
            mark = rng.choice(["keep", "discard"])
            t = time.perf_counter()
            store.mark(sid, mark)  # a "database is locked" here would fail the test
            slowest = max(slowest, time.perf_counter() - t)
            last[sid] = mark
        elapsed = time.monotonic() - t0
        n_at_end = commits()
        store.close()
        code = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / "gen.log").read_text(errors="replace")
    assert code == 0, output
    assert "locked" not in output and "Traceback" not in output, output
    assert alive_at_start and n_at_end - n_at_start >= 2, "the generator should write meanwhile"
    rows = _sound(db)
    got = {r["id"]: r["mark"] for r in rows if r["mark"] is not None}
    assert got == last  # every sample holds the last mark written to it, no other has one
    assert sorted((r["round"], r["slot"]) for r in rows) == [
        (i, j) for i in range(2) for j in range(4)
    ]
    print(
        f"\n10000 marks in {elapsed:.1f} s ({10000 / elapsed:.0f}/s), slowest "
        f"{slowest * 1000:.0f} ms; {n_at_end - n_at_start} generator commits meanwhile"
    )


def _created_run(db: Path) -> int:
    store = Store(db)
    task = load_task(TASK)
    params = RunParams.defaults_for(task.type, "small").override(
        rounds=2, per_round=4, gen_max_tokens=32, n=2, best_of=2, ann_max_tokens=16
    )
    from sgtui.paths import bundled_model

    rid = create_run(store, task, params, str(bundled_model()), "llama-cpp")
    store.close()
    return rid


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)  # a clean stop, like Ctrl-C
    return proc.wait(timeout=300)


@pytest.mark.slow
def test_second_resume_is_told_busy(tmp_path):
    db = tmp_path / "b.db"
    rid = _created_run(db)
    first = _start(
        tmp_path, "generate", "--resume", str(rid), "--db", str(db), "--quiet", log="first.log"
    )
    try:
        _wait_for_samples(db, first, 1)
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "sgtui",
                "generate",
                "--resume",
                str(rid),
                "--db",
                str(db),
                "--quiet",
            ],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, second.stderr
        assert "busy" in second.stderr and str(first.pid) in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one carries on
        code = _stop(first)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    output = (tmp_path / "first.log").read_text(errors="replace")
    assert code == 143 and "stopped" in output and "--resume" in output, output  # 128 + SIGTERM
    assert _sound(db)
    s = Store(db)
    assert s.run(rid)["status"] == "stopped" and s.run(rid)["pid"] is None
    s.close()


@pytest.mark.slow
def test_two_resumes_started_together(tmp_path):
    """Started at the same moment: exactly one works on the run, the other is told it is busy,
    whichever way their start-ups interleave."""
    db = tmp_path / "t.db"
    rid = _created_run(db)
    procs = [
        _start(
            tmp_path, "generate", "--resume", str(rid), "--db", str(db), "--quiet", log=f"p{i}.log"
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        done = [p for p in procs if p.poll() is not None]
        assert len(done) == 1, "one of the two should have been refused"
        refused = done[0]
        worker = procs[1 - procs.index(refused)]
        log = (tmp_path / f"p{procs.index(refused)}.log").read_text(errors="replace")
        assert refused.returncode == 2 and "busy" in log and "Traceback" not in log, log
        _wait_for_samples(db, worker, 1)
        code = _stop(worker)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert code == 143  # stopped by SIGTERM: marked stopped, resumable
    assert _sound(db)


OPEN = """
import sys, time
from sgtui.store import Store
start = float(sys.argv[2])
while time.time() < start:
    pass
Store(sys.argv[1]).close()
"""


@pytest.mark.parametrize("attempt", range(5))
def test_processes_creating_one_database_at_once(tmp_path, attempt):
    """The TUI and a CLI command opening a database that does not exist yet, at the same
    moment: both create or upgrade it without "database is locked"."""
    db = tmp_path / "new.db"
    start = time.time() + 1.5  # after every interpreter has started
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, str(db), str(start)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    s = Store(db)
    assert [r["name"] for r in s.db["_migrations"].rows_where(order_by="applied")] == [
        n for n, _ in MIGRATIONS
    ]
    s.close()
