"""The Generate screen: run parameters, and the samples of a run streaming in as the model
writes and annotates them, with per-stage progress, counts and tokens/s; pause, stop, resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from ..config import RunParams
from ..store import Store, task_fields
from .messages import GenerationProgress, GenerationState, Loaded, SamplesArrived
from .model_owner import GenerateRequest
from .params import defaults, run_params_form, summary
from .rowtable import Column, RowTable
from .widgets import Page, answer_of, bar_text, stage_cell, status_cell

STATE_STYLE = {
    "running": "bold green",
    "paused": "bold yellow",
    "pausing": "yellow",
    "stopping": "yellow",
    "stopped": "yellow",
    "failed": "bold red",
    "done": "bold cyan",
    "loading": "cyan",
    "starting": "cyan",
    "created": "cyan",
}


def stage_counts(rows: dict[int, dict], params: RunParams | None) -> dict:
    """Progress and counts, from the rows themselves (so a reopened run shows the same)."""
    c = {
        "candidates": len(rows),
        "inputs_total": 0,
        "inputs_ok": 0,
        "annotated": 0,
        "ann_total": 0,
        "kept": 0,
        "filtered": Counter(),
    }
    for r in rows.values():
        if r.get("status") == "filtered":
            c["filtered"][r.get("filter") or "?"] += 1
        if r.get("stage") == "annotated":
            c["annotated"] += 1
            c["inputs_ok"] += 1
            if r.get("status") == "kept":
                c["kept"] += 1
        elif r.get("status") == "kept":
            c["inputs_ok"] += 1
    c["ann_total"] = c["inputs_ok"]
    c["inputs_total"] = params.rounds * params.per_round if params else len(rows)
    return c


class GeneratePage(Page):
    PAGE = "generate"
    MAIN = "RowTable"
    BINDINGS = [
        Binding("s", "start", "Start", tooltip="start a new run of the task with these parameters"),
        Binding(
            "space",
            "pause",
            "Pause",
            tooltip="pause or continue generation (holds between two samples)",
        ),
        Binding(
            "x",
            "stop",
            "Stop",
            tooltip="stop the run; everything so far is saved and it can be resumed",
        ),
        Binding("r", "resume", "Resume", tooltip="resume the shown run where it stopped"),
        Binding(
            "p",
            "params",
            "Params",
            tooltip="run parameters (the paper's defaults for the task type)",
        ),
    ]

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: int | None = None
        self.run_row: dict | None = None
        self.rows: dict[int, dict] = {}
        self.params: RunParams | None = None
        self.params_task: int | None = None
        self.tps = 0.0
        self.follow = True

    def compose_page(self) -> ComposeResult:
        yield Static(id="gen-head")
        yield Static(id="gen-params")
        yield Static(id="gen-stages")
        yield Static(id="gen-stats")
        yield RowTable(
            [
                Column("rs", "r.s", 5),
                Column("stage", "stage", 6),
                Column("input", "input", 30, flex=True),
                Column("answer", "answer", 14),
                Column("status", "status", 15),
            ],
            id="gen-table",
        )

    def on_mount(self) -> None:
        self.sg.selection.subscribe(self, self._on_selection)
        self.sg.generation.subscribe(self, self._on_generation)
        self._task_changed()
        if self.sg.generating and self.sg.gen_run_id is not None:
            self.show_run(self.sg.gen_run_id)
        elif self.sg.current_run_id is not None:
            self.show_run(self.sg.current_run_id)
        self._render_status()

    # -- what is shown ------------------------------------------------------------------------
    def _on_selection(self, what: str) -> None:
        if what == "task":
            self._task_changed()
        elif what == "run" and self.sg.current_run_id != self.run_id:
            if not (self.sg.generating and self.sg.gen_run_id == self.run_id):
                self.show_run(self.sg.current_run_id)
        self._render_status()

    def _task_changed(self) -> None:
        tid = self.sg.current_task_id
        if tid is None or tid == self.params_task:
            return
        try:
            task = self.sg.store.get_task(tid)
        except Exception:  # a task row gone or unreadable: keep what is shown
            return
        self.params_task = tid
        self.params = defaults(task.type)
        self.task_type = task.type
        self.task_name = task.name

    def show_run(self, run_id: int | None) -> None:
        self.run_id = run_id
        self.rows = {}
        self.tps = 0.0
        self.follow = True
        self.query_one("#gen-table", RowTable).clear()
        self.run_row = None
        if run_id is not None:
            self.load_run(run_id)
        self._render_status()

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate-load")
    def load_run(self, run_id: int) -> None:
        store = Store(self.sg.db_path)
        try:
            self.post_message(Loaded("gen-run", (store.run(run_id), store.samples(run_id)), run_id))
        finally:
            store.close()

    def on_loaded(self, message: Loaded) -> None:
        if message.what != "gen-run" or message.key != self.run_id:
            return
        run, rows = message.data  # type: ignore[misc]
        self.run_row = run
        self._merge(rows)

    def _merge(self, rows: list[dict]) -> None:
        table = self.query_one("#gen-table", RowTable)
        at_end = self.follow and (table.row_count == 0 or table.cursor >= table.row_count - 1)
        for row in rows:
            old = self.rows.get(row["id"])
            if old is not None and (old.get("updated") or 0) > (row.get("updated") or 0):
                continue  # a live event newer than what a reload read
            self.rows[row["id"]] = row
            cells = (
                (f"{row['round']}.{row['slot']}", "dim"),
                stage_cell(row),
                (row.get("input") or "", ""),
                (answer_of(row), "bold"),
                status_cell(row),
            )
            key = str(row["id"])
            if key in table:
                table.update_row(key, cells)
            else:
                table.add_row(key, cells)
        if at_end and table.row_count:
            table.move_cursor(table.row_count - 1)
        self._render_status()

    def on_row_table_highlighted(self, event: RowTable.Highlighted) -> None:
        table = self.query_one("#gen-table", RowTable)
        self.follow = table.cursor >= table.row_count - 1

    # -- live events --------------------------------------------------------------------------
    def _on_generation(self, message: object) -> None:
        if isinstance(message, GenerationState):
            if message.state == "created" and message.run_id is not None:
                self.show_run(message.run_id)
            elif message.run_id == self.run_id and message.state in ("done", "stopped", "failed"):
                self.load_run(message.run_id)  # the balance stage changes rows without events
            self._render_status()
        elif isinstance(message, SamplesArrived) and message.run_id == self.run_id:
            self._merge(message.rows)
        elif isinstance(message, GenerationProgress) and message.run_id == self.run_id:
            last = list(message.stages.values())[-1] if message.stages else None
            if last is not None:
                self.tps = last.tokens_per_s
            self._render_status()

    def _run_params(self) -> RunParams | None:
        if self.run_row is not None:
            return RunParams.from_dict(self.run_row["params"])
        return self.params if self.run_id is None else None

    def _render_status(self) -> None:
        sg = self.sg
        head = Text()
        if self.run_row is not None:
            name = task_fields(self.run_row).get("name", "?")
            head.append(f"run {self.run_id} ", style="bold")
            head.append(f"{name} ", style="bold cyan")
            head.append(f"· model {Path(self.run_row['model']).name}", style="dim")
        else:
            head.append("new run: ", style="bold")
            head.append(f"{getattr(self, 'task_name', 'no task')} ", style="bold cyan")
            head.append(
                f"· model {Path(sg.model_path).name if sg.model_path else 'none (m)'}", style="dim"
            )
        # fixed-size lines: redraw them without a layout pass
        self.query_one("#gen-head", Static).update(head, layout=False)
        params = self._run_params()
        line = Text(summary(params) if params else "…", style="dim")
        if self.run_row is None:
            line.append("  p: edit", style="bold")
        self.query_one("#gen-params", Static).update(line, layout=False)

        c = stage_counts(self.rows, params)
        bars = bar_text("inputs", c["candidates"], c["inputs_total"])
        bars.append("\n")
        bars.append_text(bar_text("annotate", c["annotated"], c["ann_total"]))
        self.query_one("#gen-stages", Static).update(bars, layout=False)
        stats = Text()
        if sg.gen_run_id == self.run_id and sg.gen_state != "idle":
            state = sg.gen_state
        elif self.run_row is not None:
            state = self.run_row["status"]
        else:
            state = "ready: s to start"
        stats.append(state, style=STATE_STYLE.get(state, "bold"))
        stats.append(f" · inputs ok {c['inputs_ok']} · kept {c['kept']}", style="green")
        nf = sum(c["filtered"].values())
        stats.append(f" · filtered {nf}", style="red")
        if nf:
            top = ", ".join(f"{k} {v}" for k, v in c["filtered"].most_common(3))
            stats.append(f" ({top})", style="red")
        tps = self.tps or (self.run_row or {}).get("summary", {}).get("tokens_per_s")
        stats.append(f" · {tps:.0f} tok/s" if tps else " · – tok/s")
        if sg.gen_state == "failed" and sg.gen_run_id == self.run_id and sg.gen_detail:
            stats.append(f"\n{sg.gen_detail}", style="red")
        self.query_one("#gen-stats", Static).update(stats, layout=False)

    # -- actions ------------------------------------------------------------------------------
    def action_params(self) -> None:
        if self.params is None:
            self.notify("choose a task first (1 Tasks)", severity="warning")
            return

        def saved(p: RunParams | None) -> None:
            if p is not None:
                self.params = p
                if self.run_id is not None and not self.sg.generating:
                    self.show_run(None)  # the edited parameters are for a new run
                self._render_status()

        self.app.push_screen(run_params_form(self.params, self.task_type), saved)

    def action_start(self) -> None:
        sg = self.sg
        if sg.current_task_id is None or self.params is None:
            self.notify("choose a task first (1 Tasks)", severity="warning")
            return
        if not sg.model_path:
            self.notify("no model: press m to pick one", severity="warning")
            return
        sg.start_generation(
            GenerateRequest(None, sg.current_task_id, self.params, sg.model_path, sg.backend)
        )
        self._render_status()

    def action_pause(self) -> None:
        sg = self.sg
        if sg.gen_state in ("paused", "pausing"):
            sg.resume_generation()
        elif sg.generating:
            sg.pause_generation()
        else:
            self.notify("nothing is generating (s starts a run, r resumes one)")
        self._render_status()

    def action_stop(self) -> None:
        self.sg.stop_generation()
        self._render_status()

    def action_resume(self) -> None:
        sg = self.sg
        if sg.gen_state in ("paused", "pausing"):
            sg.resume_generation()
        elif self.run_id is None:
            self.notify("no run to resume: s starts a new one", severity="warning")
        elif self.run_row is not None and self.run_row["status"] == "done":
            self.notify(f"run {self.run_id} is complete", severity="warning")
        else:
            sg.start_generation(GenerateRequest(self.run_id))
        self._render_status()
