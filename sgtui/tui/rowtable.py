"""A light table for rows that stream in: one line per row, drawn straight from segments.

Textual's DataTable renders every visible cell through Rich again after any change; with
samples arriving several times a second that alone kept a small machine's UI thread busy. This
table draws a line in microseconds, so adding or updating rows stays cheap however often they
come. It has a fixed header, a row cursor, keys, and mouse selection.

Flexible columns share the width left over by the fixed ones: the narrowest grows first, and
none grows past its longest cell, so a column of short labels leaves the room to the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = tuple[str, str]  # (text, Rich style string)


@dataclass
class Column:
    key: str
    label: str
    width: int  # the least width; flex columns (else the last) share what is left
    flex: bool = False


@lru_cache(maxsize=256)
def _style(spec: str) -> Style:
    return Style.parse(spec) if spec else Style()


class RowTable(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Select", show=False),
    ]
    COMPONENT_CLASSES = {"rowtable--header", "rowtable--cursor"}
    DEFAULT_CSS = """
    RowTable { height: 1fr; background: $surface; overflow-x: hidden; }
    RowTable > .rowtable--header { text-style: bold; background: $panel; }
    RowTable > .rowtable--cursor { background: $block-cursor-blurred-background; }
    RowTable:focus > .rowtable--cursor { background: $block-cursor-background; }
    """

    class Highlighted(Message):
        def __init__(self, table: "RowTable", key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> "RowTable":
            return self.table

    class Selected(Highlighted):
        pass

    def __init__(self, columns: list[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = columns
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self.cursor = 0
        flex = [i for i, c in enumerate(columns) if c.flex] or [len(columns) - 1]
        self._flex = flex
        # the longest cell seen per flex column since the last clear (it only grows, so an
        # update or a removal never costs a scan of every row)
        self._longest = {i: cell_len(columns[i].label) for i in flex}
        self._widths_cache: tuple[tuple, list[int]] | None = None

    # -- data ---------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor] if self._keys else None

    def key_at(self, index: int) -> str:
        return self._keys[index]

    def cells(self, key: str) -> tuple[Cell, ...]:
        return self._cells[key]

    def add_row(self, key: str, cells: tuple[Cell, ...]) -> None:
        self._index[key] = len(self._keys)
        self._keys.append(key)
        self._cells[key] = cells
        self._measure(cells)
        self._resized()
        if len(self._keys) == 1:
            self.post_message(self.Highlighted(self, key))

    def update_row(self, key: str, cells: tuple[Cell, ...]) -> None:
        if self._cells.get(key) != cells:
            self._cells[key] = cells
            self._measure(cells)
            self.refresh()

    def remove_row(self, key: str) -> None:
        i = self._index.pop(key, None)
        if i is None:
            return
        del self._keys[i]
        del self._cells[key]
        for k in self._keys[i:]:
            self._index[k] -= 1
        had_cursor = self.cursor == i
        self.cursor = max(0, min(self.cursor - (1 if self.cursor > i else 0), len(self._keys) - 1))
        self._resized()
        if had_cursor:
            self.post_message(self.Highlighted(self, self.cursor_key))

    def clear(self) -> None:
        self._keys, self._index, self._cells = [], {}, {}
        self._longest = {i: cell_len(self.columns[i].label) for i in self._flex}
        self.cursor = 0
        self.scroll_to(y=0, animate=False)
        self._resized()

    def _resized(self) -> None:
        self.virtual_size = Size(self.size.width, len(self._keys) + 1)
        self.refresh()

    # -- cursor -------------------------------------------------------------------------------
    def move_cursor(self, index: int) -> None:
        if not self._keys:
            return
        index = max(0, min(index, len(self._keys) - 1))
        changed = index != self.cursor
        self.cursor = index
        body = max(self.size.height - 1, 1)
        top = int(self.scroll_offset.y)
        if index < top:
            self.scroll_to(y=index, animate=False)
        elif index >= top + body:
            self.scroll_to(y=index - body + 1, animate=False)
        self.refresh()
        if changed:
            self.post_message(self.Highlighted(self, self._keys[index]))

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * max(self.size.height - 2, 1))

    def action_jump(self, index: int) -> None:
        self.move_cursor(index if index >= 0 else len(self._keys) - 1)

    def action_select(self) -> None:
        if self._keys:
            self.post_message(self.Selected(self, self.cursor_key))

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            row = int(self.scroll_offset.y) + event.y - 1
            if row < len(self._keys):
                self.move_cursor(row)
                if event.chain == 2:
                    self.action_select()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self._keys) + 1)

    # -- drawing ------------------------------------------------------------------------------
    def _measure(self, cells: tuple[Cell, ...]) -> None:
        for i in self._flex:
            if i < len(cells):
                n = cell_len(cells[i][0])
                if n > self._longest[i]:
                    self._longest[i] = n

    def _widths(self, total: int) -> list[int]:
        key = (total, tuple(self._longest.values()))
        if self._widths_cache is None or self._widths_cache[0] != key:
            self._widths_cache = (key, self._share(total))
        return self._widths_cache[1]

    def _share(self, total: int) -> list[int]:
        """Column widths for `total` cells: the flex columns share the spare width, the
        narrowest first, each up to its longest cell; what none of them can use goes to the
        first. Too narrow a table takes the shortfall from the widest flex column."""
        widths = [c.width for c in self.columns]
        spare = total - sum(widths) - len(widths)  # one space before each column
        want = self._longest
        while spare < 0:
            widest = max(self._flex, key=lambda i: widths[i])
            if widths[widest] <= 1:
                break
            widths[widest] -= 1
            spare += 1
        while spare > 0:
            growing = [i for i in self._flex if widths[i] < want[i]]
            if not growing:
                widths[self._flex[0]] += spare
                break
            widths[min(growing, key=lambda i: widths[i])] += 1
            spare -= 1
        return widths

    def _line(self, cells: list[Cell], widths: list[int], base: Style) -> list[Segment]:
        segments = []
        for (text, style), width in zip(cells, widths):
            text = " ".join(text.split()) if "\n" in text or "\t" in text else text
            if cell_len(text) > width:
                text = set_cell_size(text, width - 1) + "…"
            segments.append(Segment(" ", base))
            segments.append(Segment(set_cell_size(text, width), base + _style(style)))
        return segments

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        widths = self._widths(width)
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("rowtable--header")
            cells = [(c.label, "") for c in self.columns]
            return Strip(self._line(cells, widths, base + header)).adjust_cell_length(
                width, base + header
            )
        row = int(self.scroll_offset.y) + y - 1
        if row >= len(self._keys):
            return Strip.blank(width, base)
        key = self._keys[row]
        style = base
        if row == self.cursor:
            style = base + self.get_component_rich_style("rowtable--cursor")
        return Strip(self._line(list(self._cells[key]), widths, style)).adjust_cell_length(
            width, style
        )
