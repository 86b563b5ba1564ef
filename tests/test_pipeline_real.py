"""The synthesis pipeline against the real bundled model through llama.cpp.

The runs use the small-model mode (short inputs, stop at the end of the line): in the paper's
mode the bundled model runs on into further "[input]=" lines, and the noise filter drops every
input, which would leave nothing to annotate."""

from __future__ import annotations

import pytest

from sgtui.config import RunParams
from sgtui.events import ProgressEvent, SampleEvent
from sgtui.paths import REPO_DATA
from sgtui.pipeline import SynthesisRun
from sgtui.store import Store
from sgtui.synthesis import create_run
from sgtui.task import load_task

pytestmark = pytest.mark.slow

SMALL = dict(
    mode="small", rounds=2, per_round=4, gen_max_tokens=48, n=3, best_of=3, ann_max_tokens=24
)


def assert_votes_are_counts(r: dict, n: int) -> None:
    """The stored votes decode to {candidate: count}: one vote per candidate that survived the
    output filters, at most n, and a kept sample's output is one of them."""
    votes = r["votes"]
    assert isinstance(votes, dict), votes
    assert all(isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in votes.items())
    assert sum(votes.values()) <= n and len(r["candidates"]) == n
    if r["status"] == "kept":
        assert r["output"] in votes


def test_two_rounds_generate_and_annotate(tmp_path, llama):
    task = load_task(REPO_DATA / "tasks" / "sentiment.toml")
    params = RunParams.defaults_for(task.type).override(input_length_filter=False, **SMALL)
    store = Store(tmp_path / "p.db")
    rid = create_run(store, task, params, llama.model_path, "llama-cpp")
    events = []
    summary = SynthesisRun(store, rid, llama, events.append).run()

    rows = store.samples(rid)
    # every slot of both rounds was generated and stored exactly once
    assert sorted((r["round"], r["slot"]) for r in rows) == [
        (r, s) for r in range(2) for s in range(4)
    ]
    assert all(r["raw_output"] is not None for r in rows)
    # each classification prompt carried a pseudo-label from the task's labels
    assert {r["pseudo_label"] for r in rows} <= set(task.labels)
    # every candidate either passed the input filters (and was annotated) or names its filter
    for r in rows:
        if r["stage"] == "input":
            assert r["status"] == "filtered" and r["filter"] and r["reason"]
        else:
            assert r["stage"] == "annotated"
            assert_votes_are_counts(r, 3)
            if r["output"] is not None:  # the exact vote: a label the most candidates gave
                assert r["votes"][r["output"]] == max(r["votes"].values())
            if r["status"] == "kept":
                assert r["label"] in task.labels and r["output"] == r["label"]
    run = store.run(rid)
    assert run["status"] == "done" and run["stage"] == "done"
    assert summary["candidates"] == 8
    assert set(run["timings"]) == {"inputs", "annotate", "balance"}
    assert any(isinstance(e, SampleEvent) for e in events)
    assert any(isinstance(e, ProgressEvent) and e.stage == "done" for e in events)
    # kept classification samples are balanced across the labels that occur
    kept = [r for r in store.samples(rid) if r["status"] == "kept"]
    assert kept, "no sample was kept: nothing to check the balance on"
    counts = {}
    for r in kept:
        counts[r["label"]] = counts.get(r["label"], 0) + 1
    assert len(set(counts.values())) == 1
    # what balancing dropped was annotated and voted on like the rest, and says why
    for r in (r for r in store.samples(rid) if r["filter"] == "class_balance"):
        assert r["label"] in counts and r["reason"]


def test_generation_task_uses_output_length_filter(tmp_path, llama):
    task = load_task(REPO_DATA / "tasks" / "city-fact.toml")
    params = RunParams.defaults_for(task.type).override(**SMALL)
    assert params.output_length_filter and not params.input_length_filter
    store = Store(tmp_path / "g.db")
    rid = create_run(store, task, params, llama.model_path, "llama-cpp")
    SynthesisRun(store, rid, llama).run()
    from sgtui.filters import length_window

    lo, hi = length_window(task.seed_outputs)
    annotated = [r for r in store.samples(rid) if r["stage"] == "annotated"]
    kept = [r for r in annotated if r["status"] == "kept"]
    assert kept, "no sample was kept: nothing to check the output length filter on"
    for r in kept:
        assert len(r["output"]) < hi and (lo is None or len(r["output"]) >= lo)
    for r in annotated:
        assert_votes_are_counts(r, SMALL["n"])
        if r["status"] == "filtered" and not r["votes"]:
            assert "no candidate survived" in r["reason"]
