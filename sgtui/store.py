"""The SQLite store: tasks, runs, samples, marks, training progress and evaluations.

sqlite-utils over SQLite in WAL mode. Every sample and every mark is committed the moment it
exists. Schema changes are named migrations recorded in the database, so an older database is
upgraded and a newer one is refused instead of being damaged. One Store (one connection) per
thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable, Iterable

import sqlite_utils

from .config import RunParams
from .errors import RunBusy, SgtuiError
from .paths import default_db_path, legacy_runs_dir, runs_dir
from .task import Task


# -- typed rows ------------------------------------------------------------------------------
class Stage(StrEnum):
    """How far a sample got: a generated input, or an input with its annotated answer."""

    INPUT = "input"
    ANNOTATED = "annotated"


class Status(StrEnum):
    """What the filters decided about a sample (`filter` and `reason` say which and why)."""

    KEPT = "kept"
    FILTERED = "filtered"


class Mark(StrEnum):
    """The person's decision, which wins over the filters'."""

    KEEP = "keep"
    DISCARD = "discard"


# The one rule for what fine-tuning uses, in SQL (Store.training_pairs) and in Python
# (Sample.in_training, which the TUI shows): a sample with an answer that the person did not
# discard, and that the filters kept after annotation or the person marked keep.
TRAINING_PAIR_SQL = (
    f"output is not null and coalesce(mark, '') != '{Mark.DISCARD}' and "
    f"(status = '{Status.KEPT}' and stage = '{Stage.ANNOTATED}' "
    f"or mark = '{Mark.KEEP}')"
)


def in_training(row: dict) -> bool:
    """TRAINING_PAIR_SQL for one sample row."""
    if not row.get("output") or row.get("mark") == Mark.DISCARD:
        return False
    return (row.get("status") == Status.KEPT and row.get("stage") == Stage.ANNOTATED) or row.get(
        "mark"
    ) == Mark.KEEP


@dataclass(frozen=True)
class Sample:
    """One row of `samples`, typed. `votes` and `candidates` are decoded."""

    id: int
    run_id: int
    round: int
    slot: int
    stage: Stage
    status: Status
    input: str
    output: str | None = None
    label: str | None = None
    pseudo_label: str | None = None
    filter: str | None = None
    reason: str | None = None
    mark: Mark | None = None
    votes: Any = None
    candidates: Any = None

    @classmethod
    def from_row(cls, row: dict) -> "Sample":
        return cls(
            row["id"],
            row["run_id"],
            row.get("round") or 0,
            row.get("slot") or 0,
            Stage(row.get("stage") or Stage.INPUT),
            Status(row.get("status")),
            row.get("input") or "",
            row.get("output"),
            row.get("label"),
            row.get("pseudo_label"),
            row.get("filter"),
            row.get("reason"),
            Mark(row["mark"]) if row.get("mark") else None,
            row.get("votes"),
            row.get("candidates"),
        )

    @property
    def in_training(self) -> bool:
        return in_training(
            {"output": self.output, "mark": self.mark, "status": self.status, "stage": self.stage}
        )


@dataclass(frozen=True)
class Run:
    """One row of `runs`, with its task and parameters decoded."""

    id: int
    task_id: int
    task: Task
    params: RunParams
    model: str
    backend: str
    status: str
    stage: str
    summary: dict

    @property
    def task_name(self) -> str:
        return self.task.name


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = []


def migration(fn: Callable[[sqlite_utils.Database], None]):
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db["tasks"].create(
        {"id": int, "name": str, "type": str, "definition": str, "source": str, "created": float},
        pk="id",
    )
    db["runs"].create(
        {
            "id": int,
            "task_id": int,
            "task": str,
            "params": str,
            "model": str,
            "backend": str,
            "status": str,
            "stage": str,
            "pid": int,
            "heartbeat": float,
            "created": float,
            "started": float,
            "finished": float,
            "timings": str,
            "summary": str,
            "error": str,
        },
        pk="id",
        foreign_keys=[("task_id", "tasks")],
    )
    db["samples"].create(
        {
            "id": int,
            "run_id": int,
            "round": int,
            "slot": int,
            "stage": str,
            "input": str,
            "raw_output": str,
            "pseudo_label": str,
            "candidates": str,
            "votes": str,
            "output": str,
            "label": str,
            "status": str,
            "filter": str,
            "reason": str,
            "mark": str,
            "marked_at": float,
            "n_tokens": int,
            "created": float,
            "updated": float,
        },
        pk="id",
        foreign_keys=[("run_id", "runs")],
    )
    db["samples"].create_index(["run_id", "round", "slot"], unique=True)
    db["samples"].create_index(["run_id", "status"])


@migration
def m002_training_and_eval(db: sqlite_utils.Database) -> None:
    db["train_progress"].create(
        {
            "id": int,
            "run_id": int,
            "step": int,
            "epoch": float,
            "loss": float,
            "tokens_per_s": float,
            "eta_s": float,
            "total_steps": int,
            "created": float,
        },
        pk="id",
    )
    db["train_progress"].create_index(["run_id", "step"])
    db["evals"].create(
        {
            "id": int,
            "run_id": int,
            "system": str,
            "split": str,
            "metric": str,
            "score": float,
            "scores": str,
            "n": int,
            "model": str,
            "created": float,
        },
        pk="id",
    )
    db["eval_items"].create(
        {"eval_id": int, "idx": int, "input": str, "gold": str, "prediction": str, "score": float},
        pk=("eval_id", "idx"),
    )
    db["artifacts"].create(
        {"id": int, "run_id": int, "kind": str, "path": str, "created": float, "meta": str}, pk="id"
    )


@migration
def m003_search(db: sqlite_utils.Database) -> None:
    db["search_cells"].create(
        {
            "search": str,
            "config": str,
            "task": str,
            "task_type": str,
            "base": float,
            "score": float,
            "delta": float,
            "cell": str,
            "created": float,
        },
        pk=("search", "config", "task"),
    )


def now() -> float:
    return time.time()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_db_path(path: Path) -> None:
    """Create the database's folder, or say plainly why it cannot exist there."""
    if path.is_dir():
        raise SgtuiError(
            "this is a folder, not a database file",
            path=str(path),
            fix="pass --db with a file path, e.g. --db PATH/sgtui.db",
        )
    if path.exists() and not path.is_file():
        raise SgtuiError(
            "this is not a regular file (a device, a FIFO or a socket), so it "
            "cannot hold a database",
            path=str(path),
            fix="pass --db with a database file path, e.g. --db PATH/sgtui.db",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SgtuiError(
            "the database cannot be created here: a part of its folder path is a file",
            path=str(path),
            fix="pass --db with a path inside a folder",
        )
    except OSError as e:
        raise SgtuiError(
            f"the database's folder cannot be created ({e.strerror or e})",
            path=str(path),
            fix="pass --db with a path in a folder you can write",
        )


def _unwritable(path: Path) -> str | None:
    """Why SQLite cannot write the database (WAL mode needs the file and its folder), or None.
    Asked after SQLite failed: permission bits alone do not stop root."""
    if path.exists() and not os.access(path, os.W_OK):
        return "the database file is read-only"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return (
            "the database's folder is read-only (SQLite needs to write its journal files "
            "beside the database)"
        )
    return None


def _training_alive(run_folder: Path) -> bool:
    """Whether a training process holds the run folder (its train.pid names a live process)."""
    lock = run_folder / "train.pid"
    try:
        return lock.is_file() and _pid_alive(int(lock.read_text().strip() or 0))
    except (OSError, ValueError):
        return False


def _enable_wal(db, tries: int = 100) -> None:
    """Switch to WAL. Changing the journal mode needs the database to itself, and SQLite answers
    "database is locked" at once, without the busy timeout, while another process is creating
    or upgrading the same new database: wait a little and ask again."""
    for attempt in range(tries):
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(0.05)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(path) != ":memory:":
            _check_db_path(self.path)
        try:
            conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            self.db = sqlite_utils.Database(conn)
            if str(path) != ":memory:":
                _enable_wal(self.db)
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            if str(path) != ":memory:":
                self._adopt_legacy_run_folders()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            unwritable = _unwritable(self.path) if str(path) != ":memory:" else None
            if unwritable is not None:
                raise SgtuiError(
                    unwritable,
                    path=str(path),
                    fix="make it writable (chmod u+w), or copy the database "
                    "somewhere writable and pass --db with the copy",
                )
            if "unable to open" in str(e) or "disk I/O" in str(e):
                raise SgtuiError(
                    f"SQLite cannot open this file as a database ({e})",
                    path=str(path),
                    fix="pass --db with a database file in a folder you can write",
                )
            raise SgtuiError(
                f"not a usable sgtui database ({e})",
                path=str(path),
                fix="move the file away, or pass --db to use another database",
            )

    # -- schema -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        db = self.db
        if not db["_migrations"].exists():
            # under the write lock: a deferred transaction that reads the schema first fails at
            # once ("database is locked") when another process creates the database meanwhile
            with db.conn:
                db.execute("BEGIN IMMEDIATE")
                if not db["_migrations"].exists():
                    db["_migrations"].create({"name": str, "applied": float}, pk="name")
        applied = {r["name"] for r in db["_migrations"].rows}
        known = {name for name, _ in MIGRATIONS}
        unknown = applied - known
        if unknown:
            raise SgtuiError(
                f"this database was written by a newer sgtui (schema {sorted(unknown)[-1]})",
                path=str(self.path),
                fix="upgrade sgtui, or pass --db to use another database",
            )
        for name, fn in MIGRATIONS:
            if name in applied:
                continue
            with db.conn:
                db.execute("BEGIN IMMEDIATE")
                # another process may have migrated meanwhile
                if db.execute("select 1 from _migrations where name = ?", [name]).fetchone():
                    continue
                fn(db)
                db["_migrations"].insert({"name": name, "applied": now()})

    def close(self) -> None:
        self.db.conn.close()

    def _adopt_legacy_run_folders(self) -> None:
        """Move this database's run folders from where every database used to keep them
        (`$SGTUI_HOME/runs/run-<id>`, keyed by the run id alone, so two databases collided)
        to its own runs folder, and point its artifacts at the new place.

        A legacy folder is this database's when one of its artifacts points into it; the
        default database also takes the folders of its run ids that no artifact names (a
        training killed before it wrote one), since it was the only database most people had.
        A folder whose training is still running, or whose new place exists, stays put."""
        try:
            legacy = legacy_runs_dir()
            if not legacy.is_dir():
                return
            own = runs_dir(self.path)
            is_default = self.path.resolve() == default_db_path().resolve()
        except OSError:
            return
        for (run_id,) in self.db.execute("select id from runs order by id").fetchall():
            old, new = legacy / f"run-{run_id}", own / f"run-{run_id}"
            if not old.is_dir() or new.exists() or _training_alive(old):
                continue
            prefix = str(old) + os.sep
            refs = [
                dict(r)
                for r in self.db["artifacts"].rows_where("run_id = ?", [run_id])
                if (r["path"] + os.sep).startswith(prefix)
            ]
            if not refs and not is_default:
                continue
            try:
                own.mkdir(parents=True, exist_ok=True)
                os.rename(old, new)
            except OSError:  # another process moved it first, or another filesystem
                continue
            with self.db.conn:
                self.db.execute("BEGIN IMMEDIATE")
                for r in refs:
                    self.db["artifacts"].update(
                        r["id"],
                        {
                            "path": str(new) + r["path"][len(str(old)) :],
                            "meta": (r["meta"] or "").replace(
                                json.dumps(str(old))[1:-1], json.dumps(str(new))[1:-1]
                            ),
                        },
                    )

    # -- tasks ------------------------------------------------------------------------------
    def add_task(self, task) -> int:
        definition = task.to_json()
        row = self.db.execute(
            "select id from tasks where name = ? and definition = ?", [task.name, definition]
        ).fetchone()
        if row:
            return row[0]
        return (
            self.db["tasks"]
            .insert(
                {
                    "name": task.name,
                    "type": task.type,
                    "definition": definition,
                    "source": task.source,
                    "created": now(),
                }
            )
            .last_pk
        )

    def update_task(self, task_id: int, task) -> None:
        self.db["tasks"].update(
            task_id,
            {
                "name": task.name,
                "type": task.type,
                "definition": task.to_json(),
                "source": task.source,
            },
        )

    def tasks(self) -> list[dict]:
        return list(self.db["tasks"].rows_where(order_by="id"))

    def get_task(self, task_id: int):
        row = self.db["tasks"].get(task_id)
        return Task.from_dict(json.loads(row["definition"]), row["source"] or row["name"])

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, task, task_id: int, params: dict, model: str, backend: str) -> int:
        return (
            self.db["runs"]
            .insert(
                {
                    "task_id": task_id,
                    "task": task.to_json(),
                    "params": json.dumps(params),
                    "model": model,
                    "backend": backend,
                    "status": "created",
                    "stage": "inputs",
                    "created": now(),
                    "timings": "{}",
                    "summary": "{}",
                }
            )
            .last_pk
        )

    def run(self, run_id: int) -> dict:
        try:
            row = self.db["runs"].get(run_id)
        except sqlite_utils.db.NotFoundError:
            raise SgtuiError(
                f"there is no run {run_id} in this database",
                path=str(self.path),
                fix="list the runs with `sgtui runs`",
            )
        row = dict(row)
        for key in ("params", "timings", "summary"):
            row[key] = json.loads(row[key] or "{}")
        return row

    def run_record(self, run_id: int) -> Run:
        """Run `run_id` typed: its task and parameters decoded (Store.run gives the raw row)."""
        row = self.run(run_id)
        return Run(
            row["id"],
            row["task_id"],
            task_of(row),
            RunParams.from_dict(row["params"]),
            row["model"],
            row["backend"],
            row["status"],
            row["stage"],
            row["summary"],
        )

    def runs(self) -> list[dict]:
        return [
            self.run(r["id"]) for r in self.db["runs"].rows_where(order_by="id desc", select="id")
        ]

    def update_run(self, run_id: int, **fields: Any) -> None:
        for key in ("params", "timings", "summary"):
            if key in fields and not isinstance(fields[key], str):
                fields[key] = json.dumps(fields[key])
        self.db["runs"].update(run_id, fields)

    def claim_run(self, run_id: int) -> None:
        """Mark the run as ours. Refuse if another live process holds it."""
        with self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("select status, pid from runs where id = ?", [run_id]).fetchone()
            if row is None:
                raise SgtuiError(
                    f"there is no run {run_id} in this database",
                    path=str(self.path),
                    fix="list the runs with `sgtui runs`",
                )
            status, pid = row
            if status == "running" and pid and pid != os.getpid() and _pid_alive(pid):
                raise RunBusy(
                    f"run {run_id} is busy: process {pid} is working on it",
                    path=str(self.path),
                    fix="wait for it to finish, or stop that process",
                )
            self.db.execute(
                "update runs set status='running', pid=?, heartbeat=?, "
                "started=coalesce(started, ?) where id=?",
                [os.getpid(), now(), now(), run_id],
            )

    def release_run(self, run_id: int, status: str, error: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "pid": None}
        if status == "done":
            fields["finished"] = now()
        if error is not None:
            fields["error"] = error
        self.update_run(run_id, **fields)

    # -- samples ----------------------------------------------------------------------------
    def add_sample(self, run_id: int, **fields: Any) -> int:
        """Insert one generated candidate. (run, round, slot) is unique, so a resumed run
        never stores the same slot twice."""
        fields = {
            k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in fields.items()
        }
        t = now()
        return (
            self.db["samples"]
            .insert({"run_id": run_id, "created": t, "updated": t, **fields})
            .last_pk
        )

    def update_sample(self, sample_id: int, **fields: Any) -> None:
        fields = {
            k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in fields.items()
        }
        fields["updated"] = now()
        self.db["samples"].update(sample_id, fields)

    def update_samples(self, updates: Iterable[tuple[int, dict]]) -> None:
        with self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            for sid, fields in updates:
                self.update_sample(sid, **fields)

    def samples(self, run_id: int, status: Status | str | None = None) -> list[dict]:
        """A run's samples in generation order, all or those with `status`."""
        if status is None:
            return self._samples(run_id)
        return self._samples(run_id, "status = ?", [Status(status)])

    def passed_inputs(self, run_id: int, before_round: int | None = None) -> list[dict]:
        """Inputs that passed the input filters (annotated since, or waiting to be), of rounds
        before `before_round` if given."""
        where = f"(stage = '{Stage.ANNOTATED}' or status = '{Status.KEPT}')"
        if before_round is None:
            return self._samples(run_id, where)
        return self._samples(run_id, f"round < ? and {where}", [before_round])

    def kept_in_round(self, run_id: int, rnd: int) -> list[dict]:
        return self._samples(run_id, f"round = ? and status = '{Status.KEPT}'", [rnd])

    def awaiting_annotation(self, run_id: int) -> list[dict]:
        """Inputs that passed the input filters and have no answer yet."""
        return self._samples(run_id, f"stage = '{Stage.INPUT}' and status = '{Status.KEPT}'")

    def annotated(self, run_id: int, kept_only: bool = False) -> list[dict]:
        """Samples with an annotated answer; kept_only: those the answer filters kept."""
        where = f"stage = '{Stage.ANNOTATED}'"
        if kept_only:
            where += f" and status = '{Status.KEPT}'"
        return self._samples(run_id, where)

    def _samples(
        self, run_id: int, where: str = "", params: Iterable = (), order_by: str = "round, slot"
    ) -> list[dict]:
        clause = "run_id = ?" + (f" and ({where})" if where else "")
        return [
            self._decode(r)
            for r in self.db["samples"].rows_where(clause, [run_id, *params], order_by=order_by)
        ]

    @staticmethod
    def _decode(row: dict) -> dict:
        row = dict(row)
        for key in ("candidates", "votes"):
            if row.get(key):
                row[key] = json.loads(row[key])
        return row

    def sample(self, sample_id: int) -> dict:
        return self._decode(self.db["samples"].get(sample_id))

    def mark_many(self, sample_ids: Iterable[int], mark: str | None) -> None:
        """Mark several samples in one transaction: all of them, or none if it fails."""
        with self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            for sid in sample_ids:
                self.mark(sid, mark)

    def mark(self, sample_id: int, mark: str | None) -> bool:
        """The person's keep/discard mark; None clears it. Committed at once. Returns whether
        the sample exists (an id past SQLite's 64-bit integers cannot, and is not sent)."""
        if mark is not None and mark not in tuple(Mark):
            raise ValueError(mark)
        if not -(2**63) <= sample_id < 2**63:
            return False
        cur = self.db.execute(
            "update samples set mark = ?, marked_at = ?, updated = ? where id = ?",
            [mark, now(), now(), sample_id],
        )
        return cur.rowcount > 0

    def counts(self, run_id: int) -> dict:
        q = (
            "select stage, status, coalesce(filter, ''), count(*) from samples where run_id = ? "
            "group by 1, 2, 3"
        )
        out: dict = {
            "candidates": 0,
            "inputs_kept": 0,
            "annotated": 0,
            "kept": 0,
            "filtered": {},
            "marked_keep": 0,
            "marked_discard": 0,
        }
        for stage, status, filt, n in self.db.execute(q, [run_id]).fetchall():
            out["candidates"] += n
            if status == "filtered":
                out["filtered"][filt] = out["filtered"].get(filt, 0) + n
            elif status == "kept":
                out["inputs_kept"] += n
                if stage == "annotated":
                    out["kept"] += n
            if stage == "annotated":
                out["annotated"] += n
        for mark, n in self.db.execute(
            "select mark, count(*) from samples where run_id = ? and mark is not null group by 1",
            [run_id],
        ).fetchall():
            out[f"marked_{mark}"] = n
        return out

    def training_pairs(self, run_id: int) -> list[dict]:
        """What fine-tuning uses: kept, annotated samples that the person did not discard, plus
        any sample the person marked keep that has an answer, even if a filter dropped it."""
        return self._samples(run_id, TRAINING_PAIR_SQL, order_by="id")

    # -- training progress, evaluations, artifacts -----------------------------------------
    def add_progress(self, run_id: int, **fields: Any) -> None:
        """One progress row. Steps only grow within a training, so rows of this run at this
        step or later were left by a training that was killed after its last checkpoint and
        is now resumed from it: they go, and the run keeps one row per step."""
        row = {"run_id": run_id, "created": now(), **fields}
        columns, marks = ", ".join(row), ", ".join("?" * len(row))
        with self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "DELETE FROM train_progress WHERE run_id = ? AND step >= ?", [run_id, row["step"]]
            )
            self.db.execute(
                f"INSERT INTO train_progress ({columns}) VALUES ({marks})", list(row.values())
            )

    def clear_progress(self, run_id: int, after_step: int = 0) -> None:
        """Forget a run's progress rows past `after_step` (all of them by default): a new
        training starts at step 1, a resumed one after its checkpoint's step."""
        self.db.execute(
            "DELETE FROM train_progress WHERE run_id = ? AND step > ?", [run_id, after_step]
        )

    def progress(self, run_id: int) -> list[dict]:
        return list(self.db["train_progress"].rows_where("run_id = ?", [run_id], order_by="id"))

    def add_eval(
        self,
        run_id: int | None,
        system: str,
        split: str,
        metric: str,
        score: float,
        scores: dict,
        model: str,
        items: list[dict],
    ) -> int:
        with self.db.conn:
            self.db.execute("BEGIN IMMEDIATE")
            eid = (
                self.db["evals"]
                .insert(
                    {
                        "run_id": run_id,
                        "system": system,
                        "split": split,
                        "metric": metric,
                        "score": score,
                        "scores": json.dumps(scores),
                        "n": len(items),
                        "model": model,
                        "created": now(),
                    }
                )
                .last_pk
            )
            self.db["eval_items"].insert_all(
                {"eval_id": eid, "idx": i, **it} for i, it in enumerate(items)
            )
        return eid

    def evals(self, run_id: int | None) -> list[dict]:
        """A run's evaluations; None: those saved without a run (`sgtui eval` of a model)."""
        where, args = ("run_id = ?", [run_id]) if run_id is not None else ("run_id is null", [])
        rows = []
        for r in self.db["evals"].rows_where(where, args, order_by="id"):
            r = dict(r)
            r["scores"] = json.loads(r["scores"] or "{}")
            rows.append(r)
        return rows

    def eval_items(self, eval_id: int) -> list[dict]:
        return list(self.db["eval_items"].rows_where("eval_id = ?", [eval_id], order_by="idx"))

    def add_artifact(self, run_id: int, kind: str, path: str, meta: dict | None = None) -> None:
        self.db["artifacts"].insert(
            {
                "run_id": run_id,
                "kind": kind,
                "path": path,
                "created": now(),
                "meta": json.dumps(meta or {}),
            }
        )

    def artifacts(self, run_id: int, kind: str | None = None) -> list[dict]:
        where, params = "run_id = ?", [run_id]
        if kind:
            where += " and kind = ?"
            params.append(kind)
        return list(self.db["artifacts"].rows_where(where, params, order_by="id"))

    # -- search cells (sgtui/search.py) ---------------------------------------------------------
    def search_cells(
        self, search: str, task: str | None = None, config: str | None = None
    ) -> list[dict]:
        where, params = "search = ?", [search]
        if task is not None:
            where, params = where + " and task = ?", params + [task]
        if config is not None:
            where, params = where + " and config = ?", params + [config]
        return [dict(r) for r in self.db["search_cells"].rows_where(where, params)]

    def save_search_cell(self, row: dict) -> None:
        self.db["search_cells"].upsert(row, pk=("search", "config", "task"))


def task_fields(row: dict) -> dict:
    """A run row's task as stored (JSON), for display: name, type... without validation."""
    return json.loads(row["task"] or "{}")


def task_of(row: dict) -> Task:
    """A run row's task, decoded (the run's own copy, as it was when the run started)."""
    return Task.from_dict(json.loads(row["task"]), f"run {row['id']}")
