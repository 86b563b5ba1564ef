"""Small shared pieces: the navigation bar, the base screen, cell formatting."""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Static, TextArea

if TYPE_CHECKING:
    from .app import SgtuiApp

PAGES = [("tasks", "Tasks"), ("generate", "Generate"), ("review", "Review"), ("train", "Train"),
         ("evaluate", "Evaluate"), ("runs", "Runs")]


class NavBar(Static):
    """One line: the screens with their number keys, clickable."""

    def __init__(self, current: str) -> None:
        parts = []
        for i, (name, title) in enumerate(PAGES, 1):
            style = "reverse bold" if name == current else "bold"
            parts.append(f"[@click=app.goto('{name}')][{style}] {i} {title} [/][/]")
        parts.append("[@click=app.help][dim] ? help[/][/]")
        super().__init__(" ".join(parts), classes="navbar", markup=True)


class _Common:
    """What every screen and modal shares: typed access to the app, and no cursor blink when
    the app asks for none (snapshot tests)."""

    @property
    def sg(self) -> "SgtuiApp":
        return cast("SgtuiApp", self.app)  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        if not self.sg.cursor_blink:
            for w in self.query(Input):  # type: ignore[attr-defined]
                w.cursor_blink = False
            for t in self.query(TextArea):  # type: ignore[attr-defined]
                t.cursor_blink = False


class Page(_Common, Screen):
    """A top-level screen with the navigation bar above and the footer of bindings below."""

    PAGE = ""

    def compose(self) -> ComposeResult:
        yield NavBar(self.PAGE)
        yield from self.compose_page()
        yield Footer()

    def compose_page(self) -> ComposeResult:
        yield from ()


class Modal(_Common, ModalScreen):
    pass


# -- cell formatting ----------------------------------------------------------------------------
def short(text: str | None, width: int) -> str:
    s = " ".join((text or "").split())
    return s if len(s) <= width else s[: max(width - 1, 0)] + "…"


def status_text(row: dict) -> Text:
    """kept / filtered: <filter> / pending, in colour."""
    if row.get("status") == "filtered":
        return Text(f"✗ {row.get('filter') or 'filtered'}", style="red")
    if row.get("stage") == "annotated":
        return Text("✓ kept", style="green")
    return Text("… input ok", style="yellow")


def stage_text(row: dict) -> Text:
    if row.get("stage") == "annotated":
        return Text("answer", style="cyan")
    return Text("input", style="magenta")


def mark_text(mark: str | None) -> Text:
    if mark == "keep":
        return Text("keep", style="bold green")
    if mark == "discard":
        return Text("drop", style="bold red")
    return Text("·", style="dim")


def answer_of(row: dict) -> str:
    return row.get("label") or row.get("output") or ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(max(seconds, 0))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
