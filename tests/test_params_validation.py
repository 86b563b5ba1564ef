"""Every run and training parameter is checked by one declaration (sgtui/config.py,
TrainParams.validate), before a model is loaded or a run is created: the CLI refuses a bad
value with exit 2 and a message naming the flag and its range, the TUI form with the same
message. `mark` names the ids it did not find."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from fakes import make_reviewed_run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sgtui.cli import main
from sgtui.config import RunParams
from sgtui.errors import SgtuiError
from sgtui.paths import REPO_DATA
from sgtui.store import Store

TASK = str(REPO_DATA / "tasks" / "sentiment.toml")
NO_BACKEND = "no-such-backend"  # valid parameters stop at this backend, before any model


def runs_in(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master")}
        return conn.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """sgtui.cli.main in this process; argparse's own refusals (SystemExit) count as exits."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


# -- each listed value is refused, before a model is loaded or a run is created ---------------
GENERATE_REFUSED = [
    (["--rounds", "0"], "--rounds"),
    (["--rounds", "-3"], "--rounds"),
    (["--per-round", "0"], "--per-round"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "inf"], "--temperature"),
    (["--min-frequency", "1.5"], "--min-frequency"),
    (["--gen-max-tokens", "0"], "--gen-max-tokens"),
    (["--ann-max-tokens", "0"], "--ann-max-tokens"),
    (["--n", "0"], "--n"),
    (["--n", "4", "--best-of", "2"], "--best-of"),
    (["--mode", "paper", "--n", "30"], "--best-of"),  # the paper's best_of 20 is below n
]


