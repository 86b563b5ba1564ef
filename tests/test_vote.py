from sgtui.annotation import balance, map_to_label
from sgtui.filters import LengthFilter, NoiseFilter
from sgtui.vote import self_consistency_vote


def test_majority_wins():
    r = self_consistency_vote(["a", "b", "a", " a ", "c"])
    assert r.winner == "a" and r.count == 3 and r.survivors == 5


def test_ties_go_to_shortest_then_first_seen():
    assert self_consistency_vote(["long answer", "short", "long answer", "short"]).winner == "short"
    assert self_consistency_vote(["bb", "aa", "aa", "bb"]).winner == "bb"


def test_min_frequency_uses_survivors_as_denominator():
    # 10 candidates, 7 are noise; 1 of the 3 survivors is 33% >= 30%
    cands = ["input x"] * 7 + ["p", "q", "r"]
    r = self_consistency_vote(cands, [NoiseFilter(("input",))], 0.3)
    assert r.survivors == 3 and r.winner == "p" and r.dropped == {"noise": 7}
    # 4 distinct survivors: 25% < 30%: no consensus
    r = self_consistency_vote(["p", "q", "r", "s"], [], 0.3)
    assert r.winner is None and "no consensus" in r.reason


def test_no_survivors():
    r = self_consistency_vote(["", None, "   "], [])
    assert r.winner is None and r.dropped["empty"] == 3


def test_output_length_filter_applies_before_vote():
    r = self_consistency_vote(["x" * 50] * 6 + ["ok"] * 2, [LengthFilter(None, 10)], 0.3)
    assert r.winner == "ok" and r.survivors == 2


def test_label_mapping_fixes_reference_noop():
    labels = ["positive", "negative"]
    assert map_to_label("positive", labels) == "positive"
    assert map_to_label("The answer is negative.", labels) == "negative"
    assert map_to_label("positive or negative", labels) is None
    assert map_to_label("nonpositive", labels) is None


def test_balance_downsamples_to_smallest_class():
    samples = [{"id": i, "label": "a"} for i in range(5)] + [
        {"id": 10 + i, "label": "b"} for i in range(2)
    ]
    keep, counts = balance(samples, seed=1)
    assert counts == {"a": 5, "b": 2}
    assert len(keep) == 4 and {10, 11} <= keep
    assert balance(samples, seed=1)[0] == keep  # deterministic
    assert balance([], 0) == (set(), {})


def test_balance_keeps_nothing_below_min_labels():
    one = [{"id": i, "label": "a"} for i in range(5)]
    assert balance(one, seed=1) == ({0, 1, 2, 3, 4}, {"a": 5})  # the paper's rule
    assert balance(one, seed=1, min_labels=2) == (set(), {"a": 5})
    two = one + [{"id": 9, "label": "b"}]
    assert balance(two, seed=1, min_labels=2)[0] == {9} | (balance(two, seed=1)[0] - {9})


def test_a_run_whose_annotator_gave_one_label_has_nothing_to_train(tmp_path):
    """The small mode's balancing: one label alone is filtered with its reason and a warning;
    a keep mark still brings a sample back."""
    from sgtui.config import RunParams
    from sgtui.paths import example_tasks
    from sgtui.pipeline import SynthesisRun
    from sgtui.store import Store
    from sgtui.synthesis import create_run
    from sgtui.task import load_task

    task = load_task(next(p for p in example_tasks() if p.stem == "sentiment"))
    store = Store(tmp_path / "s.db")
    rid = create_run(store, task, RunParams.defaults_for(task.type, "small"), "m.gguf", "fake")
    ids = [
        store.add_sample(
            rid,
            round=0,
            slot=i,
            stage="annotated",
            input=f"review {i}",
            output="positive",
            label="positive",
            status="kept",
        )
        for i in range(6)
    ]
    notices = []
    run = SynthesisRun(store, rid, generator=None, emit=notices.append)
    run.finalize()
    assert store.training_pairs(rid) == []
    rows = store.samples(rid)
    assert {r["filter"] for r in rows} == {"class_balance"}
    assert all("'positive'" in r["reason"] and "one label" in r["reason"] for r in rows)
    assert any("one label" in w for w in run.summary()["warnings"])
    assert any(
        "one label" in n.text and n.level == "warning" for n in notices if hasattr(n, "text")
    )
    store.mark(ids[0], "keep")
    assert [s["id"] for s in store.training_pairs(rid)] == [ids[0]]


def test_mbr_chooses_the_answer_the_others_agree_with():
    from sgtui.vote import mbr_vote

    cands = [
        "the meeting is moved to friday afternoon",
        "the meeting was moved to friday",
        "we moved the meeting to friday afternoon",
        "ok",
        "ok",
    ]
    r = mbr_vote(cands, [], 0.0)
    # the exact vote would take the generic repeated "ok"; MBR takes the central paraphrase
    assert self_consistency_vote(cands).winner == "ok"
    assert r.winner == "the meeting is moved to friday afternoon"
    assert 0 < r.agreement < 1 and r.survivors == 5


def test_mbr_threshold_is_on_agreement():
    from sgtui.vote import mbr_vote

    scattered = ["red apples grow here", "a quantum lattice", "tomorrow we sail", "blue"]
    r = mbr_vote(scattered, [], 0.5)
    assert r.winner is None and "no consensus" in r.reason and r.agreement < 0.5
    same = ["the cat sat", "the cat sat", "the cat sat down"]
    r = mbr_vote(same, [], 0.5)
    assert r.winner == "the cat sat" and r.agreement > 0.9


def test_mbr_filters_and_lone_survivor():
    from sgtui.vote import mbr_vote

    r = mbr_vote(["input x", "", "fine answer"], [NoiseFilter(("input",))], 0.5)
    assert r.winner == "fine answer" and r.agreement == 1.0
    assert r.dropped == {"noise": 1, "empty": 1}
    assert mbr_vote(["", None], []).winner is None
