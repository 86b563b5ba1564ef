"""Crash soak: kill -9 a real headless generation at seeded random moments, resume, repeat.

    .venv/bin/python bench/crash_soak.py --kills 20 --seed 7

Each cycle starts `python -m sgtui generate` (the first time a new run, then `--resume 1`),
waits until that process has committed its first sample of the targeted stage (input
generation for the first half of the kills, annotation for the second), makes a few keep /
discard marks from this process (as the TUI would, through Store.mark) while it keeps writing,
sleeps a seeded random delay and sends SIGKILL. After every kill it checks:

- PRAGMA integrity_check is "ok";
- every sample seen committed before (polled while the process ran, and after each kill) is
  still there exactly once: same id, (round, slot), input and raw_output, and an annotation
  once committed keeps its output and candidates;
- no (round, slot) is stored twice; every mark made so far reads back as made.

Then it lets a last `--resume 1` finish and checks the finished run has the structure of an
uninterrupted one: every (round, slot) exactly once, no duplicate kept input, nothing left
unannotated, status done. With --reference it also runs the same generation uninterrupted
into another database and counts the samples whose raw output is byte-identical.

Figures go to bench/results/crash_soak.md (or --out). tests/test_crash.py runs the same
harness with fewer kills.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))  # bench/machine.py, also when a test loads this file
TASK = ROOT / "data" / "tasks" / "formal-rewrite.toml"
SMALL = [
    "--rounds",
    "2",
    "--per-round",
    "4",
    "--gen-max-tokens",
    "32",
    "--n",
    "2",
    "--best-of",
    "2",
    "--ann-max-tokens",
    "16",
    "--mode",
    "small",
]


def gen_args(rounds: int = 2, per_round: int = 4) -> list[str]:
    """The small real-model run, with as many slots as the kills need (each kill waits for at
    least one commit, so a soak needs more commits than kills)."""
    args = list(SMALL)
    args[1], args[3] = str(rounds), str(per_round)
    return args


# Test-only start-up code for the child (a sitecustomize.py on PYTHONPATH): one llama.cpp
# thread. On a busy 2-core machine two llama.cpp threads spin against each other and generate
# several times slower; the thread count changes nothing that the soak checks.
THREADS_SHIM = """\
import os
if os.environ.get("SGTUI_TEST_LLAMA_THREADS"):
    import backends.llama_cpp as _m
    _d = list(_m.LlamaCppGenerator.__init__.__defaults__)
    _d[1] = int(os.environ["SGTUI_TEST_LLAMA_THREADS"])
    _m.LlamaCppGenerator.__init__.__defaults__ = tuple(_d)
