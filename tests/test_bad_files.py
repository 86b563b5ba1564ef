"""Bad files and bad conditions: each gives a clear message (the file, what is wrong, the fix), a
non-zero exit and no traceback, and leaves the database as it was.

Extends tests/test_cli_errors.py (missing, truncated and non-GGUF models; bad task files) with
more damaged models, damaged and foreign databases, a full disk, running out of memory while
training, and a run in which no sample survives the filters."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlite_utils

from sgtui.errors import SgtuiError
from sgtui.paths import REPO_DATA, bundled_model
from sgtui.store import MIGRATIONS, Store

TASK = str(REPO_DATA / "tasks" / "formal-rewrite.toml")
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
]

# Test-only start-up code for the child processes (a sitecustomize.py on PYTHONPATH):
# SGTUI_TEST_FULL_AFTER=K: once K samples are stored, cap the database at its current size, so
# that SQLite itself fails the next write that needs a page with SQLITE_FULL ("database or disk
# is full"), exactly as on a full disk.
SHIM = textwrap.dedent("""
    import os
    if os.environ.get("SGTUI_TEST_FULL_AFTER"):
        import sgtui.store as _s
        _add = _s.Store.add_sample
        _stored = []
        def _add_then_fill(self, run_id, **fields):
            sid = _add(self, run_id, **fields)
            _stored.append(sid)
            if len(_stored) == int(os.environ["SGTUI_TEST_FULL_AFTER"]):
                n = self.db.execute("pragma page_count").fetchone()[0]
                self.db.execute(f"pragma max_page_count = {n}")
            return sid
        _s.Store.add_sample = _add_then_fill
