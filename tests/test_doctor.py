"""`sgtui doctor` decodes a real prompt with the installed llama.cpp build: a build whose
kernels crash on this CPU (llama.cpp's AMX kernels on some Intel CPUs) loads a model and reports
every backend available, and only a decode shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import backends.llama_cpp as llama_cpp_backend
from sgtui import cli
from sgtui.paths import bundled_model

ROOT = Path(__file__).resolve().parent.parent


def test_doctor_decodes_with_the_installed_build():
    r = subprocess.run(
        [sys.executable, "-m", "sgtui", "doctor"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("llama.cpp decode"))
    assert line.split()[-1] == "ok"


def test_decode_check_passes_the_bundled_model():
    assert llama_cpp_backend.decode_check(bundled_model()) is None


def test_decode_check_reports_a_model_that_fails(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    problem = llama_cpp_backend.decode_check(bad)
    assert problem is not None and problem.startswith("llama.cpp failed decoding a prompt (")


def test_decode_check_names_the_signal_of_a_crash(monkeypatch):
    # the child dies the way a crashing kernel kills it
    monkeypatch.setattr(
        llama_cpp_backend, "_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    )
    problem = llama_cpp_backend.decode_check(bundled_model())
    assert problem is not None
    assert problem.startswith("llama.cpp crashed (SIGSEGV) decoding a prompt")


def test_doctor_fails_and_says_what_to_do_when_decoding_fails(monkeypatch, capsys):
    monkeypatch.setattr(cli, "decode_check", lambda model: "llama.cpp crashed (SIGSEGV)")
    assert cli.main(["doctor"]) == 1
    out, err = capsys.readouterr()
    assert "FAILED: llama.cpp crashed (SIGSEGV)" in out
    assert "run ./install.sh again" in err
    assert "Traceback" not in out + err
