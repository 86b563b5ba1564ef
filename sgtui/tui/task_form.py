"""The task form: instruction, examples (add, edit, remove), type and labels.

Validation is sgtui.task.parse_task, the same function the CLI uses, so the form shows the
same message and fix a task file would get.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Input, Label, Select, Static, TextArea

from ..errors import SgtuiError
from ..task import TYPES, Example, Task, parse_task
from .widgets import KeyBar, Modal, _Common, short

SOURCE = "task form"


class ExampleEditor(Modal):
    """Edit one example: input and output."""

    BINDINGS = [Binding("ctrl+s", "save", "Save"), Binding("escape", "cancel", "Cancel")]

    def __init__(self, example: Example | None) -> None:
        super().__init__()
        self.example = example

    def compose(self) -> ComposeResult:
        ex = self.example
        with Vertical(id="example-box", classes="dialog"):
            yield Label("[b]Example[/b]  input", markup=True)
            yield TextArea(ex.input if ex else "", id="ex-input", soft_wrap=True)
            yield Label("output (for a classification task: one of the labels)")
            yield TextArea(ex.output if ex else "", id="ex-output", soft_wrap=True)
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="ex-save", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="ex-cancel", compact=True)
        yield KeyBar()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "ex-save" else self.action_cancel()

    def action_save(self) -> None:
        self.dismiss(
            Example(
                self.query_one("#ex-input", TextArea).text,
                self.query_one("#ex-output", TextArea).text,
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)


class TaskForm(_Common, Screen):
    """Create (task_id None) or edit a task. Dismisses with the saved task's id, or None."""

    BINDINGS = [
        Binding(
            "ctrl+s",
            "save",
            "Save",
            priority=True,
            tooltip="check the task (as the CLI does) and save it",
        ),
        Binding("escape", "cancel", "Cancel"),
        Binding(
            "a",
            "add_example",
            "Add example",
            tooltip="add an example (enter on an example edits it)",
        ),
        Binding("x", "remove_example", "Remove", tooltip="remove the highlighted example"),
    ]

    def __init__(self, task_id: int | None) -> None:
        super().__init__()
        self.task_id = task_id
        self.editing: Task | None = None
        self.examples: list[Example] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="task-form"):
            yield Static(
                "[b]New task[/b]" if self.task_id is None else "[b]Edit task[/b]",
                id="form-title",
                markup=True,
            )
            with Horizontal(classes="form-row"):
                yield Label("name", classes="form-label")
                yield Input(id="f-name", compact=True, placeholder="my-task")
                yield Label(" type ", classes="form-label-short")
                yield Select(
                    [(t, t) for t in TYPES],
                    id="f-type",
                    value="generation",
                    allow_blank=False,
                    compact=True,
                )
            yield Label("instruction")
            yield TextArea(id="f-instruction", soft_wrap=True)
            with Horizontal(classes="form-row"):
                yield Label("labels", classes="form-label")
                yield Input(
                    id="f-labels",
                    compact=True,
                    placeholder="comma-separated, for classification: positive, negative",
                )
            yield Label("examples  [dim](a add · enter edit · x remove)[/dim]", markup=True)
            yield DataTable(id="f-examples", cursor_type="row")
            yield Static(id="f-error")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="f-save", variant="primary", compact=True)
                yield Button("Add example (a)", id="f-add", compact=True)
                yield Button("Cancel (esc)", id="f-cancel", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#f-examples", DataTable)
        table.add_column("input", key="input", width=44)
        table.add_column("output", key="output", width=24)
        if self.task_id is not None:
            try:
                self.editing = self.sg.store.get_task(self.task_id)
            except SgtuiError as e:
                self._error(e)
        t = self.editing
        if t is not None:
            self.query_one("#f-name", Input).value = t.name
            self.query_one("#f-type", Select).value = t.type
            self.query_one("#f-instruction", TextArea).text = t.instruction
            self.query_one("#f-labels", Input).value = ", ".join(t.labels)
            self.examples = list(t.examples)
        self._fill_examples()
        self.query_one("#f-name", Input).focus()

    def _fill_examples(self, cursor: int | None = None) -> None:
        table = self.query_one("#f-examples", DataTable)
        table.clear()
        for i, ex in enumerate(self.examples):
            table.add_row(short(ex.input, 44), short(ex.output, 24), key=str(i))
        if cursor is not None and self.examples:
            table.move_cursor(row=min(cursor, len(self.examples) - 1))

    def _error(self, e: SgtuiError | None) -> None:
        box = self.query_one("#f-error", Static)
        if e is None:
            box.update("")
            return
        t = Text(e.message, style="bold red")
        if e.fix:
            t.append(f"\n  fix: {e.fix}", style="yellow")
        box.update(t)

    # -- examples -----------------------------------------------------------------------------
    def action_add_example(self) -> None:
        def added(ex: Example | None) -> None:
            if ex is not None:
                self.examples.append(ex)
                self._fill_examples(len(self.examples) - 1)

        self.app.push_screen(ExampleEditor(None), added)

    def _cursor(self) -> int | None:
        table = self.query_one("#f-examples", DataTable)
        return table.cursor_row if self.examples else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        i = int(event.row_key.value or 0)

        def edited(ex: Example | None) -> None:
            if ex is not None:
                self.examples[i] = ex
                self._fill_examples(i)

        self.app.push_screen(ExampleEditor(self.examples[i]), edited)

    def action_remove_example(self) -> None:
        i = self._cursor()
        if i is not None and 0 <= i < len(self.examples):
            del self.examples[i]
            self._fill_examples(i)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # "a" and "x" are letters: while a text field has focus they are typed, not actions
        if action in ("add_example", "remove_example"):
            return not isinstance(self.focused, (Input, TextArea))
        return True

    # -- save ---------------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        {
            "f-save": self.action_save,
            "f-add": self.action_add_example,
            "f-cancel": self.action_cancel,
        }[event.button.id or "f-cancel"]()

    def form_data(self) -> dict:
        ttype = self.query_one("#f-type", Select).value
        labels = [x.strip() for x in self.query_one("#f-labels", Input).value.split(",")]
        data: dict = {
            "name": self.query_one("#f-name", Input).value,
            "type": ttype,
            "instruction": self.query_one("#f-instruction", TextArea).text,
            "labels": [x for x in labels if x],
            "examples": [{"input": e.input, "output": e.output} for e in self.examples],
        }
        if self.editing is not None:
            data["extra_noise_terms"] = self.editing.extra_noise_terms
            if self.editing.type == ttype:
                data["metric"] = self.editing.metric
        return data

    def action_save(self) -> None:
        try:
            task = parse_task(self.form_data(), SOURCE)
        except SgtuiError as e:
            self._error(e)
            return
        self._error(None)
        task.source = task.name
        if self.task_id is None:
            tid = self.sg.store.add_task(task)
        else:
            self.sg.store.update_task(self.task_id, task)
            tid = self.task_id
        self.notify(f"saved task {task.name}")
        self.dismiss(tid)

    def action_cancel(self) -> None:
        self.dismiss(None)
