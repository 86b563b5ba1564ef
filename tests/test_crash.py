"""SIGKILL a real headless generation at seeded random moments, resume, repeat: nothing that was
committed is lost or duplicated, marks survive, and the finished run has the structure of an
uninterrupted one.

The harness is bench/crash_soak.py (its docstring lists every check); this test runs it with 5
kills, the benchmark with 20 (figures in bench/results/crash_soak.md). tests/test_resume_kill.py
covers the single-kill case."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

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
    soak = _soak_module().Soak(tmp_path / "soak", kills=5, seed=11, max_delay=2.0)
    result = soak.run()
    assert result.violations == []
    assert len(result.kills) >= 3, result  # the run outlived most of the kills
    assert result.integrity_failures == result.samples_lost == result.marks_lost == 0
    assert result.duplicate_slots == 0 and result.marks_made >= 3 * len(result.kills)
    stages = {k.stage for k in result.kills}
    assert "inputs" in stages, result.kills
    assert result.final["slots"] == result.final["expected_slots"] == 8
    assert result.final["status"] == "done"
    # the summary the CLI printed agrees with the rows
    assert result.final["summary"]["candidates"] == 8
