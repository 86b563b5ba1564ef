"""The Review screen: keep or discard samples one by one or by filter reason, search, and a
detail pane with the sample's input and answer in full, side by side, then the candidate
answers and their votes. Works while generation runs: new samples join the list as they
arrive. Every mark is written (and committed) at once."""

from __future__ import annotations

import threading
from collections import Counter, deque

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Static

from ..store import Store, in_training, task_fields
from .bulk import BulkMarks, group_of
from .messages import GenerationState, Loaded, MarksFailed, SamplesArrived
from .rowtable import Column, RowTable
from .widgets import Page, answer_of, mark_cell, mark_text, short, status_cell, status_text

VIEWS = ("all", "kept", "filtered", "unmarked", "marked")


class ReviewPage(Page):
    PAGE = "review"
    MAIN = "RowTable"
    BINDINGS = [
        Binding(
            "k", "mark('keep')", "Keep", tooltip="keep the sample for training (saved at once)"
        ),
        Binding("d", "mark('discard')", "Discard", tooltip="discard the sample (saved at once)"),
        Binding(
            "space", "toggle_mark", "Toggle", tooltip="flip whether the sample goes into training"
        ),
        Binding(
            "u",
            "mark('clear')",
            "Clear",
            show=False,
            tooltip="clear the mark: the filters decide again",
        ),
        Binding(
            "b",
            "bulk",
            "Bulk",
            tooltip="keep, discard or clear a whole group: kept, or one filter reason",
        ),
        Binding(
            "v", "view", "View", tooltip="cycle the view: all, kept, filtered, unmarked, marked"
        ),
        Binding("slash", "search", "Search", key_display="/", tooltip="search inputs and answers"),
        Binding(
            "escape",
            "leave_search",
            "Back to list",
            show=False,
            tooltip="from the search field back to the list",
        ),
    ]

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: int | None = None
        self.rows: dict[int, dict] = {}
        self.local_marks: dict[int, str | None] = {}
        self.view = "all"
        self.query_text = ""
        self._pending: deque[tuple[list[int], str | None]] = deque()
        self._lock = threading.Lock()
        self._writing = False

    def compose_page(self) -> ComposeResult:
        yield Static(id="rev-head")
        yield Input(id="rev-search", placeholder="/ search inputs and answers", compact=True)
        yield RowTable(
            [
                Column("mark", "mark", 4),
                Column("id", "id", 5),
                Column("status", "status", 15),
                # input and answer share the rest: a person judges an answer beside its input
                Column("input", "input", 20, flex=True),
                Column("answer", "answer", 14, flex=True),
            ],
            id="rev-table",
        )
        with VerticalScroll(id="rev-detail-box"):
            yield Static(id="rev-detail-head")
            with Horizontal(id="rev-pair"):
                yield Static(id="rev-input")
                yield Static(id="rev-answer")
            yield Static(id="rev-detail")

    def on_mount(self) -> None:
        self.sg.selection.subscribe(self, self._on_selection)
        self.sg.generation.subscribe(self, self._on_generation)
        self.show_run(self.sg.current_run_id)

    # -- loading ------------------------------------------------------------------------------
    def _on_selection(self, what: str) -> None:
        if what == "run" and self.sg.current_run_id != self.run_id:
            self.show_run(self.sg.current_run_id)

    def show_run(self, run_id: int | None) -> None:
        self.run_id = run_id
        self.rows = {}
        self.local_marks = {}
        self.query_one("#rev-table", RowTable).clear()
        self.task_name = ""
        if run_id is not None:
            self.load_run(run_id)
        self._render_head()
        self._render_detail()

    @work(thread=True, exclusive=True, exit_on_error=False, group="review-load")
    def load_run(self, run_id: int) -> None:
        store = Store(self.sg.db_path)
        try:
            self.post_message(
                Loaded("review-run", (store.run(run_id), store.samples(run_id)), run_id)
            )
        finally:
            store.close()

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "review-run" and message.key == self.run_id:
            run, rows = message.data  # type: ignore[misc]
            self.task_name = task_fields(run).get("name", "")
            self._merge(rows)

    def _on_generation(self, message: object) -> None:
        if isinstance(message, SamplesArrived) and message.run_id == self.run_id:
            self._merge(message.rows)
        elif (
            isinstance(message, GenerationState)
            and message.run_id == self.run_id
            and message.state in ("done", "stopped", "failed")
        ):
            self.load_run(message.run_id)

    # -- the table ----------------------------------------------------------------------------
    def _visible(self, row: dict) -> bool:
        v = self.view
        if v == "kept" and not (row.get("status") == "kept" and row.get("stage") == "annotated"):
            return False
        if v == "filtered" and row.get("status") != "filtered":
            return False
        if v == "unmarked" and row.get("mark"):
            return False
        if v == "marked" and not row.get("mark"):
            return False
        q = self.query_text.lower()
        if q and q not in (row.get("input") or "").lower() and q not in answer_of(row).lower():
            return False
        return True

    def _cells(self, row: dict) -> tuple:
        return (
            mark_cell(row.get("mark")),
            (str(row["id"]), "" if in_training(row) else "dim"),
            status_cell(row),
            (row.get("input") or "", ""),
            (answer_of(row), "bold"),
        )

    def _merge(self, rows: list[dict]) -> None:
        table = self.query_one("#rev-table", RowTable)
        for row in rows:
            old = self.rows.get(row["id"])
            if old is not None and (old.get("updated") or 0) > (row.get("updated") or 0):
                continue
            row = dict(row)
            if row["id"] in self.local_marks:  # marks made here win over an older read
                row["mark"] = self.local_marks[row["id"]]
            self.rows[row["id"]] = row
            self._place(table, row)
        self._render_head()
        self._render_detail()

    def _place(self, table: RowTable, row: dict) -> None:
        key = str(row["id"])
        if not self._visible(row):
            table.remove_row(key)
        elif key in table:
            table.update_row(key, self._cells(row))
        else:
            table.add_row(key, self._cells(row))

    def _rebuild(self) -> None:
        table = self.query_one("#rev-table", RowTable)
        table.clear()
        for row in sorted(self.rows.values(), key=lambda r: (r["round"], r["slot"])):
            if self._visible(row):
                table.add_row(str(row["id"]), self._cells(row))
        self._render_head()
        self._render_detail()

    def current(self) -> dict | None:
        key = self.query_one("#rev-table", RowTable).cursor_key
        return self.rows.get(int(key)) if key is not None else None

    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        self._render_detail()

    def _render_head(self) -> None:
        head = Text()
        if self.run_id is None:
            head.append("No run yet: generate one first (2 Generate).", style="bold")
        else:
            rows = self.rows.values()
            kept = sum(
                1 for r in rows if r.get("status") == "kept" and r.get("stage") == "annotated"
            )
            marks = Counter(r.get("mark") for r in rows)
            pairs = sum(1 for r in rows if in_training(r))
            head.append(f"run {self.run_id} ", style="bold")
            head.append(f"{short(self.task_name, 20)} ", style="bold cyan")
            head.append(f"{len(self.rows)} samples, {kept} kept · marks ")
            head.append(f"+{marks['keep']}", style="green")
            head.append(" ")
            head.append(f"-{marks['discard']}", style="red")
            head.append(f" · {pairs} to train · {self.view}", style="bold")
        self.query_one("#rev-head", Static).update(head, layout=False)

    def _render_detail(self) -> None:
        row = self.current()
        shown = (row["id"], row.get("updated"), row.get("mark")) if row else (None, self.run_id)
        if shown == getattr(self, "_detail_shown", None):
            return  # a batch of other samples arrived; this one did not change
        self._detail_shown = shown
        head = self.query_one("#rev-detail-head", Static)
        pair = self.query_one("#rev-pair", Horizontal)
        box = self.query_one("#rev-detail", Static)
        if row is None:
            head.update(Text("Nothing to show here." if self.run_id else "", style="dim"))
            pair.display = False
            box.update("")
            return
        t = Text()
        t.append(f"#{row['id']} ", style="bold")
        t.append_text(status_text(row))
        if row.get("reason"):
            t.append(f" ({row['reason']})", style="red")
        t.append("  mark: ")
        t.append_text(mark_text(row.get("mark")))
        t.append(
            "  in training" if in_training(row) else "  not in training",
            style="green" if in_training(row) else "dim",
        )
        if row.get("pseudo_label"):
            t.append(f"  asked for: {row['pseudo_label']}", style="dim")
        head.update(t)
        pair.display = True
        self.query_one("#rev-input", Static).update(
            Text.assemble(("input: ", "bold"), row.get("input") or "")
        )
        answer = (
            Text.assemble(("answer: ", "bold"), (answer_of(row), "green"))
            if row.get("output")
            else Text.assemble(
                ("answer: ", "bold"),
                ("none: filtered out" if row.get("status") == "filtered" else "none yet", "dim"),
            )
        )
        self.query_one("#rev-answer", Static).update(answer)
        t = Text()
        votes = row.get("votes") or {}
        if votes:
            t.append("votes: ", style="bold")
            t.append(", ".join(f"{short(k, 30)} ×{v}" for k, v in votes.items()) + "\n")
        for i, cand in enumerate(row.get("candidates") or [], 1):
            t.append(f"  {i}. ", style="dim")
            t.append(short(cand, 200) + "\n")
        t.rstrip()
        box.update(t)

    # -- marks --------------------------------------------------------------------------------
    def action_mark(self, mark: str) -> None:
        row = self.current()
        if row is None:
            return
        self.apply_marks([row["id"]], None if mark == "clear" else mark)
        table = self.query_one("#rev-table", RowTable)
        # step to the next sample, unless the mark moved this one out of the view already
        if str(row["id"]) in table and table.cursor < table.row_count - 1:
            table.move_cursor(table.cursor + 1)

    def action_toggle_mark(self) -> None:
        row = self.current()
        if row is None:
            return
        # flip whether the sample goes into training
        self.apply_marks([row["id"]], "discard" if in_training(row) else "keep")

    def apply_marks(self, ids: list[int], mark: str | None) -> None:
        """Show the marks at once and hand them to the writer thread, in order."""
        table = self.query_one("#rev-table", RowTable)
        for sid in ids:
            self.local_marks[sid] = mark
            if sid in self.rows:
                self.rows[sid]["mark"] = mark
                self._place(table, self.rows[sid])
        with self._lock:
            self._pending.append((ids, mark))
            start = not self._writing
            self._writing = True
        if start:
            self.write_marks()
        self._render_head()
        self._render_detail()

    @work(thread=True, exit_on_error=False, group="marks")
    def write_marks(self) -> None:
        # one writer at a time, so marks reach the database in the order they were made
        finished = False
        store = None
        try:
            store = Store(self.sg.db_path)
            while True:
                with self._lock:
                    if not self._pending:
                        self._writing = False
                        finished = True
                        return
                    ids, mark = self._pending.popleft()
                try:
                    if len(ids) == 1:
                        store.mark(ids[0], mark)
                    else:
                        store.mark_many(ids, mark)
                except Exception as e:
                    self.post_message(MarksFailed(ids, f"{type(e).__name__}: {e}"))
        except Exception as e:  # the database could not be opened at all
            with self._lock:
                lost = [sid for ids, _ in self._pending for sid in ids]
                self._pending.clear()
            self.post_message(MarksFailed(lost, f"{type(e).__name__}: {e}"))
        finally:
            if not finished:
                with self._lock:
                    self._writing = False
            if store is not None:
                store.close()

    def on_marks_failed(self, message: MarksFailed) -> None:
        self.notify(f"could not save {len(message.ids)} mark(s): {message.error}", severity="error")
        for sid in message.ids:
            self.local_marks.pop(sid, None)
        if self.run_id is not None:
            self.load_run(self.run_id)

    def action_bulk(self) -> None:
        if not self.rows:
            return
        groups = Counter(group_of(r) for r in self.rows.values())
        cur = self.current()

        def chosen(result: tuple[str, str | None] | None) -> None:
            if result is None:
                return
            group, mark = result
            ids = [r["id"] for r in self.rows.values() if group_of(r) == group]
            self.apply_marks(ids, mark)
            self.notify(f"{mark or 'cleared'}: {len(ids)} sample(s) in {group}")

        self.app.push_screen(BulkMarks(dict(groups), group_of(cur) if cur else None), chosen)

    # -- view and search ----------------------------------------------------------------------
    def action_view(self) -> None:
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        self._rebuild()

    def action_search(self) -> None:
        self.query_one("#rev-search", Input).focus()

    def action_leave_search(self) -> None:
        self.query_one("#rev-table", RowTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "rev-search":
            self.query_text = event.value.strip()
            self._rebuild()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_leave_search()
