"""The max-min selection, the seeds and the resumable cells of `sgtui search`. Most cells here
are scripted numbers: they test the selection and bookkeeping, not the loop. The slow test at
the end measures real cells on the bundled model through llama.cpp."""

from __future__ import annotations

import json
import os
import statistics

import pytest

from sgtui.errors import SgtuiError
from sgtui.search import (
    config_key,
    parse_grid,
    parse_seeds,
    rank,
    ranking_text,
    run_search,
    shared_run,
)
from sgtui.store import Store, now

QUIET = {"log": lambda s: None}


def scripted(table: dict, base: float = 40.0, task_type: str = "generation", calls=None):
    """A measure that scores (mode, task, seed) from `table`, recording its calls."""

    def measure(config, task, seed, note):
        if calls is not None:
            calls.append((config["mode"], task, seed))
        return {"task_type": task_type, "base": base, "score": table[(config["mode"], task, seed)]}

    return measure


def test_parse_grid_is_the_cartesian_product():
    configs = parse_grid("mode=paper,small;epochs=1,3;small_filters=on")
    assert len(configs) == 4
    assert {"mode": "small", "epochs": 3, "small_filters": True} in configs
    with pytest.raises(SgtuiError):
        parse_grid("colour=red")
    with pytest.raises(SgtuiError):
        parse_grid("epochs=one")


def test_parse_seeds():
    assert parse_seeds("42,1,2") == [42, 1, 2]
    assert parse_seeds(" 7 , 7,3,") == [7, 3]
    for bad in ("", "one", "-1", str(2**32)):
        with pytest.raises(SgtuiError, match="--seeds"):
            parse_seeds(bad)


def test_max_min_ranks_by_the_mean_over_seeds_and_resumes(tmp_path):
    store = Store(tmp_path / "s.db")
    # seed 42 alone would pick a (+10 and +6 against b's +3 and +2); over three seeds a's t2
    # mean is -2 (min -2) and b's worst mean is +2 -> b wins
    scores = {
        ("a", "t1", 42): 50,
        ("a", "t1", 1): 50,
        ("a", "t1", 2): 50,
        ("a", "t2", 42): 46,
        ("a", "t2", 1): 30,
        ("a", "t2", 2): 38,
        ("b", "t1", 42): 43,
        ("b", "t1", 1): 44,
        ("b", "t1", 2): 45,
        ("b", "t2", 42): 42,
        ("b", "t2", 1): 42,
        ("b", "t2", 2): 42,
    }
    calls: list = []
    measure = scripted(scores, calls=calls)
    configs = [{"mode": "a"}, {"mode": "b"}]
    ranking = run_search(store, "s", configs, ["t1", "t2"], measure, seeds=[42, 1, 2], **QUIET)
    assert [r.config["mode"] for r in ranking] == ["b", "a"]
    assert ranking[0].min_delta == pytest.approx(2) and ranking[1].min_delta == pytest.approx(-2)
    assert ranking[1].scores["t2"] == [46, 30, 38]
    assert len(calls) == 12

    # every seed's score, the mean and the sample sd are stored with the cell
    row = next(
        store.db["search_cells"].rows_where(
            "config = ? and task = ?", [config_key({"mode": "a"}), "t2"]
        )
    )
    cell = json.loads(row["cell"])
    assert cell["scores"] == {"42": 46, "1": 30, "2": 38}
    assert cell["mean"] == row["score"] == pytest.approx(38)
    assert cell["sd"] == pytest.approx(statistics.stdev([46, 30, 38]))
    assert row["delta"] == pytest.approx(-2) and "pending" not in cell

    # the table shows mean ± sd per cell
    text = ranking_text(ranking)
    assert "t2               base  40.0   38.0 ±  8.0  -2.0" in text, text

    # a second call measures nothing again; more seeds measure only the new seed
    run_search(store, "s", configs, ["t1", "t2"], measure, seeds=[42, 1, 2], **QUIET)
    assert len(calls) == 12
    scores.update({(m, t, 9): 40 for m in "ab" for t in ("t1", "t2")})
    run_search(store, "s", configs, ["t1", "t2"], measure, seeds=[42, 1, 2, 9], **QUIET)
    assert sorted(calls[12:]) == [(m, t, 9) for m in "ab" for t in ("t1", "t2")]
    assert len(rank(store, "s")[0].scores["t1"]) == 4


