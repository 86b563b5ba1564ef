"""Fine-tuning: the training parameters, the training data, and the child process that trains.

The training itself (torch, peft, unsloth) lives in backends/training.py and runs in a child
process (sgtui/train_worker.py), so cancelling is a terminate and every byte of GPU memory is
returned when the child exits. The parent reads the child's JSON progress lines; the child also
writes them to the store's train_progress table, which the TUI can poll.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from backends.chat import render_template
from backends.llama_cpp import check_gguf, quiet_llama
from backends.training import latest_checkpoint as latest

from .config import MAX_SEED, check_fields, param
from .errors import SgtuiError
from .paths import runs_dir
from .prompts import meta_messages
from .store import Store, task_of

PRECISIONS = ("auto", "bf16", "fp32")
TRAINERS = ("auto", "unsloth", "peft")


# Epochs per task type: generation's 3 is the max-min choice of `sgtui search` over the eleven
# NI tasks (bench/results/search.md); classification's 1 beat 2 on their test rows, 3 training
# seeds (bench/results/cls-epochs-1.md, docs/METHOD.md). Another type gets TrainParams.epochs.
EPOCHS_BY_TYPE = {"classification": 1, "generation": 3}


@dataclass(frozen=True)
class TrainParams:
    """Everything that decides what a training produces, each field declared once with its
    flag, help and range (`sgtui.config.param`). Defaults and reasons: docs/TRAINING.md."""

    epochs: int = param(3, flag="--epochs", min=1)  # the paper's 3
    # LoRA needs more than the paper's full fine-tuning 5e-5
    lr: float = param(2e-4, flag="--lr", above=0.0)
    rank: int = param(16, flag="--rank", min=1)
    alpha: int = param(32, flag="--alpha", min=1)
    # measured: 0.05 made a CPU step 2x slower (docs)
    dropout: float = param(0.0, flag="--dropout", min=0.0, below=1.0)
    batch_size: int = param(8, flag="--batch-size", min=1)
    max_len: int = param(
        1024, flag="--max-len", min=16, help="drop examples longer than this many tokens"
    )
    # the paper's Trainer seed; torch.manual_seed(seed + epoch) takes at most 64 bits
    seed: int = param(42, flag="--seed", min=0, max=MAX_SEED)
    seeds_only: bool = param(
        False,
        flag="--seeds-only",
        help="train on the task's own examples only (the few-shot fine-tuning baseline)",
    )
    seed_repeats: int = param(
        0,
        flag="--seed-repeats",
        min=0,
        help="also train on the task's own examples, each this many times, each with the "
        "other examples as its demonstrations",
    )
    # CPU: bf16 autocast where the CPU has it, else fp32
    precision: str = param(
        "auto",
        flag="--precision",
        choices=PRECISIONS,
        help="CPU arithmetic: auto picks bf16 autocast only where it is faster",
    )
    trainer: str = param(
        "auto",
        flag="--trainer",
        choices=TRAINERS,
        help="auto: unsloth on CUDA when installed, else transformers + peft",
    )
    grad_clip: float = param(1.0, flag="--grad-clip", min=0.0, help="0: no clipping")
    weight_decay: float = param(0.0, flag="--weight-decay", min=0.0)

    @classmethod
    def for_task(cls, task_type: str | None) -> "TrainParams":
        """The defaults, with the epochs the max-min search chose for this task type."""
        return cls(epochs=EPOCHS_BY_TYPE.get(task_type or "", cls.epochs))

    def override(self, **changes) -> "TrainParams":
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown training parameter(s): {', '.join(sorted(unknown))}")
        new = replace(self, **{k: v for k, v in changes.items() if v is not None})
        new.validate()
        return new

    def validate(self) -> None:
        """Refuse what a training cannot use, naming the flag, the range and the value, as
        RunParams does (floats must be finite: an infinite --lr passes `> 0` and trains to NaN
        weights)."""
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainParams":
        return cls().override(**d)


# -- where things go --------------------------------------------------------------------------
def db_path_of(db) -> Path:
    """A Store's database path, or the path itself."""
    return Path(getattr(db, "path", db))


def run_dir(db, run_id: int) -> Path:
    """Run `run_id`'s folder: it belongs to the database (a Store or its path) that holds the
    run, so run 1 of one database never touches run 1 of another."""
    return runs_dir(db_path_of(db)) / f"run-{run_id}"


def adapter_dir(db, run_id: int) -> Path:
    return run_dir(db, run_id) / "adapter"


def checkpoints_dir(db, run_id: int) -> Path:
    return run_dir(db, run_id) / "checkpoints"


# -- training data --------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatFormat:
    """The model's chat template and the special-token texts it is rendered with, taken from
    the same place the generation backend takes them, so a training prompt is byte-identical
    to the evaluation prompt."""

    template: str | None
    bos: str
    eos: str
    # whether the generator puts BOS before the prompt's tokens: llama.cpp does when the GGUF
    # says so; the transformers generator tokenises without special tokens
    add_bos: bool = False

    def render(self, messages) -> str:
        return render_template(self.template, messages, self.bos, self.eos, True)


