"""The Tasks screen: the list of tasks and a preview; new, edit, and generate from a task."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from ..errors import SgtuiError
from .task_form import TaskForm
from .widgets import Page, short

NARROW = 80  # columns: below this the task list sits above the preview


class TasksPage(Page):
    PAGE = "tasks"
    MAIN = "#tasks-table"
    BINDINGS = [
        Binding("n", "new", "New", tooltip="write a new task: instruction, examples, type, labels"),
        Binding("e", "edit", "Edit", tooltip="edit the highlighted task (enter does the same)"),
        Binding("g", "generate", "Generate", tooltip="go to Generate with the highlighted task"),
    ]

    def compose_page(self) -> ComposeResult:
        with Horizontal(id="tasks-body"):
            yield DataTable(id="tasks-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="task-preview"):
                yield Static(id="task-detail")

    def on_mount(self) -> None:
        table = self.query_one("#tasks-table", DataTable)
        table.add_column("task", key="name", width=19)
        table.add_column("type", key="type", width=8)
        table.add_column("ex", key="ex", width=3)
        self.sg.selection.subscribe(self, self._on_selection)
        self.refresh_tasks()

    def on_resize(self, event) -> None:
        # below 80 columns the list and the preview stack, so the preview keeps a usable width
        self.query_one("#tasks-body").set_class(event.size.width < NARROW, "narrow")

    def _on_selection(self, what: str) -> None:
        if what == "task":
            self.refresh_tasks()

    def refresh_tasks(self) -> None:
        table = self.query_one("#tasks-table", DataTable)
        table.clear()
        self.rows = {r["id"]: r for r in self.sg.store.tasks()}
        for tid, r in self.rows.items():
            n = len(json.loads(r["definition"]).get("examples", []))
            table.add_row(short(r["name"], 19), r["type"][:8], str(n), key=str(tid))
        if self.sg.current_task_id in self.rows:
            table.move_cursor(row=table.get_row_index(str(self.sg.current_task_id)))
        self._show(self.sg.current_task_id)

    def _selected(self) -> int | None:
        table = self.query_one("#tasks-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return int(key) if key is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        tid = int(event.row_key.value) if event.row_key.value is not None else None
        if tid is not None:
            self.sg.current_task_id = tid
        self._show(tid)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_edit()

    def _show(self, tid: int | None) -> None:
        detail = self.query_one("#task-detail", Static)
        if tid is None or tid not in getattr(self, "rows", {}):
            detail.update("No task yet. Press n to write one.")
            return
        try:
            task = self.sg.store.get_task(tid)
        except SgtuiError as e:
            detail.update(Text(e.message, style="red"))
            return
        t = Text()
        t.append(f"{task.name}", style="bold")
        t.append(f"  {task.type}\n\n", style="dim")
        t.append(task.instruction + "\n")
        if task.labels:
            t.append("\nlabels: ", style="bold")
            t.append(", ".join(task.labels) + "\n")
        t.append(f"\n{len(task.examples)} examples\n", style="bold")
        for ex in task.examples:
            t.append("› ", style="cyan")
            t.append(short(ex.input, 200) + "\n")
            t.append("  → ", style="dim")
            t.append(short(ex.output, 200) + "\n", style="green")
        t.append("\ng: generate a training set from this task", style="dim")
        detail.update(t)

    def action_new(self) -> None:
        self.app.push_screen(TaskForm(None), self._saved)

    def action_edit(self) -> None:
        tid = self._selected()
        if tid is None:
            self.action_new()
            return
        self.app.push_screen(TaskForm(tid), self._saved)

    def _saved(self, task_id: int | None) -> None:
        if task_id is not None:
            self.sg.select_task(task_id)

    def action_generate(self) -> None:
        tid = self._selected()
        if tid is None:
            self.notify("write a task first (n)", severity="warning")
            return
        self.sg.select_task(tid)
        self.sg.action_goto("generate")