def test_a_cell_stopped_between_seeds_continues_with_the_seeds_it_lacks(tmp_path):
    store = Store(tmp_path / "s.db")
    calls: list = []
    runs_seen: list = []

    def measure(config, task, seed, note):
        calls.append(seed)
        # the first seed makes the cell's run and notes it before its training
        run = shared_run(store, "s", task, config)
        runs_seen.append(run)
        if run is None:
            note({"run": 7})
        if seed == 1 and len(calls) == 2:
            raise KeyboardInterrupt  # stopped during the second seed's training
        return {"task_type": "generation", "base": 30.0, "score": 30.0 + seed, "run": 7}

    with pytest.raises(KeyboardInterrupt):
        run_search(store, "s", [{"mode": "small"}], ["t"], measure, seeds=[42, 1, 2], **QUIET)
    # the stopped cell is stored with the seed it finished, and is not ranked yet
    cell = json.loads(next(store.db["search_cells"].rows)["cell"])
    assert cell["scores"] == {"42": 72.0} and cell["pending"] == [1, 2]
    assert rank(store, "s") == []

    ranking = run_search(store, "s", [{"mode": "small"}], ["t"], measure, seeds=[42, 1, 2], **QUIET)
    assert calls == [42, 1, 1, 2]  # seed 42 is not measured again
    assert runs_seen == [None, 7, 7, 7]  # the resumed seeds find the cell's run
    assert ranking[0].scores["t"] == [72.0, 31.0, 32.0]
    assert ranking[0].min_delta == pytest.approx(statistics.fmean([42, 1, 2]))


def test_cells_of_an_older_search_load_as_one_seed(tmp_path):
    store = Store(tmp_path / "s.db")
    # the shape stored before seeds: one score, a cell without scores
    for mode, score in (("a", 45.0), ("b", 38.0)):
        store.db["search_cells"].insert(
            {
                "search": "s",
                "config": config_key({"mode": mode}),
                "task": "t",
                "task_type": "generation",
                "base": 40.0,
                "score": score,
                "delta": score - 40.0,
                "cell": json.dumps(
                    {"task_type": "generation", "base": 40.0, "score": score, "run": 3}
                ),
                "created": now(),
            }
        )
    calls: list = []
    ranking = run_search(
        store,
        "s",
        [{"mode": "a"}, {"mode": "b"}],
        ["t"],
        scripted({}, calls=calls),
        seeds=[42, 1, 2],
        **QUIET,
    )
    assert calls == []  # an older cell is done: it is not trained again
    assert [r.config["mode"] for r in ranking] == ["a", "b"]
    assert ranking[0].scores == {"t": [45.0]} and ranking[0].min_delta == 5
    assert "(1 seed)" in ranking_text(ranking)
    assert shared_run(store, "s", "t", {"mode": "a", "epochs": 1}) == 3


def test_nothing_to_train_counts_as_no_change(tmp_path):
    store = Store(tmp_path / "s.db")
    ranking = run_search(
        store,
        "s",
        [{"mode": "paper"}],
        ["t"],
        lambda c, t, s, note: {"task_type": "classification", "base": 30.0, "score": None},
        seeds=[42, 1],
        **QUIET,
    )
    assert ranking[0].min_delta == 0 and ranking[0].scores["t"] == [30.0, 30.0]
    assert config_key({"b": 1, "a": 2}) == config_key({"a": 2, "b": 1})


def test_cells_that_differ_only_in_epochs_share_a_run(tmp_path):
    store = Store(tmp_path / "s.db")
    run_search(
        store,
        "s",
        [{"mode": "small", "epochs": 3}],
        ["t"],
        lambda c, t, s, note: {"task_type": "generation", "base": 30.0, "score": 35.0, "run": 7},
        **QUIET,
    )
    assert shared_run(store, "s", "t", {"mode": "small", "epochs": 1}) == 7
    assert shared_run(store, "s", "t", {"epochs": 1, "mode": "small"}) == 7
    assert shared_run(store, "s", "t", {"mode": "paper", "epochs": 1}) is None
    assert shared_run(store, "s", "other", {"mode": "small", "epochs": 1}) is None
    assert shared_run(store, "other", "t", {"mode": "small", "epochs": 1}) is None