"""

ROW = "id, round, slot, stage, status, input, raw_output, output, candidates, mark"


@dataclass
class Kill:
    n: int
    target: str  # the stage this kill aimed at
    stage: str  # the run's stage when the signal went
    delay_s: float  # seeded random delay after the process's first commit
    samples: int  # samples in the database at the kill
    annotated: int
    committed_here: int  # samples or annotations this process committed before dying
    marks_made: int


@dataclass
class Result:
    kills: list[Kill] = field(default_factory=list)
    finished_early: int = 0  # cycles in which the process finished before the signal
    checks: int = 0
    integrity_failures: int = 0
    samples_lost: int = 0  # committed rows missing or changed afterwards
    duplicate_slots: int = 0
    marks_made: int = 0
    marks_lost: int = 0
    committed_seen: int = 0  # distinct samples seen committed over the whole soak
    final: dict = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations


class Soak:
    def __init__(
        self,
        workdir: Path,
        kills: int = 20,
        seed: int = 7,
        task: Path = TASK,
        gen_args: list[str] | None = None,
        max_delay: float = 3.0,
        marks_per_kill: int = 3,
        threads: int | None = 1,
        timeout: float = 600,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = self.workdir / "soak.db"
        self.kills, self.seed, self.task = kills, seed, Path(task)
        self.gen_args = list(gen_args or SMALL)
        self.max_delay, self.marks_per_kill = max_delay, marks_per_kill
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.result = Result()
        self.committed: dict[int, dict] = {}  # id -> row, everything ever seen committed
        self.marks: dict[int, str | None] = {}  # id -> the last mark this harness made
        self.env = {**os.environ, "SGTUI_HOME": str(self.workdir / "home"), "PYTHONUNBUFFERED": "1"}
        threads = int(os.environ.get("SGTUI_TEST_LLAMA_THREADS", threads or 0))
        if threads:
            shim = self.workdir / "shim"
            shim.mkdir(exist_ok=True)
            (shim / "sitecustomize.py").write_text(THREADS_SHIM)
            self.env["SGTUI_TEST_LLAMA_THREADS"] = str(threads)
            self.env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(shim), str(ROOT), os.environ.get("PYTHONPATH")) if p
            )
        self.n_proc = 0

    # -- processes ----------------------------------------------------------------------------
    def command(self, first: bool) -> list[str]:
        head = [sys.executable, "-m", "sgtui", "generate"]
        if first:
            return [*head, str(self.task), "--db", str(self.db), *self.gen_args, "--quiet"]
        return [*head, "--resume", "1", "--db", str(self.db), "--quiet"]

    def start(self, first: bool) -> subprocess.Popen:
        self.n_proc += 1
        log = (self.workdir / f"proc-{self.n_proc:02d}.log").open("wb")
        try:
            return subprocess.Popen(
                self.command(first),
                env=self.env,
                cwd=str(ROOT),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    def log_tail(self) -> str:
        text = (self.workdir / f"proc-{self.n_proc:02d}.log").read_text(errors="replace")
        return text[-2000:]

    # -- reading the database -----------------------------------------------------------------
    def connect(self) -> sqlite3.Connection | None:
        if not self.db.exists():
            return None
        c = sqlite3.connect(self.db, timeout=30)
        c.row_factory = sqlite3.Row
        return c

    def rows(self, c: sqlite3.Connection) -> dict[int, dict]:
        try:
            return {
                r["id"]: dict(r) for r in c.execute(f"select {ROW} from samples where run_id = 1")
            }
        except sqlite3.OperationalError as e:  # the tables may not exist yet
            if "no such table" in str(e):
                return {}
            raise

    def stage(self, c: sqlite3.Connection) -> str:
        try:
            row = c.execute("select stage from runs where id = 1").fetchone()
        except sqlite3.OperationalError:
            return "created"
        return row[0] if row else "created"

    @staticmethod
    def fingerprint(rows: dict[int, dict]) -> tuple[int, int]:
        return len(rows), sum(1 for r in rows.values() if r["stage"] == "annotated")

    # -- checks -------------------------------------------------------------------------------
    def violation(self, text: str) -> None:
        self.result.violations.append(text)

    def remember(self, rows: dict[int, dict]) -> None:
        for sid, r in rows.items():
            old = self.committed.get(sid)
            if old is None or (r["stage"] == "annotated" and old["stage"] != "annotated"):
                self.committed[sid] = r

    def check(self, when: str) -> dict[int, dict]:
        """Everything seen committed is still there, unchanged; the database is sound."""
        self.result.checks += 1
        from sgtui.store import Store

        store = Store(self.db)
        try:
            ok = store.db.execute("pragma integrity_check").fetchone()[0]
            if ok != "ok":
                self.result.integrity_failures += 1
                self.violation(f"{when}: integrity_check says {ok!r}")
            c = store.db.conn
            c.row_factory = sqlite3.Row
            rows = {
                r["id"]: dict(r) for r in c.execute(f"select {ROW} from samples where run_id = 1")
            }
            c.row_factory = None
            slots = [(r["round"], r["slot"]) for r in rows.values()]
            dup = len(slots) - len(set(slots))
            if dup:
                self.result.duplicate_slots += dup
                self.violation(f"{when}: {dup} (round, slot) pairs stored twice")
            for sid, old in self.committed.items():
                new = rows.get(sid)
                same = new is not None and all(
                    new[k] == old[k] for k in ("round", "slot", "input", "raw_output")
                )
                if same and old["stage"] == "annotated":
                    same = all(new[k] == old[k] for k in ("stage", "output", "candidates"))
                if not same:
                    self.result.samples_lost += 1
                    self.violation(
                        f"{when}: committed sample {sid} {'is gone' if new is None else 'changed'}"
                    )
            for sid, mark in self.marks.items():
                if sid not in rows or rows[sid]["mark"] != mark:
                    self.result.marks_lost += 1
                    self.violation(
                        f"{when}: mark {mark!r} on sample {sid} reads back as "
                        f"{rows.get(sid, {}).get('mark')!r}"
                    )
            self.remember(rows)
            return rows
        finally:
            store.close()

    def make_marks(self, store, rows: dict[int, dict]) -> int:
        ids = sorted(rows)
        made = 0
        for _ in range(self.marks_per_kill if ids else 0):
            sid = self.rng.choice(ids)
            mark = self.rng.choice(["keep", "discard", None])
            store.mark(sid, mark)  # committed at once, while the generator writes
            self.marks[sid] = mark
            made += 1
        self.result.marks_made += made
        return made

    # -- one cycle ----------------------------------------------------------------------------
    def cycle(self, n: int, target: str) -> bool:
        """Start, wait for a first commit (in the target stage if it is still ahead), mark,
        wait the random delay, kill, check. False when the run finished instead."""
        from sgtui.store import Store

        proc = self.start(first=(n == 0))
        delay = round(self.rng.uniform(0, self.max_delay), 3)
        deadline = time.monotonic() + self.timeout
        base = None
        c = None
        try:
            while True:
                if proc.poll() is not None:
                    if proc.returncode != 0:
                        self.violation(
                            f"kill {n}: the process failed before the signal "
                            f"(exit {proc.returncode}): {self.log_tail()}"
                        )
                    self.result.finished_early += 1
                    return False
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    self.violation(f"kill {n}: no commit within {self.timeout:.0f} s")
                    return False
                if c is None:
                    c = self.connect()
                    if c is None:
                        time.sleep(0.05)
                        continue
                rows = self.rows(c)
                fp = self.fingerprint(rows)
                if base is None:
                    base = fp
                stage = self.stage(c)
                self.remember(rows)
                # the first commit of this process in the stage aimed at (annotation: unless
                # the run is already past it)
                if target == "inputs":
                    hit = fp != base
                else:
                    hit = fp[1] > base[1] or (fp != base and stage in ("balance", "done"))
                if hit:
                    break
                time.sleep(0.05)
            store = Store(self.db)
            try:
                t_mark = time.monotonic()
                made = self.make_marks(store, rows)
            finally:
                store.close()
            time.sleep(max(0.0, delay - (time.monotonic() - t_mark)))
            if proc.poll() is not None:
                self.result.finished_early += 1
                return False
            before = self.rows(c)
            self.remember(before)
            stage = self.stage(c)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if c is not None:
                c.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        after = self.check(f"after kill {n}")
        fp = self.fingerprint(after)
        self.result.kills.append(
            Kill(n, target, stage, delay, fp[0], fp[1], sum(a - b for a, b in zip(fp, base)), made)
        )
        return True

    def finish(self) -> None:
        if self.result.finished_early and self.db.exists():
            from sgtui.store import Store

            store = Store(self.db)
            done = store.run(1)["status"] == "done"
            store.close()
            if done:  # the last cycle's process finished the run before its signal
                rows = self.check("at the end")
                self.result.final = self.structure(rows)
                return
        proc = self.start(first=not self.db.exists())
        try:
            code = proc.wait(timeout=self.timeout * 3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.violation("the final resume did not finish in time")
            return
        if code != 0:
            self.violation(f"the final resume failed (exit {code}): {self.log_tail()}")
            return
        rows = self.check("at the end")
        self.result.final = self.structure(rows)

    def structure(self, rows: dict[int, dict]) -> dict:
        from sgtui.config import RunParams
        from sgtui.store import Store

        store = Store(self.db)
        try:
            run = store.run(1)
            params = RunParams.from_dict(run["params"])
            pairs = len(store.training_pairs(1))
        finally:
            store.close()
        want = [(r, s) for r in range(params.rounds) for s in range(params.per_round)]
        got = sorted((r["round"], r["slot"]) for r in rows.values())
        if got != want:
            self.violation(f"the finished run has slots {got}, an uninterrupted one {want}")
        kept = [
            r["input"].strip()
            for r in rows.values()
            if r["stage"] == "annotated" or r["status"] == "kept"
        ]
        if len(kept) != len(set(kept)):
            self.violation("the finished run holds a kept input twice")
        left = [sid for sid, r in rows.items() if r["stage"] == "input" and r["status"] == "kept"]
        if left:
            self.violation(f"kept inputs never annotated: {left}")
        if run["status"] != "done":
            self.violation(f"the run ends as {run['status']!r}, not done")
        discarded = {sid for sid, m in self.marks.items() if m == "discard"}
        return {
            "slots": len(got),
            "expected_slots": len(want),
            "kept_inputs": len(kept),
            "annotated": sum(1 for r in rows.values() if r["stage"] == "annotated"),
            "kept": sum(
                1 for r in rows.values() if r["stage"] == "annotated" and r["status"] == "kept"
            ),
            "training_pairs": pairs,
            "discarded_by_hand": len(discarded),
            "status": run["status"],
            "summary": run["summary"],
        }

    def run(self) -> Result:
        t0 = time.monotonic()
        half = (self.kills + 1) // 2
        n = 0
        while n < self.kills:
            target = "inputs" if n < half else "annotate"
            if not self.cycle(n, target):
                break
            n += 1
        self.finish()
        self.result.committed_seen = len(self.committed)
        self.result.wall_s = round(time.monotonic() - t0, 1)
        return self.result

    def reference(self) -> dict:
        """The same generation uninterrupted, in its own database: how many raw outputs match."""
        ref = self.workdir / "reference.db"
        ref.unlink(missing_ok=True)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "sgtui",
                "generate",
                str(self.task),
                "--db",
                str(ref),
                *self.gen_args,
                "--quiet",
            ],
            env=self.env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=self.timeout * 3,
        )
        if out.returncode != 0:
            return {"error": out.stderr[-500:]}

        def grid(path):
            c = sqlite3.connect(path)
            try:
                return {
                    (r, s): (raw, o)
                    for r, s, raw, o in c.execute(
                        "select round, slot, raw_output, output from samples where run_id = 1"
                    )
                }
            finally:
                c.close()

        a, b = grid(self.db), grid(ref)
        return {
            "slots": len(b),
            "same_raw_output": sum(1 for k in b if a.get(k, (0,))[0] == b[k][0]),
            "same_annotation": sum(1 for k in b if a.get(k) == b[k]),
        }


# -- report -----------------------------------------------------------------------------------
def machine() -> str:
    """bench/machine.py's description, with what a crash soak also depends on."""
    from machine import describe

    try:
        import llama_cpp

        llama = llama_cpp.__version__
    except ImportError:
        llama = "not installed"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{describe()}; kernel {platform.release()}; load average at the end "
        f"{load}; Python {platform.python_version()}, llama-cpp-python {llama}; "
        f"SQLite {sqlite3.sqlite_version}"
    )


