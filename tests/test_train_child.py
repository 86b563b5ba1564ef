"""The training child process: it dies with its parent, and a resumed training keeps one
progress row per step and the interrupted training's parameters.

Every test trains for real (transformers + peft on the CPU) through the real CLI or the real
worker, on a tiny random Llama built here: two layers, a byte-level tokenizer and a chat
template, so a step takes milliseconds and only the imports cost seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtui.store import Store
from sgtui.task import parse_task

pytestmark = [
    pytest.mark.slow,  # trains (a tiny model, but each child imports torch)
    pytest.mark.skipif(
        not Path("/proc/self/stat").exists(), reason="finds processes through /proc (Linux)"
    ),
]

ROOT = Path(__file__).resolve().parent.parent
TASK = {
    "name": "colour-thing",
    "type": "generation",  # generation: 3 epochs by default
    "instruction": "Name a thing of this colour.",
    "examples": [{"input": "red", "output": "apple"}, {"input": "blue", "output": "sky"}],
}
COLOURS = ["green", "yellow", "black", "white", "purple", "orange", "pink", "brown"]
# fp32: no bf16 timing probe; a long --max-len: byte-level tokens make long prompts
CHEAP = ["--precision", "fp32", "--max-len", "4096", "--batch-size", "1", "--lr", "1e-3"]
GONE_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A Hugging Face folder with a randomly initialised two-layer Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<s>", "</s>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>"])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>"
        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["</s>"],
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def make_run(db: Path, model: Path, n_pairs: int) -> int:
    store = Store(db)
    task = parse_task(TASK, "test")
    run_id = store.create_run(task, store.add_task(task), {}, str(model), "transformers")
    for i in range(n_pairs):
        colour = COLOURS[i % len(COLOURS)] + (f" {i}" if i >= len(COLOURS) else "")
        store.add_sample(
            run_id,
            round=0,
            slot=i,
            stage="annotated",
            status="kept",
            input=colour,
            output="flibbertigibbet",
        )
    store.close()
    return run_id


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def sgtui(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sgtui", *argv],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_folder(db: Path, run_id: int) -> Path:
    from sgtui.training import run_dir

    return run_dir(db, run_id)


# -- processes through /proc ------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has stopped running


def worker_child(parent: int) -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (_stat(int(d.name)) or ("", 0))[1] == parent:
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"sgtui.train_worker" in cmd:
                return int(d.name)
    return None


def wait_for(what, timeout: float, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(every)
    return what()


def progress_steps(db: Path, run_id: int) -> list[int]:
    store = Store(db)
    try:
        return [r["step"] for r in store.progress(run_id)]
    finally:
        store.close()


# -- the child dies with its parent ----------------------------------------------------------
@pytest.mark.parametrize("moment", ["start", "loading", "steps"])
def test_sigkill_of_sgtui_train_ends_the_child(tmp_path, tiny_model, moment):
    """SIGKILL `sgtui train` just after its child started, while the child loads the model
    (train_meta.json is written just before the load), or while it trains: the child is gone
    within seconds, quietly (no traceback in train.log), and no later step is written."""
    db = tmp_path / "k.db"
    run_id = make_run(db, tiny_model, n_pairs=8)
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sgtui",
            "train",
            str(run_id),
            "--db",
            str(db),
            "--epochs",
            "200",
            *CHEAP,
        ],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    child = None
    try:
        child = wait_for(lambda: worker_child(parent.pid), timeout=60, every=0.01)
        assert child, "the training child never started: " + parent.stderr.read().decode()[-2000:]
        if moment == "loading":
            meta = run_folder(db, run_id) / "train_meta.json"
            assert wait_for(meta.is_file, timeout=120), "the child never reached the model load"
        elif moment == "steps":
            assert wait_for(lambda: progress_steps(db, run_id), timeout=120, every=0.1), (
                "no training step was recorded"
            )
        assert parent.poll() is None, "the training ended before the kill"
        parent.kill()
        parent.wait()
        t0 = time.monotonic()
        assert wait_for(lambda: not alive(child), timeout=GONE_WITHIN_S), (
            f"the training child {child} outlived its parent by {GONE_WITHIN_S} s"
        )
        gone_after = time.monotonic() - t0
        steps = progress_steps(db, run_id)
        time.sleep(1.5)  # a live orphan would record another step within this second
        assert progress_steps(db, run_id) == steps
        log = (run_folder(db, run_id) / "train.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        assert gone_after < GONE_WITHIN_S
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)


def test_worker_exits_when_the_pipe_from_its_parent_closes(tmp_path, tiny_model):
    """The portable lifeline: a worker whose parent is alive but has closed the stdin pipe
    (as the operating system does when the parent dies) stops at once while loading the
    model, with exit code 4 and a line in its log, not a traceback."""
    db = tmp_path / "p.db"
    run_id = make_run(db, tiny_model, n_pairs=4)
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sgtui.train_worker",
                "--db",
                str(db),
                "--run",
                str(run_id),
                "--parent",
                str(os.getpid()),
                "--params",
                json.dumps(
                    {
                        "epochs": 200,
                        "precision": "fp32",
                        "max_len": 4096,
                        "batch_size": 1,
                        "lr": 1e-3,
                    }
                ),
            ],
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        meta = run_folder(db, run_id) / "train_meta.json"
        assert wait_for(lambda: meta.is_file() or worker.poll() is not None, timeout=120)
        assert worker.poll() is None, log.read_text()[-2000:]
        worker.stdin.close()
        assert worker.wait(timeout=GONE_WITHIN_S) == 4
        text = log.read_text(errors="replace")
        assert "the parent process is gone" in text and "Traceback" not in text, text[-3000:]
        assert not (run_folder(db, run_id) / "train.pid").exists()  # the lock is released
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# -- resume -----------------------------------------------------------------------------------
def _stop_before(rdir: Path, epoch: int) -> None:
    """Leave the run folder as a kill during `epoch` leaves it: epoch checkpoints are renamed
    into place whole when an epoch ends, so the checkpoints of that epoch and later, and the
    final adapter, do not exist yet; the progress rows already written stay."""
    for ck in (rdir / "checkpoints").glob("epoch-*"):
        if int(ck.name.split("-")[1]) >= epoch:
            shutil.rmtree(ck)
    shutil.rmtree(rdir / "adapter")


def test_resume_after_a_kill_mid_epoch_keeps_one_row_per_step(tmp_path, tiny_model):
    db = tmp_path / "r.db"
    run_id = make_run(db, tiny_model, n_pairs=4)
    first = sgtui("train", str(run_id), "--db", str(db), "--epochs", "2", *CHEAP)
    assert first.returncode == 0, first.stderr[-3000:]
    steps = progress_steps(db, run_id)
    assert steps[-1] == 8 and 4 in steps  # 4 steps an epoch; an epoch end is always written

    _stop_before(run_folder(db, run_id), epoch=2)  # killed in epoch 2, after rows of it
    again = sgtui("train", str(run_id), "--db", str(db), "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch 1 (step 4)" in again.stderr
    steps = progress_steps(db, run_id)
    assert steps == sorted(set(steps)), f"duplicate progress rows: {steps}"
    assert steps[0] == 1 and steps[-1] == 8 and 4 in steps  # epoch 1's rows are kept


def test_resume_without_a_checkpoint_keeps_the_interrupted_parameters(tmp_path, tiny_model):
    """Killed before its first epoch ended, a training started with --epochs 1 resumes with
    1 epoch, not the task type's default 3, ignores a new --lr, and gives the adapter the
    uninterrupted training gave."""
    db = tmp_path / "c.db"
    run_id = make_run(db, tiny_model, n_pairs=4)
    first = sgtui("train", str(run_id), "--db", str(db), "--epochs", "1", *CHEAP)
    assert first.returncode == 0, first.stderr[-3000:]
    rdir = run_folder(db, run_id)
    uninterrupted = (rdir / "adapter" / "adapter_model.safetensors").read_bytes()

    _stop_before(rdir, epoch=1)
    again = sgtui("train", str(run_id), "--db", str(db), "--resume", "--lr", "0.5")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stopped before its first epoch checkpoint" in again.stderr
    assert "epochs 1, lr 0.001" in again.stderr and "ignoring --lr" in again.stderr
    assert "for 1 epochs, 4 steps" in again.stderr
    assert f"run {run_id}: trained 4 steps" in again.stdout
    rows = Store(db).progress(run_id)
    assert [r["step"] for r in rows][-1] == 4 and {r["total_steps"] for r in rows} == {4}
    assert (rdir / "adapter" / "adapter_model.safetensors").read_bytes() == uninterrupted


def test_resume_of_a_run_never_trained_starts_a_new_training(tmp_path, tiny_model):
    """Nothing to continue: --resume says so and trains with the options given."""
    db = tmp_path / "n.db"
    run_id = make_run(db, tiny_model, n_pairs=2)
    out = sgtui("train", str(run_id), "--db", str(db), "--resume", "--epochs", "1", *CHEAP)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "has no interrupted training to resume" in out.stderr
    assert "ignoring" not in out.stderr  # the options given are used
    assert f"run {run_id}: trained 2 steps" in out.stdout
