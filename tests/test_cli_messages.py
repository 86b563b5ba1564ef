"""Bad paths and odd terminals: a message naming the file and the fix, exit 2, never a
traceback (issue: tracebacks found by an independent probe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from word_task import make_run

from sgtui.cli import main
from sgtui.store import Store

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "data" / "tasks" / "formal-rewrite.toml"


def sgtui(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sgtui", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert "fix:" in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


@pytest.fixture
def db_with_samples(tmp_path) -> Path:
    db = tmp_path / "s.db"
    store = Store(db)
    make_run(store, [("a", "b"), ("c", "d")])
    store.close()
    return db


@pytest.mark.parametrize("where", ["folder", "missing-folder", "under-a-file"])
def test_samples_export_to_a_bad_path_is_a_message(db_with_samples, tmp_path, where):
    (tmp_path / "afile").write_text("keep me")
    target = {
        "folder": tmp_path,
        "missing-folder": tmp_path / "nope" / "out.jsonl",
        "under-a-file": tmp_path / "afile" / "out.jsonl",
    }[where]
    r = sgtui("samples", "1", "--db", str(db_with_samples), "--export", str(target))
    refused(r, str(target))
    assert (tmp_path / "afile").read_text() == "keep me"


def test_samples_export_writes_through_a_temporary_file(db_with_samples, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    assert main(["samples", "1", "--db", str(db_with_samples), "--export", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input"] for r in rows] == ["a", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.jsonl",
        "s.db",
        "s.db-shm",
        "s.db-wal",
    ]


def test_samples_export_to_a_read_only_folder_is_a_message(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    make_run(store, [("a", "b")])
    store.close()
    for f in tmp_path.glob("s.db*"):
        f.chmod(0o666)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    r = _as_nobody("samples", "1", "--db", str(db), "--export", str(ro / "out.jsonl"))
    refused(r, "cannot write the export", str(ro / "out.jsonl"))


@pytest.mark.parametrize("how", ["under-a-file", "a-folder"])
def test_db_where_no_database_can_be(tmp_path, how):
    (tmp_path / "afile").write_text("x")
    db = {"under-a-file": tmp_path / "afile" / "sub" / "x.db", "a-folder": tmp_path}[how]
    r = sgtui("runs", "--db", str(db))
    refused(r, str(db))


@pytest.mark.parametrize("command", [["doctor"], ["runs"], ["generate", str(TASK)]])
def test_sgtui_home_that_is_a_file(tmp_path, command):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    r = sgtui(*command, env={"SGTUI_HOME": str(home)})
    refused(r, str(home), "SGTUI_HOME")
    assert home.read_text() == "not a folder"


def test_sgtui_home_unwritable(tmp_path):
    home = tmp_path / "ro-home"
    home.mkdir()
    home.chmod(0o555)
    r = _as_nobody("runs", env={"SGTUI_HOME": str(home)})
    refused(r, str(home), "not writable")


def test_read_only_database_is_named_as_such(tmp_path):
    """It was called 'not a usable sgtui database' with the fix 'move the file away'."""
    db = tmp_path / "s.db"
    store = Store(db)
    make_run(store, [("a", "b")])
    store.close()
    for f in tmp_path.glob("s.db*"):
        f.chmod(0o444)
    r = _as_nobody("runs", "--db", str(db))
    assert r.returncode == 0 and "colour-thing" in r.stdout, r.stderr  # reading still works
    for command in (["mark", "keep", "1"], ["generate", str(TASK), "--rounds", "1"]):
        r = _as_nobody(*command, "--db", str(db))
        refused(r, "read-only", "writable")
        assert "not a usable" not in r.stderr


def _as_nobody(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run sgtui so that permission bits apply: root (as tests and CI run) ignores them, so
    drop its power to override them; an ordinary user already obeys them."""
    import shutil

    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv, so permission bits cannot apply")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "sgtui", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_task_name_that_is_a_number_says_so(tmp_path):
    task = tmp_path / "t.toml"
    task.write_text(TASK.read_text().replace('name = "formal-rewrite"', "name = 5"))
    assert "name = 5" in task.read_text()
    r = sgtui("generate", str(task), "--db", str(tmp_path / "t.db"))
    refused(r, "'name' must be text, got int", str(task))
    assert "missing" not in r.stderr


def test_a_megabyte_instruction_is_refused_before_the_model_loads(tmp_path):
    """It loaded the model, then failed naming a run id; now the task file is named, at once,
    and no run is created."""
    task = tmp_path / "big.toml"
    text = TASK.read_text()
    start = text.index("instruction = ")
    end = text.index("\n", start)
    task.write_text(text[:start] + 'instruction = "' + "word " * 200_000 + '"' + text[end:])
    t = time.monotonic()
    r = sgtui("generate", str(task), "--db", str(tmp_path / "t.db"))
    refused(r, str(task), "characters long")
    assert time.monotonic() - t < 60
    assert Store(tmp_path / "t.db").runs() == []


def test_broken_pipe_exits_quietly(tmp_path):
    """`sgtui runs | head -1` printed a BrokenPipeError traceback."""
    db = tmp_path / "many.db"
    store = Store(db)
    for _ in range(2500):  # more lines than a pipe buffer holds
        make_run(store, [])
    store.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        f'"{sys.executable}" -m sgtui runs --db "{db}" | head -1',
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.stdout.count("\n") == 1, r.stdout[:200]
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["samples", "99999999999999999999"],
        ["generate", "--resume", "99999999999999999999"],
        ["train", "99999999999999999999"],
        ["export", "99999999999999999999"],
        ["samples", "0"],
    ],
)
def test_run_ids_past_sqlites_range_are_refused(tmp_path, command):
    """They reached SQLite and ended in an OverflowError traceback."""
    r = sgtui(*command, "--db", str(tmp_path / "x.db"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "is not an id" in r.stderr, r.stderr


@pytest.mark.parametrize("db", ["/dev/null", "/proc/version"])
def test_a_device_or_special_file_as_database(db):
    """Was 'not a usable sgtui database' with the fix 'move the file away' (from /dev/null)."""
    r = sgtui("runs", "--db", db)
    refused(r, db, "not a regular file" if db.startswith("/dev") else "cannot open this file")
    assert "move the file away" not in r.stderr


@pytest.mark.parametrize(
    "args,words",
    [
        (["--grid", "epochs=0"], ["--epochs must be at least 1"]),
        (["--grid", "rounds=-1"], ["--rounds must be at least 1"]),
        (["--grid", "gen_temperature=nan"], ["--temperature"]),
        (["--grid", "mode=bogus"], ["mode"]),
        (["--eval-limit", "-3"], ["--eval-limit must be at least 1"]),
    ],
)
def test_search_refuses_bad_values_before_it_starts(tmp_path, args, words):
    """These started a search (or named --limit, a flag search does not have)."""
    r = sgtui("search", "--tasks", str(TASK), *args, "--db", str(tmp_path / "s.db"))
    refused(r, *words)


def test_search_with_no_task_is_refused(tmp_path):
    r = sgtui("search", "--tasks", ",", "--db", str(tmp_path / "s.db"))
    refused(r, "--tasks names no task")