def report(result: Result, args, ref: dict | None) -> str:
    cmd = "python bench/crash_soak.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in (
            ("kills", args.kills),
            ("seed", args.seed),
            ("max_delay", args.max_delay),
            ("rounds", args.rounds),
            ("per_round", args.per_round),
        )
    )
    if args.reference:
        cmd += " --reference"
    stages: dict[str, int] = {}
    for k in result.kills:
        stages[k.stage] = stages.get(k.stage, 0) + 1
    lines = [
        "# Crash soak: SIGKILL during a real generation, then --resume",
        "",
        f"Command: `{cmd}` (from the repository root, with the project's virtualenv).",
        "",
        f"Machine: {machine()}.",
        "",
        f"Generation: `sgtui generate {TASK.relative_to(ROOT)} {' '.join(args.gen_args)}` on the "
        "bundled SmolLM2-135M-Instruct (llama.cpp, 1 thread), resumed with `--resume 1` after "
        "each kill. "
        f"Kills aimed at input generation for the first half and at annotation for the second; "
        f"the signal goes a seeded random 0-{args.max_delay:g} s after the process's first "
        f"commit in that stage; {args.marks_per_kill} keep/discard/clear marks are made through "
        "Store.mark from the harness while the process writes, before each kill.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| kills (SIGKILL) | {len(result.kills)} |",
        f"| kills by stage at the signal | {', '.join(f'{k} {v}' for k, v in stages.items())} |",
        f"| cycles in which the run finished before the signal | {result.finished_early} |",
        f"| checks (after every kill and at the end) | {result.checks} |",
        f"| integrity_check failures | {result.integrity_failures} |",
        f"| distinct samples seen committed | {result.committed_seen} |",
        f"| samples lost or changed | {result.samples_lost} |",
        f"| (round, slot) stored twice | {result.duplicate_slots} |",
        f"| marks made during the run | {result.marks_made} |",
        f"| marks lost | {result.marks_lost} |",
        f"| finished run: slots / expected | {result.final.get('slots', '-')} / "
        f"{result.final.get('expected_slots', '-')} |",
        f"| finished run: annotated, kept, training pairs | {result.final.get('annotated', '-')}, "
        f"{result.final.get('kept', '-')}, {result.final.get('training_pairs', '-')} |",
        f"| violations | {len(result.violations)} |",
        f"| wall time | {result.wall_s:.0f} s |",
    ]
    if ref is not None:
        if "error" in ref:
            lines.append(f"| uninterrupted reference run | failed: {ref['error']!r} |")
        else:
            lines.append(
                f"| same raw output as an uninterrupted run (same seed) | "
                f"{ref['same_raw_output']} of {ref['slots']} slots |"
            )
            lines.append(
                f"| same raw output and annotation as that run | "
                f"{ref['same_annotation']} of {ref['slots']} slots |"
            )
    lines += [
        "",
        "Per kill:",
        "",
        "| # | aimed at | stage at the signal | delay after first commit (s) | samples "
        "in the db | annotated | commits by the killed process | marks made |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in result.kills:
        lines.append(
            f"| {k.n + 1} | {k.target} | {k.stage} | {k.delay_s:.2f} | {k.samples} | "
            f"{k.annotated} | {k.committed_here} | {k.marks_made} |"
        )
    if result.violations:
        lines += ["", "Violations:", ""] + [f"- {v}" for v in result.violations]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-delay", type=float, default=3.0)
    ap.add_argument("--marks-per-kill", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--per-round", type=int, default=6)
    ap.add_argument("--workdir", default=str(ROOT / "bench" / ".work" / "crash_soak"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "crash_soak.md"))
    ap.add_argument(
        "--reference",
        action="store_true",
        help="also run the generation uninterrupted and compare the outputs",
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    work = Path(args.workdir)
    for p in work.glob("*.db*"):
        p.unlink()
    args.gen_args = gen_args(args.rounds, args.per_round)
    soak = Soak(
        work,
        kills=args.kills,
        seed=args.seed,
        max_delay=args.max_delay,
        marks_per_kill=args.marks_per_kill,
        gen_args=args.gen_args,
    )
    result = soak.run()
    ref = soak.reference() if args.reference else None
    text = report(result, args, ref)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    print(
        json.dumps(
            {"ok": result.ok, "kills": len(result.kills), "violations": result.violations[:5]},
            indent=1,
        )
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
