"""Plain event objects the pipeline emits; the CLI prints them, the TUI posts them as messages."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SampleEvent:
    """A sample was stored or updated (the row as in the database)."""

    sample: dict


@dataclass
class ProgressEvent:
    stage: str          # "inputs" | "annotate" | "balance" | "done"
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