def test_a_tie_on_the_minimum_goes_to_the_higher_mean(tmp_path):
    store = Store(tmp_path / "s.db")
    deltas = {("a", "t1"): 2, ("a", "t2"): 2, ("b", "t1"): 2, ("b", "t2"): 9}
    ranking = run_search(
        store,
        "s",
        [{"mode": "a"}, {"mode": "b"}],
        ["t1", "t2"],
        lambda c, t, s, note: {
            "task_type": "generation",
            "base": 10.0,
            "score": 10.0 + deltas[(c["mode"], t)],
        },
        seeds=[42],
        **QUIET,
    )
    assert [r.config["mode"] for r in ranking] == ["b", "a"]
    assert ranking[0].min_delta == ranking[1].min_delta == 2


def test_search_refuses_bad_seeds_before_any_work(tmp_path, capsys):
    from sgtui.cli import main

    code = main(["search", "--tasks", "task1195", "--seeds", "1,x", "--db", str(tmp_path / "s.db")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "'x'" in err
    assert not (tmp_path / "s.db").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_cells_train_each_seed_once_and_share_it_across_epochs(
    tmp_path, ni_dir, bundled_model, monkeypatch
):
    """Two configurations differing only in epochs, two seeds, three validation rows of an NI
    task, through the real loop: one synthesis, one training per seed, each seed scored."""
    import sgtui.loop as loop
    from sgtui.search import real_measure
    from sgtui.training import run_dir

    trainings: list = []
    real_train = loop.train

    def counting_train(db, run_id, params, **kw):
        trainings.append(params.seed)
        return real_train(db, run_id, params, **kw)

    monkeypatch.setattr(loop, "train", counting_train)
    # one thread for llama.cpp here and torch in the training child, as the other real-model
    # tests use: on a shared machine, threads that wait for each other cost ten times as much
    threads = os.environ.get("SGTUI_THREADS", "1")
    monkeypatch.setenv("SGTUI_THREADS", threads)
    if threads != "0":
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
    store = Store(tmp_path / "s.db")
    # a handful of short samples: the test is about the seeds' bookkeeping, not their quality
    small = {
        "mode": "small",
        "rounds": 1,
        "per_round": 4,
        "n": 3,
        "gen_max_tokens": 48,
        "ann_max_tokens": 32,
    }
    configs = [{**small, "epochs": 1}, {**small, "epochs": 2}]
    measure = real_measure(store, bundled_model, "validation", 3, {}, search="s", max_epochs=2)
    ranking = run_search(store, "s", configs, ["task1195"], measure, seeds=[42, 1], **QUIET)

    assert len(store.runs()) == 1  # one synthesis for both configurations and both seeds
    rid = store.runs()[0]["id"]
    assert len(store.training_pairs(rid)) > 0, "nothing survived the filters; nothing trained"
    assert trainings == [42, 1]  # the epochs=2 cell scored the seeds' 2-epoch checkpoints
    export = run_dir(store, rid) / "export"
    for seed in (42, 1):
        for k in (1, 2):
            assert (export / f"seed-{seed}-epoch-{k}-of-2.gguf").is_file()
    assert {e["system"] for e in store.evals(rid)} >= {
        f"seed-{s}-epoch-{k}" for s in (42, 1) for k in (1, 2)
    }

    assert {json.dumps(r.config, sort_keys=True) for r in ranking} == {
        config_key(c) for c in configs
    }
    for r in ranking:
        scores = r.scores["task1195"]
        assert len(scores) == 2 and all(0 <= s <= 100 for s in scores)
        assert r.deltas["task1195"] == pytest.approx(statistics.fmean(scores) - r.bases["task1195"])
    assert "±" in ranking_text(ranking)

    # run again: every seed of every cell is stored, so nothing is synthesised or trained
    run_search(store, "s", configs, ["task1195"], measure, seeds=[42, 1], **QUIET)
    assert trainings == [42, 1] and len(store.runs()) == 1
