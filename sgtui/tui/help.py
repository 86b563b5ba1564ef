"""The help screen (`?`): every key binding, from the bindings themselves, so the help, the
footer and docs/TUI.md never disagree."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown

from .bulk import BulkMarks
from .model_picker import ModelPicker
from .params import ParamsForm
from .task_form import TaskForm
from .widgets import KeyBar, Modal

INTRO = (
    "sgtui follows SELF-GUIDE: the model writes task inputs, answers each one several times "
    "and keeps the majority answer, filters drop the noisy ones, you keep or discard what is "
    "left, and the model is fine-tuned on what you kept. Screens: 1 Tasks → 2 Generate → "
    "3 Review → 4 Train → 5 Evaluate; 6 Runs lists every run. The mouse works too."
)

KEY_NAMES = {
    "question_mark": "?",
    "slash": "/",
    "space": "space",
    "escape": "esc",
    "enter": "enter",
    "ctrl+s": "ctrl+s",
    "ctrl+d": "ctrl+d",
}


def key_label(b: Binding) -> str:
    if b.key_display:
        return b.key_display
    return ", ".join(KEY_NAMES.get(k, k) for k in b.key.split(","))


def sections(app_cls) -> list[tuple[str, list[Binding]]]:
    """The keys of `app_cls` (the SgtuiApp), of its pages and of its dialogs."""
    out: list[tuple[str, list[Binding]]] = [
        (
            "Everywhere",
            [
                Binding("1-6", "", "go to Tasks, Generate, Review, Train, Evaluate, Runs"),
                *[b for b in app_cls.BINDINGS if isinstance(b, Binding) and b.show],
                Binding(
                    "↑ ↓ pgup pgdn", "", "move in a list; enter opens or edits the highlighted row"
                ),
                Binding("tab", "", "next field or list; the mouse works too (click, scroll)"),
            ],
        )
    ]
    for name, cls in app_cls.PAGES.items():
        out.append((name.capitalize(), list(cls.BINDINGS)))  # type: ignore[attr-defined]
    out += [
        ("Task form", list(TaskForm.BINDINGS)),
        ("Parameter forms (p on Generate and Train)", list(ParamsForm.BINDINGS)),
        ("Bulk marks (Review, b)", list(BulkMarks.BINDINGS)),
        ("Model picker (m)", list(ModelPicker.BINDINGS)),
    ]
    return out


def bindings_markdown(app_cls) -> str:
    lines = []
    for title, bindings in sections(app_cls):
        lines += [f"### {title}", "", "| key | action |", "|---|---|"]
        for b in bindings:
            lines.append(f"| `{key_label(b)}` | {b.tooltip or b.description} |")
        lines.append("")
    return "\n".join(lines)


class HelpScreen(Modal):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, page: str = "") -> None:
        super().__init__()
        self.page = page

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="dialog"):
            with VerticalScroll(id="help-scroll"):
                yield Markdown(f"## sgtui help\n\n{INTRO}\n\n{bindings_markdown(type(self.app))}")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
