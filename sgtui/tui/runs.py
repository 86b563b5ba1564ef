"""The Runs screen: every run with its parameters and results; open, resume, train, evaluate."""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from ..config import RunParams
from ..store import Store, task_fields
from .messages import GenerationState, Loaded
from .model_owner import GenerateRequest
from .params import defaults
from .widgets import Page, short

STATUS_STYLE = {
    "done": "green",
    "running": "bold yellow",
    "stopped": "yellow",
    "failed": "red",
    "created": "dim",
}


class RunsPage(Page):
    PAGE = "runs"
    MAIN = "#runs-table"
    BINDINGS = [
        Binding("enter", "open", "Open (review)", show=False, tooltip="open the run in Review"),
        Binding("o", "open", "Open", tooltip="open the run in Review"),
        Binding("r", "resume", "Resume", tooltip="resume a stopped or crashed run in Generate"),
        Binding("t", "train", "Train", tooltip="open the run in Train"),
        Binding("e", "evaluate", "Evaluate", tooltip="open the run in Evaluate"),
    ]

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs: dict[int, dict] = {}

    def compose_page(self) -> ComposeResult:
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="run-detail-box"):
            yield Static(id="run-detail")

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        for key, label, width in (
            ("id", "run", 4),
            ("task", "task", 17),
            ("status", "status", 8),
            ("stage", "stage", 8),
            ("cand", "cand", 5),
            ("kept", "kept", 5),
            ("pairs", "pairs", 5),
            ("created", "created", 11),
        ):
            table.add_column(label, key=key, width=width)
        self.sg.generation.subscribe(self, self._on_generation)
        self.load()

    def on_page_shown(self) -> None:
        self.load()

    def _on_generation(self, message: object) -> None:
        if isinstance(message, GenerationState) and message.state in (
            "created",
            "done",
            "stopped",
            "failed",
        ):
            self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-load")
    def load(self) -> None:
        store = Store(self.sg.db_path)
        try:
            out = []
            for r in store.runs():
                r["counts"] = store.counts(r["id"])
                r["pairs"] = len(store.training_pairs(r["id"]))
                r["evals"] = store.evals(r["id"])
                out.append(r)
            self.post_message(Loaded("runs", out))
        finally:
            store.close()

    def on_loaded(self, message: Loaded) -> None:
        if message.what != "runs":
            return
        table = self.query_one("#runs-table", DataTable)
        keep = table.cursor_row
        was = self.selected()
        table.clear()
        self.runs = {r["id"]: r for r in message.data}  # type: ignore[union-attr]
        for r in self.runs.values():
            task = task_fields(r).get("name", "?")
            status = r["status"]
            if self.sg.gen_run_id == r["id"] and self.sg.generating:
                status = self.sg.gen_state
            c = r["counts"]
            table.add_row(
                str(r["id"]),
                short(task, 17),
                Text(status, style=STATUS_STYLE.get(status, "")),
                r["stage"] or "",
                str(c["candidates"]),
                str(c["kept"]),
                str(r["pairs"]),
                time.strftime("%m-%d %H:%M", time.localtime(r["created"] or 0)),
                key=str(r["id"]),
            )
        if table.row_count:
            # stay on the run the person was looking at; the first time, on the app's run
            target = was["id"] if was is not None else self.sg.current_run_id
            if target is not None and str(target) in table.rows:
                table.move_cursor(row=table.get_row_index(str(target)))
            else:
                table.move_cursor(row=min(keep, table.row_count - 1))
        self._render_detail()

    def selected(self) -> dict | None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.runs.get(int(key)) if key is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._render_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def _render_detail(self) -> None:
        r = self.selected()
        box = self.query_one("#run-detail", Static)
        if r is None:
            box.update(Text("No runs yet. Pick a task (1) and generate (2).", style="dim"))
            return
        t = Text()
        t.append(f"run {r['id']} ", style="bold")
        t.append(f"{task_fields(r).get('name', '?')} ", style="bold cyan")
        t.append(f"· {r['status']} · model {Path(r['model']).name} ({r['backend']})\n", style="dim")
        params = RunParams.from_dict(r["params"])
        base = defaults(task_fields(r).get("type", "generation"), params.mode)
        changed = [
            f"{k}={v}"
            for k, v in r["params"].items()
            if k in RunParams.__dataclass_fields__ and getattr(base, k) != v
        ]
        t.append("params: ", style="bold")
        t.append(f"{params.rounds}×{params.per_round}, n {params.n}, mode {params.mode}")
        if changed:
            t.append(f"  (changed: {', '.join(changed)})", style="yellow")
        c = r["counts"]
        t.append("\nresults: ", style="bold")
        t.append(
            f"{c['candidates']} candidates, {c['kept']} kept, {r['pairs']} training pairs, "
            f"marks keep {c['marked_keep']} / discard {c['marked_discard']}"
        )
        if c["filtered"]:
            t.append("\nfiltered: ", style="bold")
            t.append(
                ", ".join(
                    f"{k} {v}" for k, v in sorted(c["filtered"].items(), key=lambda kv: -kv[1])
                ),
                style="red",
            )
        for w in (r.get("summary") or {}).get("warnings", []):
            t.append(f"\nwarning: {w}", style="bold yellow")
        for e in r["evals"]:
            t.append(
                f"\neval {e['system']} {e['split'] or ''} {e['metric']}: {e['score']:.1f}",
                style="cyan",
            )
        if r.get("error"):
            t.append(f"\nerror: {r['error']}", style="red")
        box.update(t)

    def action_open(self) -> None:
        r = self.selected()
        if r is not None:
            self.sg.select_run(r["id"])
            self.sg.action_goto("review")

    def action_resume(self) -> None:
        r = self.selected()
        if r is None:
            return
        if r["status"] == "done":
            self.notify(f"run {r['id']} is complete; o opens it for review", severity="warning")
            return
        self.sg.select_run(r["id"])
        if self.sg.start_generation(GenerateRequest(r["id"])):
            self.sg.action_goto("generate")

    def action_train(self) -> None:
        r = self.selected()
        if r is not None:
            self.sg.select_run(r["id"])
            self.sg.action_goto("train")

    def action_evaluate(self) -> None:
        r = self.selected()
        if r is not None:
            self.sg.select_run(r["id"])
            self.sg.action_goto("evaluate")