""")


@pytest.fixture
def shim(tmp_path):
    d = tmp_path / "shim"
    d.mkdir()
    (d / "sitecustomize.py").write_text(SHIM)
    return d


def sgtui(*args, tmp_path, extra_env=None, shim=None, timeout=600):
    # one llama.cpp thread (or SGTUI_THREADS as set): on a busy 2-core machine two threads spin
    # against each other and run several times slower; nothing checked here depends on it
    env = {
        **os.environ,
        "SGTUI_HOME": str(tmp_path / "home"),
        "SGTUI_THREADS": os.environ.get("SGTUI_THREADS", "1"),
        **(extra_env or {}),
    }
    if shim is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "sgtui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def digest(p: Path) -> str | None:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None


def settled(p: Path) -> Path:
    """Checkpoint the WAL into the file so that its bytes are the whole database."""
    c = sqlite3.connect(p)
    c.execute("pragma wal_checkpoint(TRUNCATE)")
    c.close()
    return p


def clear_failure(out, *words) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert "fix:" in out.stderr, out.stderr
    for w in words:
        assert w in out.stderr, (w, out.stderr)


def seeded_db(path: Path, n: int = 6) -> tuple[int, list[int]]:
    """A database with one finished run and n annotated samples."""
    from sgtui.config import RunParams
    from sgtui.synthesis import create_run
    from sgtui.task import load_task

    s = Store(path)
    task = load_task(TASK)
    rid = create_run(s, task, RunParams.defaults_for(task.type), str(bundled_model()), "llama-cpp")
    ids = [
        s.add_sample(
            rid,
            round=0,
            slot=i,
            stage="annotated",
            input=f"input {i}",
            raw_output=f"raw {i}",
            output=f"output {i}",
            status="kept",
        )
        for i in range(n)
    ]
    s.mark(ids[0], "discard")
    s.update_run(rid, status="done", stage="done")
    s.close()
    settled(path)
    return rid, ids


# -- model files ------------------------------------------------------------------------------
def _gguf_cases(tmp_path: Path) -> list[tuple[list[str], str, str]]:
    model = bundled_model().read_bytes()
    cases = []

    def write(name: str, data: bytes) -> str:
        p = tmp_path / name
        p.write_bytes(data)
        return str(p)

    cases.append((["--model", write("empty.gguf", b"")], "empty.gguf", "not a GGUF"))
    cases.append((["--model", write("header.gguf", model[:24])], "header.gguf", "could not load"))
    damaged = bytearray(model[:2_000_000])
    damaged[8:24] = b"\xff" * 16  # tensor and metadata counts
    cases.append(
        (["--model", write("counts.gguf", bytes(damaged))], "counts.gguf", "could not load")
    )
    # the tensor data is cut short by a few bytes: found before anything is read past the end
    cases.append((["--model", write("tail.gguf", model[:-100])], "tail.gguf", "could not load"))
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    cases.append(
        (["--model", str(folder), "--backend", "llama-cpp"], "folder.gguf", "this is a folder")
    )
    hf = tmp_path / "hf-no-weights"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cases.append(
        (["--model", str(hf), "--backend", "transformers"], "hf-no-weights", "holds no weights")
    )
    junk = tmp_path / "hf-junk-weights"
    junk.mkdir()
    (junk / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (junk / "model.safetensors").write_bytes(os.urandom(4096))
    cases.append(
        (["--model", str(junk), "--backend", "transformers"], "hf-junk-weights", "could not load")
    )
    return cases


@pytest.mark.slow
def test_damaged_models(tmp_path):
    db = tmp_path / "keep.db"
    seeded_db(db)
    before = digest(db)
    for args, name, words in _gguf_cases(tmp_path):
        out = sgtui(
            "generate", TASK, *args, "--db", str(db), "--rounds", "1", "--quiet", tmp_path=tmp_path
        )
        clear_failure(out, name, words)
    assert digest(db) == before
    assert Store(db).db["runs"].count == 1  # no run was created for a model that failed


def test_context_smaller_than_prompt(tmp_path, bundled_model):
    """A model whose context cannot hold the prompt: refused before generating, naming the
    fix, and the run is marked failed with nothing half-written."""
    import backends
    from backends.base import SamplingParams
    from sgtui.config import RunParams
    from sgtui.pipeline import SynthesisRun
    from sgtui.synthesis import create_run
    from sgtui.task import parse_task

    gen = backends.load_generator("llama-cpp", bundled_model, n_ctx=64)
    store = Store(tmp_path / "ctx.db")
    try:
        with pytest.raises(SgtuiError) as e:
            list(gen.generate(["word " * 600], SamplingParams(max_tokens=8)))
        assert "does not fit" in e.value.message and "longer context" in e.value.fix

        task = parse_task(
            {
                "name": "long",
                "type": "generation",
                "instruction": "Rewrite the sentence politely. " * 80,
                "examples": [
                    {"input": "gimme that", "output": "May I have it?"},
                    {"input": "move", "output": "Could you move, please?"},
                ],
            }
        )
        rid = create_run(
            store,
            task,
            RunParams.defaults_for(task.type, "small").override(rounds=1, per_round=2),
            bundled_model,
            "llama-cpp",
        )
        with pytest.raises(SgtuiError, match="does not fit"):
            SynthesisRun(store, rid, gen).run()
    finally:
        gen.close()
    run = store.run(rid)
    assert run["status"] == "failed" and "does not fit" in run["error"]
    assert store.samples(rid) == []
    assert store.db.execute("pragma integrity_check").fetchone()[0] == "ok"


def test_context_check_uses_the_usable_context(bundled_model):
    """llama.cpp pads a 64-token context to 256; a 200-token prompt must still be refused."""
    import backends
    from backends.base import SamplingParams

    gen = backends.load_generator("llama-cpp", bundled_model, n_ctx=64)
    try:
        with pytest.raises(SgtuiError, match="does not fit"):
            list(gen.generate(["word " * 200], SamplingParams(max_tokens=8)))
    finally:
        gen.close()


# -- database files ---------------------------------------------------------------------------
COMMANDS = [
    ["runs"],
    ["samples", "1"],
    ["mark", "keep", "1"],
    ["generate", TASK, "--rounds", "1", "--quiet"],
    ["generate", "--resume", "1"],
]


def _refused_everywhere(tmp_path, db: Path, *words) -> None:
    before = digest(db)
    for cmd in COMMANDS:
        out = sgtui(*cmd, "--db", str(db), tmp_path=tmp_path)
        clear_failure(out, str(db), *words)
        assert digest(db) == before, cmd
        assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


@pytest.mark.slow
def test_newer_schema_refused_untouched(tmp_path):
    db = tmp_path / "newer.db"
    seeded_db(db)
    s = Store(db)
    s.db["_migrations"].insert({"name": "m900_from_the_future", "applied": 0})
    s.close()
    settled(db)
    _refused_everywhere(tmp_path, db, "newer sgtui", "m900_from_the_future")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "magic", "page_size"])
def test_corrupt_database_refused_untouched(tmp_path, damage):
    db = tmp_path / f"{damage}.db"
    if damage == "garbage":
        db.write_bytes(os.urandom(64 * 1024))
    else:
        seeded_db(db)
        data = bytearray(db.read_bytes())
        if damage == "magic":
            data[0:16] = b"not sqlite here!"
        else:
            data[16:18] = b"\x00\x07"  # a page size that is not a power of two
        db.write_bytes(bytes(data))
    _refused_everywhere(tmp_path, db, "not a usable sgtui database")


def test_damaged_page_reported_clearly(tmp_path):
    """A database whose header is fine but one table's page is destroyed: the commands that
    read that table stop with a clear message, not a traceback."""
    db = tmp_path / "page.db"
    seeded_db(db)
    c = sqlite3.connect(db)
    page = c.execute("select rootpage from sqlite_master where name = 'samples'").fetchone()[0]
    size = c.execute("pragma page_size").fetchone()[0]
    c.close()
    data = bytearray(db.read_bytes())
    data[(page - 1) * size : page * size] = b"\xa5" * size
    db.write_bytes(bytes(data))
    before = digest(db)
    out = sgtui("samples", "1", "--db", str(db), tmp_path=tmp_path)
    clear_failure(out, "damaged", "malformed", ".recover")
    assert digest(db) == before


def _first_migration_only(path: Path) -> None:
    """What the first release of sgtui wrote: only m001_initial applied."""
    name, fn = MIGRATIONS[0]
    assert name == "m001_initial"
    db = sqlite_utils.Database(path)
    db.enable_wal()
    db["_migrations"].create({"name": str, "applied": float}, pk="name")
    fn(db)
    db["_migrations"].insert({"name": name, "applied": 1.0})
    task = json.dumps(
        {
            "name": "old",
            "type": "generation",
            "instruction": "Say it formally.",
            "examples": [
                {"input": "hi", "output": "Hello."},
                {"input": "bye", "output": "Goodbye."},
            ],
            "labels": [],
            "extra_noise_terms": ["input"],
            "metric": "rouge",
        }
    )
    db["tasks"].insert(
        {
            "id": 1,
            "name": "old",
            "type": "generation",
            "definition": task,
            "source": "old.toml",
            "created": 1.0,
        }
    )
    db["runs"].insert(
        {
            "id": 1,
            "task_id": 1,
            "task": task,
            "params": "{}",
            "model": "m.gguf",
            "backend": "llama-cpp",
            "status": "done",
            "stage": "done",
            "created": 1.0,
            "timings": "{}",
            "summary": json.dumps({"kept": 2}),
        }
    )
    for i, (mark, status) in enumerate([("keep", "kept"), ("discard", "kept"), (None, "filtered")]):
        db["samples"].insert(
            {
                "run_id": 1,
                "round": 0,
                "slot": i,
                "stage": "annotated",
                "input": f'in {i} é \n "q"',
                "raw_output": f"raw {i}",
                "output": f"out {i}",
                "status": status,
                "mark": mark,
                "created": 1.0,
                "updated": 1.0,
            }
        )
    db.conn.close()


def test_older_schema_is_migrated(tmp_path):
    db = tmp_path / "old.db"
    _first_migration_only(db)
    before = [dict(r) for r in sqlite_utils.Database(db)["samples"].rows]
    assert not sqlite_utils.Database(db)["train_progress"].exists()

    s = Store(db)
    applied = [r["name"] for r in s.db["_migrations"].rows_where(order_by="applied")]
    assert applied == [name for name, _ in MIGRATIONS]
    for table in ("train_progress", "evals", "eval_items", "artifacts"):
        assert s.db[table].exists(), table
    assert [dict(r) for r in s.db["samples"].rows] == before
    assert s.run(1)["summary"] == {"kept": 2} and s.get_task(1).name == "old"
    assert {r["mark"] for r in s.samples(1)} == {"keep", "discard", None}
    assert [r["input"] for r in s.training_pairs(1)] == ['in 0 é \n "q"']
    s.add_progress(1, step=1, epoch=0.5, loss=1.0, tokens_per_s=1.0, eta_s=1.0, total_steps=2)
    assert s.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    s.close()
    # a second opening finds nothing left to do, and the CLI reads the upgraded data
    Store(db).close()
    out = sgtui("samples", "1", "--db", str(db), tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 3 and "in 0" in out.stdout


# -- a full disk ------------------------------------------------------------------------------
@pytest.mark.slow
def test_database_full_during_generation(tmp_path, shim):
    """SQLite itself runs out of room mid-run (SQLITE_FULL, what a full disk gives): the CLI
    says so without a traceback and exits 2; what was committed stays; once there is room the
    run resumes and finishes with nothing lost."""
    db = tmp_path / "full.db"
    c = sqlite3.connect(db)
    c.execute("pragma page_size = 512")  # small pages: the next samples soon need a new one
    c.execute("vacuum")
    c.close()
    Store(db).close()
    run = ["--rounds", "1", "--per-round", "4", *SMALL[4:]]
    out = sgtui(
        "generate",
        TASK,
        *run,
        "--db",
        str(db),
        "--quiet",
        tmp_path=tmp_path,
        shim=shim,
        extra_env={"SGTUI_TEST_FULL_AFTER": "2"},
    )
    clear_failure(out, str(db), "disk is full", "resume")
    s = Store(db)
    assert s.db.execute("pragma integrity_check").fetchone()[0] == "ok"
    committed = {r["id"]: r for r in s.samples(1)}
    assert len(committed) >= 2
    assert all(r["raw_output"] is not None and r["status"] for r in committed.values())
    s.close()

    out = sgtui(
        "generate", "--resume", "1", "--db", str(db), "--quiet", tmp_path=tmp_path, shim=shim
    )
    assert out.returncode == 0, out.stderr
    s = Store(db)
    after = {r["id"]: r for r in s.samples(1)}
    for sid, r in committed.items():
        for key in ("round", "slot", "input", "raw_output"):
            assert after[sid][key] == r[key]
        if r["stage"] == "annotated":
            assert after[sid]["output"] == r["output"]
    assert sorted((r["round"], r["slot"]) for r in after.values()) == [(0, j) for j in range(4)]
    assert s.run(1)["status"] == "done"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_export_to_full_disk(tmp_path):
    db = tmp_path / "e.db"
    seeded_db(db)
    before = digest(db)
    out = sgtui("samples", "1", "--export", "/dev/full", "--db", str(db), tmp_path=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "disk is full" in out.stderr and "fix:" in out.stderr
    assert digest(db) == before


# -- out of memory while training -------------------------------------------------------------
def test_is_oom_recognises_memory_errors():
    from sgtui.train_worker import _is_oom

    torch = pytest.importorskip("torch")
    assert _is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert _is_oom(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0)"))
    assert _is_oom(MemoryError())
    assert not _is_oom(ValueError("shapes do not match"))
    assert not _is_oom(RuntimeError("expected scalar type Float"))


@pytest.mark.xfail(
    strict=True,
    reason=(
        "sgtui/train_worker.py _is_oom matches 'out of memory', but torch's CPU allocator says "
        '"DefaultCPUAllocator: can\'t allocate memory ... (Cannot allocate memory)"'
    ),
)
def test_is_oom_recognises_the_cpu_allocator():
    from sgtui.train_worker import _is_oom

    torch = pytest.importorskip("torch")
    try:
        torch.empty(10**15)  # 4 PB, beyond any address space: refused at once
    except RuntimeError as e:
        assert _is_oom(e), str(e)
    else:
        pytest.skip("the allocator did not refuse 4 PB")


OOM_SHIM = textwrap.dedent("""
    import backends.training as _t

    class _Boom:
        name = "peft"
        uses_cuda = False  # as backends.training.Trainer declares
        quantized_4bit = False
        def prepare(self):
            pass
        def train(self, spec, emit):
            import torch
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total)")

    _t.select_trainer = lambda *a, **k: _Boom()
