import json

import pytest

from sgtui.errors import SgtuiError
from sgtui.paths import example_tasks
from sgtui.task import load_task, parse_task, task_to_toml


def test_example_tasks_load():
    tasks = {load_task(p).name: load_task(p) for p in example_tasks()}
    assert len(tasks) >= 3
    types = {t.type for t in tasks.values()}
    assert types == {"generation", "classification"}


def test_ni_tasks_load_as_they_are(ni_dir):
    for d in sorted(ni_dir.iterdir()):
        t = load_task(d)
        raw = json.loads((d / "task.json").read_text())
        assert t.name == raw["task_id"] and t.type == raw["type"]
        assert t.extra_noise_terms == raw["extra_noise_terms"]
        assert len(t.examples) == len(raw["examples"])


def _write(tmp_path, text, name="t.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """name = "x"
type = "classification"
instruction = "say yes or no"
labels = ["yes", "no"]
[[examples]]
input = "a"
output = "yes"
[[examples]]
input = "b"
output = "no"
"""


def test_toml_round_trip(tmp_path):
    t = load_task(_write(tmp_path, GOOD))
    t2 = load_task(_write(tmp_path, task_to_toml(t), "t2.toml"))
    assert t2.to_dict() == t.to_dict()


@pytest.mark.parametrize(
    "text, words",
    [
        (GOOD.replace('instruction = "say yes or no"\n', ""), "missing field 'instruction'"),
        (GOOD.split('[[examples]]\ninput = "b"')[0], "2 to 10 examples"),
        (GOOD.replace('output = "no"', 'output = "maybe"'), "is not one of the labels"),
        (GOOD.replace('type = "classification"', 'type = "poetry"'), "field 'type'"),
        ("name = ", "does not parse"),
        (GOOD.replace('labels = ["yes", "no"]', 'labels = ["yes"]'), "at least 2 labels"),
    ],
)
def test_bad_task_files_name_file_and_fix(tmp_path, text, words):
    p = _write(tmp_path, text)
    with pytest.raises(SgtuiError) as e:
        load_task(p)
    assert words in e.value.message
    assert e.value.path == str(p) and e.value.fix


def test_missing_file(tmp_path):
    with pytest.raises(SgtuiError, match="not found"):
        load_task(tmp_path / "nope.toml")


def test_parse_rejects_non_table():
    with pytest.raises(SgtuiError):
        parse_task(["not", "a", "table"])
