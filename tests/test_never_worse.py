"""`sgtui run` chooses the epoch on the task's own validation rows by default, and the
input-dependence filter compares every answer with the same other input on a resumed run."""

from __future__ import annotations

import json

from sgtui.input_dependence import other_inputs
from sgtui.task import default_val_split as _default_val_split


def test_default_validation_split_of_a_task_file_and_an_ni_folder(tmp_path):
    task = tmp_path / "rewrite.toml"
    task.write_text("name = 'x'\n")
    assert _default_val_split(task) is None  # no rows of its own: the last epoch is evaluated
    (tmp_path / "rewrite.val.jsonl").write_text(json.dumps({"input": "a", "output": "b"}) + "\n")
    assert _default_val_split(task) == str(tmp_path / "rewrite.val.jsonl")

    ni = tmp_path / "task001"
    ni.mkdir()
    (ni / "task.json").write_text("{}")
    (ni / "test.jsonl").write_text("")
    assert _default_val_split(ni) is None
    (ni / "validation.jsonl").write_text("")
    assert _default_val_split(ni) == f"{ni}:validation"
    assert _default_val_split(ni / "task.json") == f"{ni}:validation"


def test_the_other_input_is_the_next_different_one_in_round_and_slot_order():
    rows = [
        {"id": 5, "round": 1, "slot": 0, "input": "c"},
        {"id": 3, "round": 0, "slot": 1, "input": "b"},
        {"id": 1, "round": 0, "slot": 0, "input": "a"},
        {"id": 9, "round": 1, "slot": 1, "input": " c "},
    ]
    others = other_inputs(rows)
    # the order does not depend on the order the rows were read in (a resumed run)
    assert others == other_inputs(list(reversed(rows)))
    assert others == {1: "b", 3: "c", 5: "a", 9: "a"}  # 9 skips its own text to wrap round
    assert other_inputs([{"id": 1, "round": 0, "slot": 0, "input": "a"}]) == {}