""")


@pytest.mark.slow
def test_training_out_of_memory_suggests_smaller_batch(tmp_path, monkeypatch):
    """The training child runs out of GPU memory (simulated: there is no GPU here): the parent
    gets a message that says so and names the smaller batch size or sequence length."""
    from sgtui.training import TrainingJob, TrainParams

    shim_dir = tmp_path / "oomshim"
    shim_dir.mkdir()
    (shim_dir / "sitecustomize.py").write_text(OOM_SHIM)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(shim_dir), os.environ.get("PYTHONPATH")) if p)
    )
    db = tmp_path / "oom.db"
    rid, _ = seeded_db(db)
    job = TrainingJob()
    job.start(db, rid, TrainParams(epochs=1, batch_size=8))
    with pytest.raises(SgtuiError) as e:
        job.wait()
    assert job.proc.returncode == 3
    assert "out of memory on the GPU" in e.value.message
    assert "--batch-size" in e.value.fix and "--max-len" in e.value.fix
    errors = [ev for ev in job.events_seen if ev.get("event") == "error"]
    assert errors and errors[0]["kind"] == "oom"
    assert settled(db) and Store(db).db.execute("pragma integrity_check").fetchone()[0] == "ok"


# -- a run in which nothing survives ----------------------------------------------------------
@pytest.mark.slow
def test_nothing_survives_the_filters(tmp_path):
    """Every generated input contains a noise term: the summary says which filter dropped
    what, and training refuses to start, saying why."""
    task = tmp_path / "noisy.toml"
    text = Path(TASK).read_text(encoding="utf-8")
    task.write_text(
        text.replace(
            'type = "generation"', 'type = "generation"\nextra_noise_terms = ["e", "a", " "]'
        ),
        encoding="utf-8",
    )
    db = tmp_path / "none.db"
    out = sgtui(
        "generate",
        str(task),
        "--rounds",
        "1",
        "--per-round",
        "4",
        "--gen-max-tokens",
        "32",
        "--db",
        str(db),
        "--quiet",
        tmp_path=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "0 passed the input filters" in out.stdout, out.stdout
    lines = [ln.split() for ln in out.stdout.splitlines() if ln.strip().startswith("filtered by")]
    assert sum(int(parts[-1]) for parts in lines) == 4, out.stdout
    assert "no sample survived" in out.stdout

    from sgtui.training import TrainingJob, TrainParams

    with pytest.raises(SgtuiError) as e:
        TrainingJob().start(db, 1, TrainParams())
    assert "no training pairs" in e.value.message and "filtered:" in e.value.message
    assert "--seeds-only" in e.value.fix

    before = digest(settled(db))
    out = sgtui("train", "1", "--db", str(db), tmp_path=tmp_path)
    clear_failure(out, "no training pairs")
    assert digest(db) == before