@pytest.mark.parametrize("command", ["generate", "run"])
@pytest.mark.parametrize(
    "flags,flag", GENERATE_REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_run_parameters_are_refused_before_a_run_exists(tmp_path, capsys, command, flags, flag):
    db = tmp_path / "v.db"
    # the bundled model: a value that got through would load it and create a run
    rc, out, err = cli([command, TASK, "--db", str(db), *flags], capsys)
    assert rc == 2, err
    assert err.startswith(f"sgtui: {flag} must be"), err
    assert "fix:" in err and "Traceback" not in err
    assert runs_in(db) == 0


RUN_REFUSED = [
    (["--eval-limit", "0"], "--eval-limit must be at least 1 (got 0)"),
    (["--eval-limit", "-1"], "--eval-limit must be at least 1 (got -1)"),
    (["--lr", "inf"], "--lr must be a finite number, above 0 (got inf)"),
    (["--lr", "nan"], "--lr must be a finite number, above 0 (got nan)"),
    (["--weight-decay", "-1"], "--weight-decay must be"),
    (["--grad-clip", "inf"], "--grad-clip must be"),
    (["--train-seed", "-1"], "--train-seed must be between 0 and"),
    (["--seed", "-1"], "--seed must be between 0 and"),
]


@pytest.mark.parametrize(
    "flags,message", RUN_REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_run_and_training_values_name_their_own_flag(tmp_path, capsys, flags, message):
    db = tmp_path / "r.db"
    rc, out, err = cli(["run", TASK, "--db", str(db), *flags], capsys)
    assert rc == 2, err
    assert err.startswith(f"sgtui: {message}"), err
    assert "--limit " not in err and "Traceback" not in err
    assert runs_in(db) == 0


@pytest.mark.parametrize(
    "flags,flag",
    [
        (["--lr", "inf"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--dropout", "nan"], "--dropout"),
        (["--weight-decay", "inf"], "--weight-decay"),
    ],
)
def test_train_refuses_non_finite_values_before_starting(tmp_path, capsys, flags, flag):
    db = tmp_path / "t.db"
    rid = make_reviewed_run(db)
    rc, out, err = cli(["train", str(rid), "--db", str(db), *flags], capsys)
    assert rc == 2, err
    assert err.startswith(f"sgtui: {flag} must be"), err
    assert "Traceback" not in err
    assert Store(db).db.execute("select count(*) from train_progress").fetchone()[0] == 0


def test_n_zero_is_refused_by_the_real_command(tmp_path):
    """The whole process: exit 2, one message, no traceback, no run (it used to finish 'done'
    with every kept input unannotated)."""
    db = tmp_path / "n.db"
    p = subprocess.run(
        [sys.executable, "-m", "sgtui", "generate", TASK, "--db", str(db), "--n", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("sgtui: --n must be between 1 and 1000 (got 0)")
    assert "Traceback" not in p.stderr
    assert runs_in(db) == 0


# -- the CLI's numeric flags: every value is accepted or refused with exit 2 -------------------
INT_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1


def finite_at_least(low: float, high: float = math.inf, *, above: bool = False):
    def accepts(v: float) -> bool:
        return math.isfinite(v) and (v > low if above else v >= low) and v <= high

    return accepts


# What the documentation promises each flag accepts, written out here on purpose rather than
# read from the declaration: the test compares the declaration with the promise.
GENERATE_FLAGS = {
    "--rounds": (int, finite_at_least(1, INT_MAX)),
    "--per-round": (int, finite_at_least(1, 10_000)),
    "--n": (int, finite_at_least(1, 1000)),
    # small mode (the default) draws only n: best_of 0; otherwise at least n (10)
    "--best-of": (int, lambda v: v == 0 or 10 <= v <= 1000),
    "--gen-max-tokens": (int, finite_at_least(1, INT_MAX)),
    "--ann-max-tokens": (int, finite_at_least(1, INT_MAX)),
    "--seed": (int, finite_at_least(0, SEED_MAX)),
    "--temperature": (float, finite_at_least(0)),
    "--min-frequency": (float, finite_at_least(0, 1)),
}
# through `sgtui run`, whose training seed is --train-seed; whole numbers stop at a C int, as
# the run parameters' do
TRAIN_FLAGS = {
    "--epochs": (int, finite_at_least(1, INT_MAX)),
    "--rank": (int, finite_at_least(1, INT_MAX)),
    "--alpha": (int, finite_at_least(1, INT_MAX)),
    "--batch-size": (int, finite_at_least(1, INT_MAX)),
    "--max-len": (int, finite_at_least(16, INT_MAX)),
    "--train-seed": (int, finite_at_least(0, SEED_MAX)),
    "--eval-limit": (int, finite_at_least(1)),
    "--lr": (float, finite_at_least(0, above=True)),
    "--dropout": (float, lambda v: math.isfinite(v) and 0 <= v < 1),
    "--grad-clip": (float, finite_at_least(0)),
    "--weight-decay": (float, finite_at_least(0)),
}

edge_ints = st.sampled_from(
    [
        0,
        -1,
        1,
        2,
        9,
        10,
        15,
        16,
        1000,
        1001,
        10_000,
        10_001,
        INT_MAX,
        INT_MAX + 1,
        SEED_MAX,
        SEED_MAX + 1,
        2**63,
        10**20,
        -(10**20),
    ]
)
ints = st.one_of(edge_ints, st.integers(-100, 2000), st.integers())
floats = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 1.0, 0.999, 1.5, -1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    ints,
)


def value_for(kind) -> st.SearchStrategy:
    return ints if kind is int else floats


def flag_and_value(table: dict) -> st.SearchStrategy:
    return st.sampled_from(sorted(table)).flatmap(
        lambda flag: st.tuples(st.just(flag), value_for(table[flag][0]))
    )


def check_outcome(table, flag, value, rc, err) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    accepted = f"unknown backend '{NO_BACKEND}'" in err
    kind, accepts = table[flag]
    parsed = float(repr(value)) if kind is float else value  # as argparse reads it
    assert accepted == accepts(parsed), (flag, value, err)
    if not accepted:
        assert err.startswith(f"sgtui: {flag} must be"), (flag, value, err)


PROPERTY = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(case=flag_and_value(GENERATE_FLAGS))
@example(case=("--seed", SEED_MAX)).via("the largest seed")
@example(case=("--rounds", INT_MAX + 1)).via("past a C int")
@example(case=("--temperature", math.nan)).via("nan")
@example(case=("--best-of", 9)).via("below n")
def test_generate_numeric_flags_run_or_are_refused(tmp_path, capsys, case):
    flag, value = case
    db = tmp_path / "h.db"
    rc, out, err = cli(
        ["generate", TASK, "--db", str(db), "--backend", NO_BACKEND, f"{flag}={value!r}"], capsys
    )
    check_outcome(GENERATE_FLAGS, flag, value, rc, err)
    assert runs_in(db) == 0


@PROPERTY
@given(case=flag_and_value(TRAIN_FLAGS))
@example(case=("--lr", math.inf)).via("inf")
@example(case=("--train-seed", SEED_MAX + 1)).via("past 32 bits")
@example(case=("--eval-limit", 0)).via("zero rows")
def test_training_numeric_flags_run_or_are_refused(tmp_path, capsys, case):
    flag, value = case
    db = tmp_path / "h.db"
    rc, out, err = cli(
        ["run", TASK, "--db", str(db), "--backend", NO_BACKEND, f"{flag}={value!r}"], capsys
    )
    check_outcome(TRAIN_FLAGS, flag, value, rc, err)
    assert runs_in(db) == 0


def test_values_at_the_edges_really_run(tmp_path, bundled_model):
    """The smallest accepted values are not only accepted: a run with them finishes."""
    db = tmp_path / "edge.db"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgtui",
            "generate",
            TASK,
            "--db",
            str(db),
            "--model",
            bundled_model,
            "--rounds",
            "1",
            "--per-round",
            "1",
            "--n",
            "1",
            "--best-of",
            "0",
            "--gen-max-tokens",
            "1",
            "--ann-max-tokens",
            "1",
            "--temperature",
            "0",
            "--min-frequency",
            "1",
            "--seed",
            str(SEED_MAX),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert Store(db).run(1)["status"] == "done"


# -- one declaration ---------------------------------------------------------------------------
def test_every_field_is_declared_and_its_defaults_pass():
    for f in fields(RunParams):
        m = f.metadata
        assert {"flag", "label", "help", "min", "above", "max", "choices"} <= set(m), f.name
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            assert m["min"] is not None or m["above"] is not None, f"{f.name} has no lower bound"
    for typ in ("classification", "generation"):
        for mode in ("paper", "small"):
            RunParams.defaults_for(typ, mode).validate()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"gen_top_p": 0.0}, "gen_top_p must be above 0 and at most 1 (got 0)"),
        ({"gen_top_k": -1}, "gen_top_k must be at least 0 (got -1)"),
        ({"max_low_quality": 0}, "max_low_quality must be at least 1 (got 0)"),
        ({"near_copy_threshold": math.nan}, "near_copy_threshold must be a finite number"),
        ({"ann_temperature": -0.5}, "ann_temperature must be at least 0 (got -0.5)"),
        ({"context_cutoff": 0}, "context_cutoff must be at least 1 (got 0)"),
        ({"rounds": 2.5}, "--rounds must be a whole number"),
    ],
)
def test_fields_without_a_flag_are_named_by_their_field(change, message):
    with pytest.raises(SgtuiError) as e:
        RunParams().override(**change)
    assert e.value.message.startswith(message)
    assert e.value.fix


# -- the TUI form refuses the same values with the same message -------------------------------
@pytest.mark.parametrize(
    "flags,form",
    [
        (["--rounds", "-3"], {"rounds": "-3"}),
        (["--n", "10", "--best-of", "2"], {"n": "10", "best_of": "2"}),
        (["--temperature", "nan"], {"gen_temperature": "nan"}),
        (["--min-frequency", "1.5"], {"min_frequency": "1.5"}),
    ],
)
def test_tui_form_and_cli_give_the_same_message(tmp_path, capsys, flags, form):
    from sgtui.tui.params import parse_params

    rc, out, err = cli(
        ["generate", TASK, "--db", str(tmp_path / "s.db"), "--backend", NO_BACKEND, *flags], capsys
    )
    assert rc == 2
    cli_message = err.removeprefix("sgtui: ").split("\n  fix:")[0]
    with pytest.raises(ValueError) as e:
        parse_params(form)
    assert str(e.value) == cli_message


def test_tui_form_accepts_what_the_cli_accepts():
    from sgtui.tui.params import parse_params

    # best of 0 (draw only n) is the small mode's default: the form used to refuse it
    assert parse_params({"n": "10", "best_of": "0"}).best_of == 0
    assert parse_params({"rounds": "1", "min_frequency": "1"}).rounds == 1


# -- mark --------------------------------------------------------------------------------------
def test_mark_names_the_missing_ids_and_exits_2(tmp_path, capsys):
    db = tmp_path / "m.db"
    make_reviewed_run(db)
    real = Store(db).samples(1)[0]["id"]
    rc, out, err = cli(["mark", "keep", str(real), "9999", "-4", "--db", str(db)], capsys)
    assert rc == 2
    assert "marked 1 sample(s) keep" in out
    assert "no sample with id 9999, -4 in this database" in err and "fix:" in err
    assert Store(db).sample(real)["mark"] == "keep"


def test_mark_with_an_id_past_sqlite_integers_is_a_message(tmp_path):
    db = tmp_path / "m.db"
    make_reviewed_run(db)
    real = Store(db).samples(1)[0]["id"]
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgtui",
            "mark",
            "discard",
            str(real),
            "99999999999999999999",
            "--db",
            str(db),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "OverflowError" not in p.stderr
    assert "no sample with id 99999999999999999999" in p.stderr
    assert "marked 1 sample(s) discard" in p.stdout
    assert Store(db).sample(real)["mark"] == "discard"


def test_mark_of_existing_ids_still_exits_0(tmp_path, capsys):
    db = tmp_path / "m.db"
    make_reviewed_run(db)
    ids = [s["id"] for s in Store(db).samples(1)][:2]
    rc, out, err = cli(["mark", "clear", *map(str, ids), "--db", str(db)], capsys)
    assert rc == 0 and "marked 2 sample(s) clear" in out and err == ""
