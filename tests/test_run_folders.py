"""Run folders belong to their database: two databases under one SGTUI_HOME never share one,
and folders from the old layout ($SGTUI_HOME/runs/run-<id>) move to the database that owns
them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from word_task import COLOURS, WORD, make_run

from sgtui.cli import main
from sgtui.store import Store
from sgtui.training import adapter_dir, checkpoints_dir, run_dir

ROOT = Path(__file__).resolve().parent.parent


def _fake_adapter(folder: Path, marker: str) -> None:
    """The two files find_adapter looks for; the contents tell whose adapter it is."""
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_text(marker)
    (folder / "adapter_config.json").write_text(json.dumps({"marker": marker}))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_two_databases_under_one_home_get_their_own_run_folders(tmp_path):
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    ra, rb = make_run(a, [("x", "y")]), make_run(b, [("x", "y")])
    assert ra == rb == 1
    assert run_dir(a, 1) != run_dir(b, 1)
    assert run_dir(a, 1) == tmp_path / "a.db.runs" / "run-1"
    assert run_dir(tmp_path / "b.db", 1) == run_dir(b, 1)  # a Store or its path
    assert adapter_dir(a, 1).parent == run_dir(a, 1)
    assert checkpoints_dir(b, 1).parent == run_dir(b, 1)


def test_exporting_run_1_of_one_database_never_takes_anothers_adapter(tmp_path, capsys):
    """The probe's case: run 1 of b.db was exported from a.db's adapter and recorded under
    b.db. Now b.db's run 1 has no adapter of its own, so export says so."""
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "b.db")
    make_run(a, [("x", "y")])
    make_run(b, [("x", "y")])
    _fake_adapter(adapter_dir(a, 1), "a's adapter")
    code = main(
        [
            "export",
            "1",
            "--format",
            "adapter",
            "--db",
            str(tmp_path / "b.db"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "run 1 has no trained adapter" in err, err
    assert not (tmp_path / "out").exists()
    assert b.artifacts(1) == []

    code = main(
        [
            "export",
            "1",
            "--format",
            "adapter",
            "--db",
            str(tmp_path / "a.db"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "adapter_model.safetensors").read_text() == "a's adapter"


def _legacy_home(tmp_path) -> Path:
    home = Path(os.environ["SGTUI_HOME"])
    (home / "runs").mkdir(parents=True)
    return home


def test_legacy_run_folders_move_to_the_database_that_names_them(tmp_path):
    home = _legacy_home(tmp_path)
    default, other = Store(home / "sgtui.db"), Store(tmp_path / "b.db")
    for store in (default, other):
        make_run(store, [("x", "y")])
        make_run(store, [("x", "y")])
    legacy1, legacy2 = home / "runs" / "run-1", home / "runs" / "run-2"
    _fake_adapter(legacy1 / "adapter", "b's run 1")
    (legacy1 / "train.log").write_text("log")
    other.add_artifact(1, "adapter", str(legacy1 / "adapter"), {"adapter": str(legacy1)})
    # run 2: a training killed before it wrote an artifact (checkpoints only)
    (legacy2 / "checkpoints" / "epoch-1").mkdir(parents=True)
    default.close()
    other.close()

    # the other database names run-1 in an artifact: it takes it, and only it
    other = Store(tmp_path / "b.db")
    moved = tmp_path / "b.db.runs" / "run-1"
    assert (moved / "adapter" / "adapter_model.safetensors").read_text() == "b's run 1"
    assert not legacy1.exists() and legacy2.is_dir()
    art = other.artifacts(1)[0]
    assert art["path"] == str(moved / "adapter")
    assert json.loads(art["meta"])["adapter"] == str(moved)

    # the default database takes the unnamed folder of its own run 2, not b's run 1
    default = Store(home / "sgtui.db")
    assert (home / "sgtui.db.runs" / "run-2" / "checkpoints" / "epoch-1").is_dir()
    assert not (home / "sgtui.db.runs" / "run-1").exists()
    assert not legacy2.exists()


def test_a_legacy_folder_whose_training_is_alive_stays(tmp_path):
    home = _legacy_home(tmp_path)
    store = Store(home / "sgtui.db")
    make_run(store, [("x", "y")])
    store.close()
    legacy = home / "runs" / "run-1"
    legacy.mkdir()
    (legacy / "train.pid").write_text(str(os.getpid()))  # a live process holds it
    Store(home / "sgtui.db").close()
    assert legacy.is_dir() and not (home / "sgtui.db.runs" / "run-1").exists()


@pytest.mark.slow
def test_training_run_1_of_one_database_leaves_anothers_run_1_alone(tmp_path, bundled_model):
    """The probe's case: training run 1 of b.db deleted a.db's checkpoints and overwrote its
    adapter. Both databases under one SGTUI_HOME, both trained for real."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def train(db: Path) -> None:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "sgtui",
                "train",
                "1",
                "--db",
                str(db),
                "--epochs",
                "1",
                "--batch-size",
                "1",
                "--quiet",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stderr

    for name, colours in (("a.db", COLOURS[:1]), ("b.db", COLOURS[1:2])):
        store = Store(tmp_path / name)
        make_run(store, [(c, WORD) for c in colours], model=bundled_model)
        store.close()
    a = Store(tmp_path / "a.db")
    train(tmp_path / "a.db")
    before = _digest(run_dir(a, 1))
    assert (checkpoints_dir(a, 1) / "epoch-1").is_dir()
    train(tmp_path / "b.db")
    assert _digest(run_dir(a, 1)) == before  # a's checkpoints, adapter and data untouched
    b = Store(tmp_path / "b.db")
    assert Path(b.artifacts(1, "adapter")[-1]["path"]).parent == run_dir(b, 1)
    assert Path(a.artifacts(1, "adapter")[-1]["path"]).parent == run_dir(a, 1)
