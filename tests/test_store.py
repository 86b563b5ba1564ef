import sqlite3

import pytest

from sgtui.config import RunParams
from sgtui.errors import RunBusy, SgtuiError
from sgtui.paths import example_tasks
from sgtui.store import Store
from sgtui.synthesis import create_run
from sgtui.task import load_task


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "s.db")


def _run(store):
    task = load_task(example_tasks()[0])
    return create_run(store, task, RunParams.defaults_for(task.type), "m.gguf", "llama-cpp")


def test_wal_and_migrations(store):
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    names = [r["name"] for r in store.db["_migrations"].rows]
    assert names[0] == "m001_initial"


def test_sample_slot_is_unique(store):
    rid = _run(store)
    store.add_sample(rid, round=0, slot=0, stage="input", input="x", status="kept")
    with pytest.raises(sqlite3.IntegrityError):
        store.add_sample(rid, round=0, slot=0, stage="input", input="y", status="kept")


def test_marks_drive_training_pairs(store):
    rid = _run(store)
    a = store.add_sample(
        rid, round=0, slot=0, stage="annotated", input="a", output="A", status="kept"
    )
    b = store.add_sample(
        rid, round=0, slot=1, stage="annotated", input="b", output="B", status="kept"
    )
    c = store.add_sample(
        rid,
        round=0,
        slot=2,
        stage="annotated",
        input="c",
        output="C",
        status="filtered",
        filter="class_balance",
    )
    store.add_sample(
        rid, round=0, slot=3, stage="input", input="d", status="filtered", filter="noise"
    )
    assert {s["id"] for s in store.training_pairs(rid)} == {a, b}
    store.mark(b, "discard")
    store.mark(c, "keep")
    assert {s["id"] for s in store.training_pairs(rid)} == {a, c}
    # marks survive a new connection
    again = Store(store.path)
    assert again.sample(b)["mark"] == "discard"


def test_newer_schema_is_refused(store, tmp_path):
    store.db["_migrations"].insert({"name": "m999_future", "applied": 0})
    with pytest.raises(SgtuiError, match="newer sgtui"):
        Store(store.path)


def test_not_a_database(tmp_path):
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SgtuiError, match="not a usable sgtui database"):
        Store(p)


def test_claim_refuses_live_other_process(store):
    import subprocess
    import sys

    rid = _run(store)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.update_run(rid, status="running", pid=proc.pid)
        with pytest.raises(RunBusy):
            store.claim_run(rid)
    finally:
        proc.kill()
        proc.wait()
    store.claim_run(rid)  # the holder is dead: the run can be taken over
    assert store.run(rid)["status"] == "running"


def test_evals_without_a_run_are_listed_apart(store):
    rid = _run(store)
    item = [{"input": "x", "gold": "y", "prediction": "y", "score": 100.0}]
    store.add_eval(rid, "base", "t:test", "exact_match", 100.0, {}, "m", item)
    store.add_eval(None, "base", "t:test", "exact_match", 50.0, {}, "m", item)
    assert [e["score"] for e in store.evals(rid)] == [100.0]
    assert [e["score"] for e in store.evals(None)] == [50.0]
