"""Small shared pieces: the navigation bar, the base screen, cell formatting."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static, TextArea

if TYPE_CHECKING:
    from .app import SgtuiApp

PAGES = [
    ("tasks", "Tasks"),
    ("generate", "Generate"),
    ("review", "Review"),
    ("train", "Train"),
    ("evaluate", "Evaluate"),
    ("runs", "Runs"),
]


class NavBar(Static):
    """One line: the screens with their number keys, clickable."""

    def __init__(self, current: str) -> None:
        super().__init__(self.markup_for(current), classes="navbar", markup=True)

    @staticmethod
    def markup_for(current: str) -> str:
        parts = []
        for i, (name, title) in enumerate(PAGES, 1):
            style = "reverse bold" if name == current else "bold"
            parts.append(f"[@click=app.goto('{name}')][{style}] {i} {title} [/][/]")
        parts.append("[@click=app.help][dim] ? help[/][/]")
        return " ".join(parts)

    def set_current(self, current: str) -> None:
        self.update(self.markup_for(current))


class KeyBar(Static):
    """The footer of key bindings: what the focused widget, its page, the screen and the app
    bind, as one line of text. (Textual's Footer rebuilds a widget per key on every focus
    change, which made switching pages take several times longer on a small machine.) A click
    on a key presses it."""

    DEFAULT_CSS = "KeyBar { height: 1; background: $panel; }"

    def on_mount(self) -> None:
        self._markup = ""
        self._pending = False
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._show_keys()

    def _bindings_changed(self, screen: object) -> None:
        # one focus change fires this several times; redraw once, after they settle
        if not self._pending:
            self._pending = True
            self.call_after_refresh(self._show_keys)

    def _show_keys(self) -> None:
        self._pending = False
        if not self.is_attached:  # a dialog closed before the redraw
            return
        seen: set[str] = set()
        parts = []
        for _node, binding, enabled, _tip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            key = self.app.get_key_display(binding)
            if enabled:
                parts.append(
                    f"[@click=press({binding.key!r})][bold $accent] {key}[/] "
                    f"{binding.description}[/]"
                )
            else:
                parts.append(f"[dim] {key} {binding.description}[/]")
        markup = "".join(parts)
        if markup != self._markup:
            self._markup = markup
            self.update(Content.from_markup(markup))

    def action_press(self, key: str) -> None:
        self.app.simulate_key(key)


class OnOff(Static, can_focus=True):
    """A yes/no field that reads the same in colour or not: [x] on / [ ] off."""

    BINDINGS = [Binding("space,enter", "toggle_value", "Toggle", show=False)]
    DEFAULT_CSS = "OnOff { width: 12; height: 1; } OnOff:focus { background: $accent 40%; }"

    def __init__(self, value: bool, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self._value = value

    @property
    def value(self) -> bool:
        return self._value

    @value.setter
    def value(self, value: bool) -> None:
        self._value = bool(value)
        self.update("[x] on" if self._value else "[ ] off", layout=False)

    def on_mount(self) -> None:
        self.value = self._value

    def action_toggle_value(self) -> None:
        self.value = not self._value

    def on_click(self) -> None:
        self.action_toggle_value()


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


class Page(_Common, Vertical):
    """One of the six screens. All of them live in the main screen's content switcher, so
    going from one to another only changes which is displayed (fast, and a hidden one keeps
    taking live updates). Its bindings apply while the focus is inside it."""

    PAGE = ""
    MAIN = "DataTable"  # what gets the focus when the page is shown

    def compose(self) -> ComposeResult:
        yield from self.compose_page()

    def compose_page(self) -> ComposeResult:
        yield from ()

    def on_page_shown(self) -> None:
        """Called each time the page is brought to the front."""

    def focus_main(self) -> None:
        found = self.query(self.MAIN)
        if found:
            found.first().focus()


class Modal(_Common, ModalScreen):
    pass


# -- cell formatting ----------------------------------------------------------------------------
def short(text: str | None, width: int) -> str:
    s = " ".join((text or "").split())
    return s if len(s) <= width else s[: max(width - 1, 0)] + "…"


def status_cell(row: dict) -> tuple[str, str]:
    """kept / filtered: <filter> / input ok (waiting for its answer), with its colour."""
    if row.get("status") == "filtered":
        return f"✗ {row.get('filter') or 'filtered'}", "red"
    if row.get("stage") == "annotated":
        return "✓ kept", "green"
    return "… input ok", "yellow"


def stage_cell(row: dict) -> tuple[str, str]:
    return ("answer", "cyan") if row.get("stage") == "annotated" else ("input", "magenta")


def mark_cell(mark: str | None) -> tuple[str, str]:
    if mark == "keep":
        return "keep", "bold green"
    if mark == "discard":
        return "drop", "bold red"
    return "·", "dim"


def status_text(row: dict) -> Text:
    return Text(*status_cell(row))


def mark_text(mark: str | None) -> Text:
    return Text(*mark_cell(mark))


def bar_text(label: str, done: int, total: int | None, width: int = 36) -> Text:
    """A one-line progress bar as text: cheap to redraw, no timers, same look everywhere."""
    t = Text(f"{label:<9}", style="bold")
    if not total:
        t.append("━" * width, style="dim")
        t.append("   –  ")
    else:
        frac = max(0.0, min(done / total, 1.0))
        full = int(frac * width)
        t.append("━" * full, style="green" if frac >= 1 else "cyan")
        if full < width:
            t.append("╺" + "━" * (width - full - 1), style="grey37")
        t.append(f" {frac:4.0%} ")
    t.append(f" {done}/{total if total else '?'}")
    return t


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
