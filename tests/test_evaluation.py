"""Evaluation: reading splits, the trivial and Self-ICL baselines, storing results, and a real
evaluation of the bundled model through llama.cpp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from backends.base import Completion
from sgtui import evaluation as ev
from sgtui.errors import SgtuiError
from sgtui.store import Store
from sgtui.task import Example, Task

CLS = Task(
    "yn",
    "classification",
    "Answer yes or no.",
    [Example("Is water wet?", "yes"), Example("Is fire cold?", "no")],
    labels=["yes", "no"],
    metric="exact_match",
)
GEN = Task(
    "echo",
    "generation",
    "Repeat the words.",
    [Example("a b", "a b"), Example("c d e", "c d e")],
    metric="rouge",
)


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- load_rows ------------------------------------------------------------------------------
def test_load_rows_reads_jsonl_and_strips_gold(tmp_path):
    p = write_jsonl(
        tmp_path / "s.jsonl",
        [{"input": " q ", "output": " yes\n"}, "", {"input": "r", "output": "no", "extra": 1}],
    )
    rows, name = ev.load_rows(str(p))
    assert rows == [{"input": " q ", "output": "yes"}, {"input": "r", "output": "no"}]
    assert name == "s.jsonl"


def test_load_rows_keeps_unicode_line_separators_inside_strings(tmp_path):
    p = tmp_path / "u.jsonl"
    p.write_text('{"input": "a\u2028b\u0085c", "output": "x"}\r\n', encoding="utf-8")
    assert ev.load_rows(str(p))[0] == [{"input": "a\u2028b\u0085c", "output": "x"}]


@pytest.mark.parametrize(
    "lines, words",
    [
        (['{"input": "a", "output": "b"}', "{not json"], ["line 2", "not valid JSON"]),
        (['{"input": "a"}'], ["line 1", "input", "output"]),
        (['["a", "b"]'], ["line 1"]),
        ([], ["no rows"]),
    ],
)
def test_load_rows_bad_files_name_the_line_and_the_fix(tmp_path, lines, words):
    p = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(SgtuiError) as e:
        ev.load_rows(str(p))
    assert e.value.path == str(p) and e.value.fix
    for w in words:
        assert w in e.value.message


def test_load_rows_missing_file_and_folder(tmp_path):
    with pytest.raises(SgtuiError, match="not found") as e:
        ev.load_rows(str(tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in e.value.path
    with pytest.raises(SgtuiError, match="folder") as e:
        ev.load_rows(str(tmp_path))
    assert ":test" in e.value.fix
    with pytest.raises(SgtuiError, match="no task folder"):
        ev.load_rows("no-such-task-anywhere:test")


def test_load_rows_limit_is_a_seeded_sample(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"input": str(i), "output": "x"} for i in range(50)])
    a, name = ev.load_rows(str(p), limit=10, seed=1)
    b, _ = ev.load_rows(str(p), limit=10, seed=1)
    c, _ = ev.load_rows(str(p), limit=10, seed=2)
    assert a == b and a != c and len(a) == 10
    assert [r["input"] for r in a] != [str(i) for i in range(10)]  # not just the first ten
    assert name == "s.jsonl[10 of 50, seed 1]"
    every, name = ev.load_rows(str(p), limit=80)
    assert len(every) == 50 and name == "s.jsonl"
    with pytest.raises(SgtuiError, match="at least 1"):
        ev.load_rows(str(p), limit=0)


def test_load_rows_ni_splits(ni_dir):
    rows, name = ev.load_rows("task121:validation")
    assert name == "task121:validation" and len(rows) == 12
    assert all(set(r) == {"input", "output"} for r in rows)
    rows2, name2 = ev.load_rows(f"{ni_dir / 'task121'}:validation")
    assert rows2 == rows and name2 == name
    with pytest.raises(SgtuiError, match="no 'train' split") as e:
        ev.load_rows("task121:train")
    assert "test" in e.value.fix and "validation" in e.value.fix


# -- trivial baseline, Self-ICL pairs, table ------------------------------------------------
def test_trivial_classification_answers_the_majority_label():
    rows = [
        {"input": "q1", "output": "yes"},
        {"input": "q2", "output": "no"},
        {"input": "q3", "output": "yes"},
        {"input": "q4", "output": "yes"},
    ]
    r = ev.trivial_baseline(CLS, rows)
    assert r.metric == "exact_match" and r.score == 75.0 and r.scores == {"exact_match": 75.0}
    assert [it["prediction"] for it in r.items] == ["yes"] * 4
    assert [it["score"] for it in r.items] == [100.0, 0.0, 100.0, 100.0]
    # a tie goes to the label seen first
    tie = ev.trivial_baseline(CLS, rows[:2])
    assert tie.items[0]["prediction"] == "yes" and tie.score == 50.0


def test_trivial_generation_copies_the_input():
    rows = [
        {"input": "a b c", "output": "a b c"},
        {"input": "x y", "output": "z"},
        {"input": "abc", "output": "abd"},
    ]
    r = ev.trivial_baseline(GEN, rows)
    assert r.metric == "rouge"
    assert [it["prediction"] for it in r.items] == ["a b c", "x y", "abc"]
    # word level: 1, 0, 0 -> 33.3; char level: 1, 0, LCS 2 of 3 -> (100 + 0 + 66.7) / 3
    assert r.score == pytest.approx(100 / 3)
    assert r.scores["rougeL_word"] == pytest.approx(100 / 3)
    assert r.scores["rougeL_char"] == pytest.approx((100 + 200 / 3) / 3)


def test_self_icl_pairs_take_a_third_at_most_eight():
    pairs = [{"input": f"i{k}", "output": f"o{k}"} for k in range(12)]
    got = ev.self_icl_pairs(pairs)
    assert len(got) == 4 and all(isinstance(p, tuple) for p in got)
    assert set(got) <= {(f"i{k}", f"o{k}") for k in range(12)}
    assert got == ev.self_icl_pairs(pairs)  # seeded
    assert len(ev.self_icl_pairs(pairs * 10)) == 8
    assert len(ev.self_icl_pairs(pairs[:2])) == 1
    assert ev.self_icl_pairs([("a", "b")] * 5, k=3) == [("a", "b")] * 3
    assert ev.self_icl_pairs([]) == []


def test_comparison_table_shows_delta_against_base():
    base = ev.EvalResult(
        "rouge", 40.0, {"rougeL_word": 40.0, "rougeL_char": 55.5}, [{}] * 3, dropped=1
    )
    tuned = ev.EvalResult("rouge", 52.25, {"rougeL_word": 52.25, "rougeL_char": 60.0}, [{}] * 3)
    lines = ev.comparison_table([("base", base), ("self-guide", tuned)]).splitlines()
    assert lines[0].split() == ["system", "metric", "score", "vs", "base", "n", "other"]
    assert lines[2].split()[:4] == ["base", "rouge", "40.0", "3"]
    assert "1 dropped" in lines[2] and "rougeL_char 55.5" in lines[2]
    assert lines[3].split()[:5] == ["self-guide", "rouge", "52.2", "+12.2", "3"]


# -- evaluate() with a scripted generator: prompt assembly and bookkeeping only ------------
@dataclass
class ScriptedGenerator:
    """Answers from a script, in reverse order; one token per word."""

    answers: dict[str, str]
    n_ctx: int = 200
    name: str = "scripted"
    model_path: str = "scripted"
    supports_batch: bool = True
    calls: list = field(default_factory=list)

    def render_chat(self, messages, add_generation_prompt=True):
        return "\n".join(m.content for m in messages)

    def count_tokens(self, text):
        return len(text.split())

    def generate(self, prompts, params, seeds=None):
        self.calls.append((list(prompts), params))
        for i in reversed(range(len(prompts))):
            key = prompts[i].rsplit("[input] = ", 1)[1]
            yield Completion(index=i, sample=0, text=f"  {self.answers[key]}\n")


def test_evaluate_collects_by_index_and_drops_long_prompts():
    gen = ScriptedGenerator({"q1": "yes", "q2": "I say no", "q3": "maybe"})
    rows = [
        {"input": "q1", "output": "yes"},
        {"input": "q2", "output": "no"},
        {"input": "q3", "output": "yes"},
        {"input": "long " * 300, "output": "no"},
    ]
    seen = []
    r = ev.evaluate(gen, CLS, rows, on_item=lambda d, t: seen.append((d, t)))
    assert r.dropped == 1 and r.n == 3
    assert [it["input"] for it in r.items] == ["q1", "q2", "q3"]
    assert [it["prediction"] for it in r.items] == ["yes", "I say no", "maybe"]  # stripped
    assert [it["score"] for it in r.items] == [100.0, 100.0, 0.0]
    assert r.score == pytest.approx(200 / 3)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    ((prompts, params),) = gen.calls  # one call for all rows
    assert params.temperature == 0.0 and params.n == 1
    # default budget: 2 x the longest seed/gold answer (1 token) + 16
    assert params.max_tokens == r.max_tokens == 18
    assert all("Is water wet?" in p for p in prompts)  # seed demonstrations in every prompt


def test_evaluate_with_self_icl_pairs_and_fit():
    gen = ScriptedGenerator({"new": "a b"}, n_ctx=80)  # prompt 53 words, 8 per pair
    pairs = [("p1 " * 5, "o1"), ("p2 " * 5, "o2"), ("p3 " * 5, "o3")]
    r = ev.evaluate(
        gen, GEN, [{"input": "new", "output": "a b"}], extra_pairs=pairs[:1], max_tokens=4
    )
    assert "p1" in gen.calls[0][0][0] and r.score == 100.0
    fitted = ev.fit_pairs(gen, GEN, pairs, [{"input": "new", "output": "a b"}], max_tokens=4)
    assert 0 < len(fitted) < 3 and fitted == pairs[: len(fitted)]
    with pytest.raises(SgtuiError, match="none of the 1 rows fits"):
        ev.evaluate(gen, GEN, [{"input": "new", "output": "a b"}], extra_pairs=pairs, max_tokens=40)


def test_save_stores_the_eval_and_items(tmp_path):
    store = Store(tmp_path / "e.db")
    rid = store.create_run(CLS, store.add_task(CLS), {}, "m.gguf", "llama-cpp")
    rows = [{"input": "q1", "output": "yes"}, {"input": "q2", "output": "no"}]
    eid = ev.save(store, rid, "trivial", "s.jsonl", ev.trivial_baseline(CLS, rows), "none")
    (row,) = store.evals(rid)
    assert row["id"] == eid and row["system"] == "trivial" and row["n"] == 2
    assert row["score"] == 50.0 and row["scores"]["exact_match"] == 50.0
    assert row["scores"]["dropped"] == 0
    assert [(i["input"], i["gold"], i["score"]) for i in store.eval_items(eid)] == [
        ("q1", "yes", 100.0),
        ("q2", "no", 0.0),
    ]


# -- the command line ----------------------------------------------------------------------
def sgtui(*args, tmp_path, timeout=600):
    env = {**os.environ, "SGTUI_HOME": str(tmp_path / "home")}
    return subprocess.run(
        [sys.executable, "-m", "sgtui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_eval_errors_are_short(tmp_path):
    task = tmp_path / "t.toml"
    task.write_text(
        'name="t"\ntype="generation"\ninstruction="do"\n[[examples]]\ninput="a"\n'
        'output="b"\n[[examples]]\ninput="c"\noutput="d"\n'
    )
    for args, words in [
        ([str(task), "--split", str(tmp_path / "nope.jsonl")], ["nope.jsonl", "not found"]),
        ([str(task), "--split", "x.jsonl", "--systems", "base,self-icl"], ["--run"]),
        ([str(task), "--split", "x.jsonl", "--systems", "gpt5"], ["unknown system gpt5"]),
        ([str(task)], ["no evaluation split", "--split"]),
    ]:
        p = sgtui("eval", *args, tmp_path=tmp_path, timeout=120)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        for w in words:
            assert w in p.stderr


# -- the real model -------------------------------------------------------------------------
@pytest.mark.slow
def test_real_evaluation_is_stored(tmp_path, llama, ni_dir):
    from sgtui.task import load_task

    task = load_task(ni_dir / "task738")  # the shortest prompts among the NI tasks
    rows, split = ev.load_rows("task738:validation", limit=8)
    result = ev.evaluate(llama, task, rows)
    assert result.metric == "exact_match" and result.n + result.dropped == 8
    assert 0.0 <= result.score <= 100.0 and result.scores == {"exact_match": result.score}
    kept = [r for r in rows if r["input"] in {it["input"] for it in result.items}]
    assert [(it["input"], it["gold"]) for it in result.items] == [
        (r["input"], r["output"]) for r in kept
    ]
    assert all(it["score"] in (0.0, 100.0) for it in result.items)

    store = Store(tmp_path / "e.db")
    rid = store.create_run(task, store.add_task(task), {}, llama.model_path, "llama-cpp")
    eid = ev.save(store, rid, "base", split, result, llama.model_path)
    (row,) = store.evals(rid)
    assert (row["id"], row["system"], row["split"], row["metric"]) == (
        eid,
        "base",
        "task738:validation[8 of 640, seed 0]",
        "exact_match",
    )
    assert row["n"] == result.n and row["score"] == pytest.approx(result.score)
    items = store.eval_items(eid)
    assert [(i["input"], i["gold"], i["prediction"]) for i in items] == [
        (it["input"], it["gold"], it["prediction"]) for it in result.items
    ]


def test_cli_eval_trivial_uses_the_eval_file_beside_the_task(tmp_path):
    task = tmp_path / "t.toml"
    task.write_text(
        'name="t"\ntype="classification"\ninstruction="do"\nlabels=["x","y"]\n'
        '[[examples]]\ninput="a"\noutput="x"\n[[examples]]\ninput="c"\noutput="y"\n'
    )
    write_jsonl(tmp_path / "t.eval.jsonl", [{"input": "q", "output": o} for o in "xxy"])
    db = tmp_path / "t.db"
    p = sgtui(
        "eval", str(task), "--systems", "trivial", "--db", str(db), tmp_path=tmp_path, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[2].split()[:4] == ["trivial", "exact_match", "66.7", "3"]
    ((split, run_id),) = Store(db).db.execute("select split, run_id from evals").fetchall()
    assert split == "t.eval.jsonl" and run_id is None


def _run_with_pairs(db, task, model, pairs) -> int:
    store = Store(db)
    rid = store.create_run(task, store.add_task(task), {}, model, "llama-cpp")
    for i, (x, y) in enumerate(pairs):
        store.add_sample(rid, round=0, slot=i, stage="annotated", status="kept", input=x, output=y)
    store.close()
    return rid


def test_cli_eval_refuses_missing_pairs_and_adapter(tmp_path, ni_dir):
    from sgtui.task import load_task

    db = tmp_path / "e.db"
    rid = _run_with_pairs(db, load_task(ni_dir / "task738"), "m.gguf", [])
    p = sgtui(
        "eval",
        "--run",
        str(rid),
        "--db",
        str(db),
        "--split",
        "task738:validation",
        tmp_path=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2 and "no synthetic pairs" in p.stderr and "Traceback" not in p.stderr
    p = sgtui(
        "eval",
        "task738",
        "--adapter",
        str(tmp_path / "lora.gguf"),
        "--db",
        str(db),
        tmp_path=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2 and "adapter file not found" in p.stderr, p.stderr


@pytest.mark.slow
def test_cli_eval_prints_and_stores_the_table(tmp_path, ni_dir, bundled_model):
    from sgtui.task import load_task

    db = tmp_path / "cli.db"
    synthetic, _ = ev.load_rows("task738:test", limit=3)
    rid = _run_with_pairs(
        db,
        load_task(ni_dir / "task738"),
        bundled_model,
        [(r["input"], r["output"]) for r in synthetic],
    )
    # the base system is covered by test_real_evaluation_is_stored; leaving it out here keeps
    # the model's work to 5 prompts
    p = sgtui(
        "eval",
        "task738",
        "--split",
        "task738:validation",
        "--limit",
        "5",
        "--db",
        str(db),
        "--run",
        str(rid),
        "--systems",
        "trivial,self-icl",
        tmp_path=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["system", "metric", "score"]
    table = [line.split() for line in lines[2:4]]
    assert [t[0] for t in table] == ["trivial", "self-icl"]
    for t in table:
        assert t[1] == "exact_match" and 0 <= float(t[2]) <= 100
    assert "stored in" in lines[4]
    store = Store(db)
    got = {e["system"]: e for e in store.evals(rid)}
    assert set(got) == {"trivial", "self-icl"}
    assert got["trivial"]["n"] == 5 and got["self-icl"]["n"] <= 5
    assert len(store.eval_items(got["self-icl"]["id"])) == got["self-icl"]["n"]
    assert got["self-icl"]["scores"]["extra_pairs"] == 1  # a third of 3 synthetic pairs
    assert all(e["split"] == "task738:validation[5 of 640, seed 0]" for e in got.values())
