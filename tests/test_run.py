"""`sgtui run`, the whole loop, end to end on the bundled model through llama.cpp: generate,
filter, vote, train in the child process, export the GGUF adapter, choose the epoch on
validation rows, evaluate base and fine-tuned on the held-out rows, print the table.

Small settings (one round of six inputs, two epochs, five rows) keep it to a few minutes;
bench/results/ holds the figures of full-size runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sgtui.store import Store

ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "data" / "tasks" / "formal-rewrite.toml"
VAL = [
    ("hey can u call me back", "Could you please call me back?"),
    ("im not coming today sorry", "I apologise, but I will not be able to attend today."),
    ("pls fix the printer", "Could you please repair the printer?"),
    ("thx for the help!!", "Thank you very much for your help."),
    ("where r the keys", "Could you tell me where the keys are?"),
]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_run_generates_trains_chooses_an_epoch_and_prints_the_table(tmp_path):
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps({"input": x, "output": y}) + "\n" for x, y in VAL))
    env = {**os.environ, "SGTUI_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    db = tmp_path / "run.db"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgtui",
            "run",
            str(TASK),
            "--db",
            str(db),
            "--rounds",
            "1",
            "--per-round",
            "6",
            "--n",
            "3",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--eval-limit",
            "5",
            "--val-split",
            str(val),
            "--quiet",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "Traceback" not in out.stderr

    # the validation line: the base model and both epochs, and the choice is the best of them
    m = re.search(r"validation \(val\.jsonl\): (.*)", text)
    assert m, text
    scores = dict((k, float(v)) for k, v in re.findall(r"(base|epoch \d) (\d+\.\d)", m.group(0)))
    assert set(scores) == {"base", "epoch 1", "epoch 2"}, text
    best = max(scores.values())
    chosen = re.search(r"chosen: epoch (\d)", text)
    if chosen:
        assert scores[f"epoch {chosen.group(1)}"] == best > scores["base"]
    else:
        assert "did not beat the base model" in text and scores["base"] == best

    # the before/after table, scored on the task's held-out rows, not the validation rows
    assert "formal-rewrite on formal-rewrite.eval.jsonl[5 of 20, seed 0]" in text, text
    rows = {
        line.split()[0]: line
        for line in text.splitlines()
        if line.startswith(("base ", "self-guide", "trivial "))
    }
    assert set(rows) == {"base", "self-guide", "trivial"}, text

    def score(line: str) -> float:
        words = line.split()
        return float(words[words.index("rouge") + 1])

    base, tuned = score(rows["base"]), score(rows["self-guide"])
    # the run says which model to use: validation's choice where it chose the base model,
    # else the test rows' comparison (the table rounds; a tie there may hide a +0.04)
    if not chosen:
        verdict = "keep using the base model: no epoch of the fine-tune beat it on val.jsonl"
    elif tuned != base:
        verdict = "use the fine-tune" if tuned > base else "worse than the base model"
    else:
        verdict = "use the fine-tune" if "use the fine-tune" in text else "no better"
    assert verdict in text, text

    store = Store(db)
    run = store.runs()[-1]
    assert run["status"] == "done"
    evals = store.evals(run["id"])
    systems = {e["system"] for e in evals}
    assert {"base", "self-guide", "trivial", "epoch-1", "epoch-2"} <= systems
    assert (tmp_path / "run.db.runs" / f"run-{run['id']}" / "export" / "epoch-2.gguf").is_file()