def chat_format(model_path: str | Path, trust_remote_code: bool = False) -> ChatFormat:
    p = Path(model_path)
    if p.is_file():
        # exactly what backends/llama_cpp.py does, from the vocabulary alone (no weights read)
        check_gguf(p)
        from llama_cpp import Llama

        quiet_llama()
        llm = Llama(model_path=str(p), vocab_only=True, verbose=False)
        try:
            md = llm.metadata or {}
            eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
            bos_id = llm.token_bos()
            bos = (
                llm.detokenize([bos_id], special=True).decode("utf-8", "replace")
                if bos_id >= 0
                else ""
            )
            return ChatFormat(
                md.get("tokenizer.chat_template"),
                bos,
                eos,
                bool(llm._model.add_bos_token()) and bos_id >= 0,
            )
        finally:
            llm.close()
    if not p.is_dir():
        raise SgtuiError(
            "model not found",
            path=str(p),
            fix="pass --model with a .gguf file or a Hugging Face folder",
        )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    return ChatFormat(tok.chat_template, tok.bos_token or "", tok.eos_token or "")


def _task_of(store, run_id: int):
    return task_of(store.run(run_id))


def training_pairs(store, run_id: int, seeds_only: bool = False) -> list[tuple[str, str]]:
    """The (input, output) pairs to train on; refuses an empty set, saying why it is empty."""
    task = _task_of(store, run_id)
    if seeds_only:
        return [(e.input, e.output) for e in task.examples]
    pairs = [
        (r["input"], r["output"])
        for r in store.training_pairs(run_id)
        if (r["output"] or "").strip()
    ]
    if pairs:
        return pairs
    counts = store.counts(run_id)
    dropped = ", ".join(
        f"{name or 'unknown'} {n}"
        for name, n in sorted(counts["filtered"].items(), key=lambda kv: -kv[1])
    )
    why = (
        f"{counts['candidates']} candidate inputs; filtered: {dropped or 'none'}; "
        f"{counts['kept']} annotated samples kept; {counts['marked_discard']} discarded by hand"
    )
    raise SgtuiError(
        f"run {run_id} has no training pairs, so training did not start ({why})",
        path=str(store.path),
        fix=f"generate more data (sgtui generate --resume {run_id}, or a new run with "
        "more --rounds), mark filtered samples keep (sgtui mark keep ID), or "
        "train on the task's examples with --seeds-only",
    )


def render_pairs(task, pairs: Sequence[tuple[str, str]], fmt: ChatFormat) -> list[tuple[str, str]]:
    """(prompt, answer) texts: the meta prompt rendered with the model's template, and the
    stripped answer followed by the EOS text (SELF_GUIDE.md section 5.2)."""
    return [(fmt.render(meta_messages(task, x)), y.strip() + fmt.eos) for x, y in pairs]


def seed_texts(task, fmt: ChatFormat, repeats: int) -> list[tuple[str, str]]:
    """The task's own examples as training texts, `repeats` times each. An example's prompt
    leaves it out of the demonstrations: with itself among them, training would teach copying
    an answer from the context."""
    texts = []
    for i, e in enumerate(task.examples):
        others = replace(task, examples=task.examples[:i] + task.examples[i + 1 :])
        texts += render_pairs(others, [(e.input, e.output)], fmt) * repeats
    return texts


