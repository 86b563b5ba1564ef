"""The max-min selection and resumable cells of `sgtui search`. The cells here are scripted
numbers: this tests the selection logic, not the loop (the loop is tested with the real model
in the training and pipeline tests)."""
import pytest

from sgtui.errors import SgtuiError
from sgtui.search import config_key, parse_grid, rank, run_search
from sgtui.store import Store


def test_parse_grid_is_the_cartesian_product():
    configs = parse_grid("mode=paper,small;epochs=1,3;small_filters=on")
    assert len(configs) == 4
    assert {"mode": "small", "epochs": 3, "small_filters": True} in configs
    with pytest.raises(SgtuiError):
        parse_grid("colour=red")
    with pytest.raises(SgtuiError):
        parse_grid("epochs=one")


def test_max_min_picks_the_best_worst_case_and_resumes(tmp_path):
    store = Store(tmp_path / "s.db")
    configs = [{"mode": "a"}, {"mode": "b"}]
    # a: +10 on t1, -5 on t2 (min -5); b: +2 and +1 (min +1) -> b wins despite a lower sum
    deltas = {("a", "t1"): 10, ("a", "t2"): -5, ("b", "t1"): 2, ("b", "t2"): 1}
    calls = []

    def measure(config, task):
        calls.append((config["mode"], task))
        return {"task_type": "generation", "base": 40.0, "score": 40.0 + deltas[(config["mode"], task)]}

    ranking = run_search(store, "s", configs, ["t1", "t2"], measure, log=lambda s: None)
    assert [r.config["mode"] for r in ranking] == ["b", "a"]
    assert ranking[0].min_delta == 1 and ranking[1].min_delta == -5
    # a second call measures nothing again
    run_search(store, "s", configs, ["t1", "t2"], measure, log=lambda s: None)
    assert len(calls) == 4
    assert len(rank(store, "s")) == 2


def test_nothing_to_train_counts_as_no_change(tmp_path):
    store = Store(tmp_path / "s.db")
    ranking = run_search(store, "s", [{"mode": "paper"}], ["t"],
                         lambda c, t: {"task_type": "classification", "base": 30.0, "score": None},
                         log=lambda s: None)
    assert ranking[0].min_delta == 0
    assert config_key({"b": 1, "a": 2}) == config_key({"a": 2, "b": 1})


def test_cells_that_differ_only_in_epochs_share_a_run(tmp_path):
    from sgtui.search import shared_run
    store = Store(tmp_path / "s.db")
    run_search(store, "s", [{"mode": "small", "epochs": 3}], ["t"],
               lambda c, t: {"task_type": "generation", "base": 30.0, "score": 35.0, "run": 7},
               log=lambda s: None)
    assert shared_run(store, "s", "t", {"mode": "small", "epochs": 1}) == 7
    assert shared_run(store, "s", "t", {"epochs": 1, "mode": "small"}) == 7
    assert shared_run(store, "s", "t", {"mode": "paper", "epochs": 1}) is None
    assert shared_run(store, "s", "other", {"mode": "small", "epochs": 1}) is None
    assert shared_run(store, "other", "t", {"mode": "small", "epochs": 1}) is None


def test_a_tie_on_the_minimum_goes_to_the_higher_mean(tmp_path):
    store = Store(tmp_path / "s.db")
    deltas = {("a", "t1"): 2, ("a", "t2"): 2, ("b", "t1"): 2, ("b", "t2"): 9}
    ranking = run_search(store, "s", [{"mode": "a"}, {"mode": "b"}], ["t1", "t2"],
                         lambda c, t: {"task_type": "generation", "base": 10.0,
                                       "score": 10.0 + deltas[(c["mode"], t)]},
                         log=lambda s: None)
    assert [r.config["mode"] for r in ranking] == ["b", "a"]
    assert ranking[0].min_delta == ranking[1].min_delta == 2
