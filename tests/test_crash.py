"""SIGKILL a real headless generation at seeded random moments, resume, repeat: nothing that was
committed is lost or duplicated, marks survive, and the finished run has the structure of an
uninterrupted one. Then SIGKILL inside a multi-row write and inside a schema migration.

The harness is bench/crash_soak.py (its docstring lists every check); this test runs it with 5
kills, the benchmark with 20 (figures in bench/results/crash_soak.md). tests/test_resume_kill.py
covers the single-kill case."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlite_utils

from sgtui.store import MIGRATIONS, Store

ROOT = Path(__file__).resolve().parent.parent


def _soak_module():
    spec = importlib.util.spec_from_file_location("crash_soak", ROOT / "bench" / "crash_soak.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["crash_soak"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_five_kills_then_finish(tmp_path):
    mod = _soak_module()
    # 18 slots and short delays: a fast machine must not finish the run before the kills do
    soak = mod.Soak(
        tmp_path / "soak",
        kills=5,
        seed=11,
        max_delay=0.5,
        gen_args=mod.gen_args(rounds=3, per_round=6),
    )
    result = soak.run()
    assert result.violations == []
    assert len(result.kills) >= 3, result  # the run outlived most of the kills
    assert result.integrity_failures == result.samples_lost == result.marks_lost == 0
    assert result.duplicate_slots == 0 and result.marks_made >= 3 * len(result.kills)
    stages = {k.stage for k in result.kills}
    assert "inputs" in stages, result.kills
    assert result.final["slots"] == result.final["expected_slots"] == 18
    assert result.final["status"] == "done"
    # the summary the CLI printed agrees with the rows
    assert result.final["summary"]["candidates"] == 18
    print(
        f"\n{len(result.kills)} kills at stages {[k.stage for k in result.kills]}, "
        f"{result.committed_seen} samples seen committed, {result.samples_lost} lost, "
        f"{result.marks_made} marks made, {result.marks_lost} lost, {result.wall_s:.0f} s"
    )


# -- a kill inside a transaction ----------------------------------------------------------------
# Random kills rarely land inside a multi-row write; these put the SIGKILL there on purpose.


def _child(code: str, *args: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.returncode


def test_kill_inside_a_multi_row_write(tmp_path):
    """Store.update_samples (class balancing) is all or nothing: killed after two of its
    updates, none of them is there."""
    db = tmp_path / "txn.db"
    code = """
        import os, signal, sys
        from sgtui.config import RunParams
        from sgtui.store import Store
        from sgtui.synthesis import create_run
        from sgtui.task import load_task
        from sgtui.paths import example_tasks
        s = Store(sys.argv[1])
        task = load_task(example_tasks()[0])
        rid = create_run(s, task, RunParams.defaults_for(task.type), "m.gguf", "llama-cpp")
        ids = [s.add_sample(rid, round=0, slot=i, stage="annotated", input=f"in {i}",
                            output="x", status="kept") for i in range(6)]
        s.mark(ids[0], "keep")
        def updates():
            for n, sid in enumerate(ids):
                if n == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield sid, {"status": "filtered", "filter": "class_balance"}
        s.update_samples(updates())
    """
    assert _child(code, str(db)) == -9
    s = Store(db)
    assert s.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    rows = s.samples(1)
    assert len(rows) == 6  # each insert was committed on its own
    assert {r["status"] for r in rows} == {"kept"} and {r["filter"] for r in rows} == {None}
    assert rows[0]["mark"] == "keep"


def test_kill_inside_a_migration(tmp_path):
    """A database being upgraded when the process dies keeps its old schema and data, and the
    next opening upgrades it."""
    db = tmp_path / "mig.db"
    name, first = MIGRATIONS[0]
    d = sqlite_utils.Database(db)
    d.enable_wal()
    d["_migrations"].create({"name": str, "applied": float}, pk="name")
    first(d)
    d["_migrations"].insert({"name": name, "applied": 1.0})
    d["tasks"].insert(
        {
            "id": 1,
            "name": "t",
            "type": "generation",
            "definition": "{}",
            "source": "t",
            "created": 1.0,
        }
    )
    d.conn.close()
    code = """
        import os, signal, sys
        import sgtui.store as store
        name, fn = store.MIGRATIONS[1]
        def dying(db):
            db["train_progress"].create({"id": int, "run_id": int}, pk="id")
            os.kill(os.getpid(), signal.SIGKILL)
        store.MIGRATIONS[1] = (name, dying)
        store.Store(sys.argv[1])
    """
    assert _child(code, str(db)) == -9
    d = sqlite_utils.Database(db)
    assert d.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert [r["name"] for r in d["_migrations"].rows] == ["m001_initial"]
    assert not d["train_progress"].exists()  # the half-applied migration was rolled back
    d.conn.close()
    s = Store(db)
    assert [r["name"] for r in s.db["_migrations"].rows_where(order_by="applied")] == [
        n for n, _ in MIGRATIONS
    ]
    assert s.db["train_progress"].exists() and s.db["artifacts"].exists()
    assert json.loads(s.db["tasks"].get(1)["definition"]) == {}