def write_data(path: Path, texts: Sequence[tuple[str, str]]) -> None:
    """The rendered set is saved with the run, so a resumed training sees the same data even
    if marks change meanwhile."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for prompt, answer in texts:
            f.write(json.dumps({"prompt": prompt, "answer": answer}, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_data(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [(d["prompt"], d["answer"]) for d in map(json.loads, f) if d]


def interrupted_training(rdir: Path) -> dict | None:
    """What the last training started in run folder `rdir` recorded before its first step
    (train_meta.json: base model, parameters; train_data.jsonl: the rendered set), or None when
    no training was started there. `--resume` continues that training with exactly these."""
    meta_path, data_path = rdir / "train_meta.json", rdir / "train_data.jsonl"
    if not (meta_path.is_file() and data_path.is_file()):
        return None
    # unreadable or incomplete: treated as never started, so a new training replaces it
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not {"base_model", "add_bos", "params"} <= set(meta):
            return None
        TrainParams.from_dict(meta["params"])
    except (OSError, ValueError, TypeError, SgtuiError):
        return None
    return meta


# -- the child process ------------------------------------------------------------------------
@dataclass
class TrainOutcome:
    adapter: str
    steps: int
    final_loss: float | None
    events: list[dict]


class TrainingJob:
    """One training in a child process. start() spawns it; events() yields its JSON progress
    lines; cancel() terminates it; wait() returns the outcome or raises SgtuiError.

    The child dies with this process: it gets --parent with our pid and a stdin pipe that only
    we hold (see sgtui.train_worker). On Linux its parent-death signal follows the thread that
    started it, so call start() and wait() from the same thread (the TUI does both in one worker
    thread); cancel() may be called from any thread."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.cancelled = False
        self.resuming = False  # start(resume=True) found an interrupted training to continue
        self.events_seen: list[dict] = []
        self._error: dict | None = None
        self._done: dict | None = None

    def child_command(
        self,
        db: str | Path,
        run_id: int,
        params: TrainParams,
        *,
        resume: bool = False,
        model: str | None = None,
        trust_remote_code: bool = False,
    ) -> list[str]:
        """The child's command line: the training worker. The one thing a stand-in replaces
        (tests script the child's JSON lines); start() does the rest the same for any child."""
        argv = [
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
            json.dumps(params.to_dict()),
        ]
        if resume:
            argv.append("--resume")
        if model:
            argv += ["--model", str(model)]
        if trust_remote_code:
            argv.append("--trust-remote-code")
        return argv

    def start(
        self,
        db: str | Path,
        run_id: int,
        params: TrainParams,
        *,
        resume: bool = False,
        model: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        rdir = run_dir(db, run_id)
        store = Store(db)
        try:
            store.run(run_id)
            # a resumed training uses the data saved when it started; a new one needs pairs
            self.resuming = resume and interrupted_training(rdir) is not None
            if not self.resuming:
                training_pairs(store, run_id, params.seeds_only)  # refuse early, cleanly
        finally:
            store.close()
        argv = self.child_command(
            db, run_id, params, resume=resume, model=model, trust_remote_code=trust_remote_code
        )
        rdir.mkdir(parents=True, exist_ok=True)
        self.log_path = rdir / "train.log"
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            # stdin: a pipe we never write to; the child exits when it reads end of file
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.PIPE, env=env
            )
        finally:
            log.close()

    def events(self) -> Iterator[dict]:
        assert self.proc is not None and self.proc.stdout is not None, "start() first"
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.events_seen.append(event)
            if event.get("event") == "error":
                self._error = event
            elif event.get("event") == "done":
                self._done = event
            yield event

    def cancel(self) -> None:
        self.cancelled = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, on_event: Callable[[dict], None] | None = None) -> TrainOutcome:
        assert self.proc is not None, "start() first"
        for event in self.events():
            if on_event:
                on_event(event)
        code = self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the child is gone; its lifeline pipe is no longer needed
        if self.cancelled:
            raise SgtuiError(
                "training cancelled; the last epoch checkpoint is kept",
                fix="continue it with --resume",
            )
        if self._error is not None:
            e = self._error
            raise SgtuiError(
                e.get("message", "training failed"), path=e.get("path"), fix=e.get("fix")
            )
        if code != 0 or self._done is None:
            tail = self._log_tail()
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise SgtuiError(
                f"the training process {how}" + (f": {tail}" if tail else ""),
                path=str(self.log_path),
                fix="read the log named above; resume with --resume",
            )
        losses = [e["loss"] for e in self.events_seen if e.get("event") == "progress"]
        return TrainOutcome(
            self._done["adapter"],
            int(self._done.get("steps", 0)),
            losses[-1] if losses else None,
            self.events_seen,
        )

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        with self.log_path.open(encoding="utf-8", errors="replace") as f:
            lines = deque((ln.rstrip() for ln in f if ln.strip()), maxlen=1)
        return lines[0][-300:] if lines else ""


def latest_checkpoint(db, run_id: int) -> Path | None:
    return latest(checkpoints_dir(db, run_id))


def format_progress(event: dict) -> str:
    """One human line for a progress event."""
    eta = int(event.get("eta_s") or 0)
    return (
        f"epoch {event['epoch']:.2f}  step {event['step']}/{event['total_steps']}  "
        f"loss {event['loss']:.4f}  {event['tokens_per_s']:.0f} tok/s  "
        f"ETA {eta // 60}:{eta % 60:02d}"
    )


def train(
    db,
    run_id: int,
    params: TrainParams,
    *,
    resume: bool = False,
    model: str | None = None,
    trust_remote_code: bool = False,
    on_event: Callable[[dict], None] | None = None,
    on_start: Callable[["TrainingJob"], None] | None = None,
) -> TrainOutcome:
    """Train run `run_id` in a child process and wait for it; the child's JSON events go to
    `on_event` (nothing is printed here). Ctrl-C (or SIGTERM made one) stops the child and
    propagates; the last epoch checkpoint stays. on_start(job) follows the child's start (the
    CLI uses it to say that --resume keeps the interrupted training's parameters)."""
    job = TrainingJob()
    job.start(db, run_id, params, resume=resume, model=model, trust_remote_code=trust_remote_code)
    if on_start:
        on_start(job)
    try:
        return job.wait(on_event=on_event)
    except KeyboardInterrupt:
        job.cancel()
        if job.proc is not None:
            job.proc.wait()
        raise
