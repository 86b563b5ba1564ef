"""kill -9 during a real generation, then --resume: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sgtui.paths import REPO_DATA
from sgtui.store import Store

pytestmark = pytest.mark.slow


def _sgtui(*args, env):
    return [sys.executable, "-m", "sgtui", *args]


def test_sigkill_then_resume(tmp_path):
    db = tmp_path / "k.db"
    env = {**os.environ, "SGTUI_HOME": str(tmp_path)}
    args = [
        "generate",
        str(REPO_DATA / "tasks" / "formal-rewrite.toml"),
        "--db",
        str(db),
        "--rounds",
        "3",
        "--per-round",
        "4",
        "--gen-max-tokens",
        "40",
        "--n",
        "2",
        "--best-of",
        "2",
        "--ann-max-tokens",
        "24",
        "--mode",
        "small",
        "--quiet",
    ]
    proc = subprocess.Popen(
        _sgtui(*args, env=env), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # wait until some samples are committed, then kill without warning
    deadline = time.time() + 240
    before = []
    while time.time() < deadline:
        time.sleep(0.5)
        if db.exists():
            try:
                before = Store(db).samples(1)
            except Exception:
                continue
            if len(before) >= 3:
                break
        assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(db)
    before = {(r["round"], r["slot"]): r for r in store.samples(1)}
    assert len(before) >= 3
    assert store.run(1)["status"] == "running"  # the dead process never released it
    store.mark(next(iter(before.values()))["id"], "discard")

    out = subprocess.run(
        _sgtui("generate", "--resume", "1", "--db", str(db), "--quiet", env=env),
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert out.returncode == 0, out.stderr
    assert "candidate inputs" in out.stdout
    store = Store(db)
    assert store.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    after = store.samples(1)
    keys = [(r["round"], r["slot"]) for r in after]
    assert sorted(keys) == [(r, s) for r in range(3) for s in range(4)]  # same structure
    by_key = {(r["round"], r["slot"]): r for r in after}
    for k, r in before.items():  # everything committed before the kill is still there
        assert by_key[k]["id"] == r["id"] and by_key[k]["raw_output"] == r["raw_output"]
    assert sum(1 for r in after if r["mark"] == "discard") == 1
    kept_inputs = [r["input"] for r in after if r["stage"] == "annotated"]
    assert len(kept_inputs) == len(set(kept_inputs))
    assert store.run(1)["status"] == "done"
