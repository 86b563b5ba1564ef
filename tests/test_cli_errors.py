"""Bad input: a short message naming the file and the fix, exit 2, no traceback, the database
untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from sgtui.paths import REPO_DATA

TASK = str(REPO_DATA / "tasks" / "city-fact.toml")


def run(*args, tmp_path):
    env = {**os.environ, "SGTUI_HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "sgtui", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None


@pytest.fixture
def db(tmp_path):
    from sgtui.store import Store

    p = tmp_path / "keep.db"
    s = Store(p)
    s.db.execute("pragma wal_checkpoint(TRUNCATE)")
    s.close()
    return p


def _bad_cases(tmp_path):
    trunc = tmp_path / "trunc.gguf"
    from sgtui.paths import bundled_model

    trunc.write_bytes(bundled_model().read_bytes()[:200_000])
    notgguf = tmp_path / "model.gguf"
    notgguf.write_text("hello")
    few = tmp_path / "few.toml"
    few.write_text(
        'name="x"\ntype="generation"\ninstruction="do"\n[[examples]]\ninput="a"\noutput="b"\n'
    )
    badlabel = tmp_path / "lab.toml"
    badlabel.write_text(
        'name="x"\ntype="classification"\ninstruction="do"\nlabels=["a","b"]\n'
        '[[examples]]\ninput="q"\noutput="a"\n[[examples]]\ninput="r"\noutput="c"\n'
    )
    missing = tmp_path / "missing.toml"
    missing.write_text('name="x"\ntype="generation"\n')
    return [
        ([TASK, "--model", str(tmp_path / "nope.gguf")], "nope.gguf", "not found"),
        ([TASK, "--model", str(trunc)], "trunc.gguf", "could not load"),
        ([TASK, "--model", str(notgguf)], "model.gguf", "not a GGUF"),
        ([str(few)], "few.toml", "2 to 10 examples"),
        ([str(badlabel)], "lab.toml", "not one of the labels"),
        ([str(missing)], "missing.toml", "missing field"),
        ([TASK, "--backend", "vllm"], "vllm", "unknown backend"),
    ]


def test_bad_inputs(tmp_path, db):
    before = _digest(db)
    for args, name, words in _bad_cases(tmp_path):
        out = run("generate", *args, "--db", str(db), "--rounds", "1", tmp_path=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr, out.stderr
        assert name in out.stderr and words in out.stderr and "fix:" in out.stderr, out.stderr
    assert _digest(db) == before


def test_resume_unknown_run(tmp_path, db):
    out = run("generate", "--resume", "42", "--db", str(db), tmp_path=tmp_path)
    assert out.returncode == 2 and "no run 42" in out.stderr and "Traceback" not in out.stderr
