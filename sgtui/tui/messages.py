"""Typed messages that workers post to the UI. Only message handlers touch widgets."""

from __future__ import annotations

from textual.message import Message

from ..events import ProgressEvent


class SamplesArrived(Message):
    """Samples stored or updated by a generation run (rows as in the database)."""

    def __init__(self, run_id: int, rows: list[dict]) -> None:
        super().__init__()
        self.run_id = run_id
        self.rows = rows


class GenerationProgress(Message):
    """The latest progress of every stage so far. A newer one supersedes an older one."""

    def __init__(self, run_id: int, stages: dict[str, ProgressEvent]) -> None:
        super().__init__()
        self.run_id = run_id
        self.stages = stages

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GenerationProgress) and message.run_id == self.run_id


class GenerationNotice(Message):
    def __init__(self, run_id: int, text: str, level: str = "info") -> None:
        super().__init__()
        self.run_id = run_id
        self.text = text
        self.level = level


class GenerationState(Message):
    """The model-owner thread changed state: loading, running, paused, stopped, done, failed."""

    def __init__(self, run_id: int | None, state: str, detail: str = "") -> None:
        super().__init__()
        self.run_id = run_id
        self.state = state
        self.detail = detail


class MarksFailed(Message):
    def __init__(self, ids: list[int], error: str) -> None:
        super().__init__()
        self.ids = ids
        self.error = error


class Loaded(Message):
    """A worker finished reading something from the database for a screen."""

    def __init__(self, what: str, data: object, key: object = None) -> None:
        super().__init__()
        self.what = what
        self.data = data
        self.key = key


class TrainProgress(Message):
    """Every training progress row so far (a snapshot, so a newer one loses nothing)."""

    def __init__(self, run_id: int, rows: list[dict]) -> None:
        super().__init__()
        self.run_id = run_id
        self.rows = rows

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TrainProgress) and message.run_id == self.run_id


class TrainLog(Message):
    def __init__(self, run_id: int, lines: list[str]) -> None:
        super().__init__()
        self.run_id = run_id
        self.lines = lines


class TrainFinished(Message):
    def __init__(
        self, run_id: int, returncode: int | None, cancelled: bool, error: str = ""
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.returncode = returncode
        self.cancelled = cancelled
        self.error = error
