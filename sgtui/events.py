"""Plain event objects the pipeline emits; the CLI prints them, the TUI posts them as messages."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SampleEvent:
    """A sample was stored or updated (the row as in the database)."""

    sample: dict


@dataclass
class ProgressEvent:
    stage: str  # "inputs" | "annotate" | "balance" | "done"
    done: int
    total: int
    kept: int = 0
    filtered: int = 0
    tokens_per_s: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass
class NoticeEvent:
    """Something the person should know (a warning about the data, a stage change)."""

    text: str
    level: str = "info"  # "info" | "warning"


# -- the loop (sgtui.loop.run_loop): one event per step it finishes -----------------------------
@dataclass
class SynthesisDone:
    """Generation and filtering finished; `summary` as Store.run(...)["summary"]."""

    run_id: int
    summary: dict


@dataclass
class TrainingEvent:
    """One JSON line from the training child: {"event": "start" | "progress" | "checkpoint" |
    "notice" | "resumed" | "done" | "error", ...} (sgtui/train_worker.py)."""

    data: dict


@dataclass
class Trained:
    run_id: int
    steps: int
    adapter: str


@dataclass
class Exported:
    """The fine-tune as a llama.cpp LoRA GGUF (GGUF base models)."""

    path: str


@dataclass
class Evaluating:
    system: str
    rows: int
    split: str


@dataclass
class EpochChosen:
    """Validation scores of the base model (epoch 0) and of each epoch's checkpoint; `epoch` 0
    means no epoch beat the base model."""

    split: str
    rows: int
    scores: dict
    epoch: int
    adapter: str | None
