"""`sgtui export RUN` warns first when the run's fine-tune scored below its base model.

The scores are the ones `sgtui run` and `sgtui eval` store (Store.add_eval): the run's latest
fine-tune evaluation ("self-guide" or an epoch's checkpoint) against the base model's on the same
split. The export goes ahead all the same, with the same exit code. The CLI tests export
`--format adapter`, which copies the run's adapter folder: a folder holding the two files an
adapter has stands in for a trained one, since what is checked is the warning, not the weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sgtui.cli import main
from sgtui.evaluation import fine_tune_against_base, which_model
from sgtui.store import Store
from sgtui.task import parse_task

SPLIT = "formal-rewrite.eval.jsonl"
TASK = {
    "name": "formal-rewrite",
    "type": "generation",
    "instruction": "Rewrite it formally.",
    "examples": [
        {"input": "hey", "output": "Good afternoon."},
        {"input": "thx", "output": "Thank you very much."},
    ],
}


def make_run(store: Store, model: str = "base.gguf") -> int:
    task = parse_task(TASK, "test")
    return store.create_run(task, store.add_task(task), {}, model, "llama-cpp")


def add_eval(
    store: Store,
    run_id: int | None,
    system: str,
    score: float,
    split: str = SPLIT,
    metric: str = "rouge",
    model: str = "base.gguf",
) -> None:
    store.add_eval(run_id, system, split, metric, score, {}, model, [])


def give_adapter(store: Store, run_id: int, root: Path) -> Path:
    adapter = root / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    store.add_artifact(run_id, "adapter", str(adapter))
    return adapter


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "w.db"


def export(db: Path, run_id: int, tmp_path: Path) -> int:
    return main(
        [
            "export",
            str(run_id),
            "--format",
            "adapter",
            "--db",
            str(db),
            "--out",
            str(tmp_path / "out"),
        ]
    )


def test_a_worse_fine_tune_is_named_before_the_export(db, tmp_path, capsys):
    store = Store(db)
    rid = make_run(store)
    add_eval(store, rid, "base", 29.9)
    add_eval(store, rid, "self-guide", 24.6, model="base.gguf + adapter.gguf")
    add_eval(store, rid, "trivial", 10.0, model="none")
    give_adapter(store, rid, tmp_path)
    assert export(db, rid, tmp_path) == 0
    out = capsys.readouterr()
    assert (
        f"warning: run {rid}'s fine-tune scored 24.6 ROUGE-L against the base model's 29.9 "
        f"on {SPLIT}: it is worse than the base model"
    ) in out.err
    assert "exported adapter" in out.out  # exported all the same
    assert (tmp_path / "out" / "adapter_config.json").is_file()


def test_the_warning_comes_before_the_export_even_when_the_export_fails(db, tmp_path, capsys):
    store = Store(db)
    rid = make_run(store)
    add_eval(store, rid, "base", 50.0, metric="exact_match")
    add_eval(store, rid, "self-guide", 40.0, metric="exact_match")
    assert export(db, rid, tmp_path) == 2  # no adapter: refused as before
    err = capsys.readouterr().err
    assert "40.0 exact match against the base model's 50.0" in err
    assert err.index("warning:") < err.index("no trained adapter")


@pytest.mark.parametrize("tuned", [29.9, 35.0])
def test_a_fine_tune_as_good_or_better_exports_without_a_word(db, tmp_path, capsys, tuned):
    store = Store(db)
    rid = make_run(store)
    add_eval(store, rid, "base", 29.9)
    add_eval(store, rid, "self-guide", tuned)
    give_adapter(store, rid, tmp_path)
    assert export(db, rid, tmp_path) == 0
    assert "warning" not in capsys.readouterr().err


def test_the_latest_fine_tune_evaluation_counts(db):
    store = Store(db)
    rid = make_run(store)
    add_eval(store, rid, "base", 29.9)
    add_eval(store, rid, "self-guide", 24.6)
    add_eval(store, rid, "self-guide", 31.0)  # evaluated again, e.g. after training again
    tuned, base = fine_tune_against_base(store, rid)
    assert (tuned["score"], base["score"]) == (31.0, 29.9)


def test_an_epoch_is_compared_on_its_own_split(db, tmp_path, capsys):
    """`sgtui run --val-split` scores epochs on the validation split, the base on the test
    split; an epoch with no base on its split is passed over for one that has."""
    store = Store(db)
    rid = make_run(store)
    add_eval(store, rid, "base", 29.9)
    add_eval(store, rid, "self-guide", 24.6)
    add_eval(store, rid, "epoch-2", 40.0, split="val.jsonl")
    tuned, base = fine_tune_against_base(store, rid)
    assert (tuned["system"], base["split"]) == ("self-guide", SPLIT)
    add_eval(store, rid, "base", 45.0, split="val.jsonl")
    add_eval(store, rid, "epoch-3", 41.0, split="val.jsonl")
    give_adapter(store, rid, tmp_path)
    assert export(db, rid, tmp_path) == 0
    assert (
        f"run {rid}'s fine-tune (epoch-3) scored 41.0 ROUGE-L against the base model's "
        "45.0 on val.jsonl"
    ) in capsys.readouterr().err


def test_nothing_to_compare_means_no_warning(db, tmp_path, capsys):
    store = Store(db)
    rid = make_run(store)
    add_eval(store, rid, "self-guide", 24.6)
    add_eval(store, rid, "base", 29.9, split="other.jsonl")  # another split: not comparable
    add_eval(store, rid, "base", 29.9, metric="exact_match")  # another metric: neither
    assert fine_tune_against_base(store, rid) is None
    give_adapter(store, rid, tmp_path)
    assert export(db, rid, tmp_path) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_base_evaluated_without_a_run_counts_for_the_same_model(db):
    """`sgtui eval` without --run stores the base model's score under no run."""
    store = Store(db)
    rid = make_run(store, model="base.gguf")
    add_eval(store, rid, "self-guide", 24.6)
    add_eval(store, None, "base", 35.0, model="another.gguf")
    assert fine_tune_against_base(store, rid) is None
    add_eval(store, None, "base", 29.9, model="base.gguf")
    tuned, base = fine_tune_against_base(store, rid)
    assert (tuned["score"], base["score"], base["run_id"]) == (24.6, 29.9, None)


def test_which_model_in_plain_words():
    assert which_model(29.9, 24.6) == (
        "the fine-tune is worse than the base model (24.6 against 29.9): keep using the base model"
    )
    assert which_model(29.9, 29.9) == (
        "the fine-tune is no better than the base model (29.9 "
        "against 29.9): keep using the base model"
    )
    assert which_model(29.9, 31.0, "a.gguf") == (
        "use the fine-tune: it scored 31.0, +1.1 over the base model's 29.9 (adapter: a.gguf)"
    )
