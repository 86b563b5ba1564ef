"""Bulk marks: keep, discard or clear every sample of one group (kept, or one filter reason)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from .widgets import KeyBar, Modal


def group_of(row: dict) -> str:
    """The group a sample is bulk-marked in: what the filters decided about it."""
    if row.get("status") == "filtered":
        return f"filtered: {row.get('filter') or '?'}"
    if row.get("stage") == "annotated":
        return "kept"
    return "not annotated yet"


class BulkMarks(Modal):
    """Dismisses with (group, mark) where mark is "keep", "discard" or None (clear)."""

    BINDINGS = [
        Binding("k", "choose('keep')", "Keep all"),
        Binding("d", "choose('discard')", "Discard all"),
        Binding("u", "choose('clear')", "Clear marks"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, groups: dict[str, int], current: str | None) -> None:
        super().__init__()
        self.groups = dict(sorted(groups.items(), key=lambda kv: (kv[0] != "kept", kv[0])))
        self.current_group = current

    def compose(self) -> ComposeResult:
        with Vertical(id="bulk-box", classes="dialog"):
            yield Static(
                "[b]Mark a whole group[/b]\nPick a group, then k keep all · d discard "
                "all · u clear marks",
                markup=True,
            )
            yield OptionList(
                *[Option(f"{g}  ({n})", id=g) for g, n in self.groups.items()], id="bulk-groups"
            )
        yield KeyBar()

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        if self.current_group in self.groups:
            ol.highlighted = list(self.groups).index(self.current_group)
        ol.focus()

    def action_choose(self, mark: str) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is None:
            return
        group = list(self.groups)[ol.highlighted]
        self.dismiss((group, None if mark == "clear" else mark))

    def action_cancel(self) -> None:
        self.dismiss(None)
