"""The Train screen: fine-tune on the kept samples in a child process, with a progress bar, a
live loss plot, ETA and tokens/s; cancel terminates the process (its memory goes with it)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Label, Log, ProgressBar, Sparkline, Static

from ..store import Store
from .messages import Loaded, TrainFinished, TrainLog, TrainProgress
from .widgets import Page, duration

WORKER_MODULE = "sgtui.train_worker"


def latest_session(rows: list[dict]) -> list[dict]:
    """train_progress keeps every training of a run; show the last one (steps start again)."""
    start = 0
    for i in range(1, len(rows)):
        if (rows[i].get("step") or 0) <= (rows[i - 1].get("step") or 0):
            start = i
    return rows[start:]


class TrainPage(Page):
    PAGE = "train"
    BINDINGS = [
        Binding("t", "train", "Train"),
        Binding("c", "cancel", "Cancel training"),
    ]

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: int | None = None
        self.training_run: int | None = None
        self.cancelled = False
        self.info: dict = {}
        self.rows: list[dict] = []

    def compose_page(self) -> ComposeResult:
        yield Static(id="train-head")
        with Horizontal(classes="stage-row"):
            yield Label("steps    ", classes="stage-label")
            yield ProgressBar(id="train-bar", show_eta=False)
        yield Static(id="train-stats")
        yield Static("loss", id="loss-title")
        yield Sparkline([], id="train-loss")
        yield Log(id="train-log", max_lines=500)

    def on_mount(self) -> None:
        self.sg.selection.subscribe(self, self._on_selection)
        self.show_run(self.sg.current_run_id)

    def _on_selection(self, what: str) -> None:
        if what == "run" and self.sg.current_run_id != self.run_id:
            self.show_run(self.sg.current_run_id)

    def show_run(self, run_id: int | None) -> None:
        self.run_id = run_id
        self.info, self.rows = {}, []
        if run_id is not None:
            self.load_info(run_id)
        self._refresh_view()

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-load")
    def load_info(self, run_id: int) -> None:
        store = Store(self.sg.db_path)
        try:
            run = store.run(run_id)
            info = {"task": json.loads(run["task"]).get("name", ""), "status": run["status"],
                    "pairs": len(store.training_pairs(run_id)),
                    "adapters": [a["path"] for a in store.artifacts(run_id)]}
            self.post_message(Loaded("train-info", (info, store.progress(run_id)), run_id))
        finally:
            store.close()

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "train-info" and message.key == self.run_id:
            self.info, rows = message.data  # type: ignore[misc]
            if self.training_run != self.run_id:
                self.rows = latest_session(rows)
            self._refresh_view()

    # -- display ------------------------------------------------------------------------------
    def _refresh_view(self) -> None:
        head = Text()
        if self.run_id is None:
            head.append("No run yet: generate and review one first (2, 3).", style="bold")
        else:
            head.append(f"run {self.run_id} ", style="bold")
            head.append(f"{self.info.get('task', '')} ", style="bold cyan")
            if "pairs" in self.info:
                head.append(f"· {self.info['pairs']} training pairs (kept + marked keep, "
                            "minus discarded)")
        if self.training_run is not None:
            head.append(f"\ntraining run {self.training_run} in a child process · c cancels",
                        style="yellow")
        self.query_one("#train-head", Static).update(head)
        bar = self.query_one("#train-bar", ProgressBar)
        stats = Text()
        if self.rows:
            last = self.rows[-1]
            total = last.get("total_steps") or None
            bar.update(total=total, progress=last.get("step") or 0)
            stats.append(f"step {last.get('step')}/{total or '?'}", style="bold")
            if last.get("epoch") is not None:
                stats.append(f" · epoch {float(last['epoch']):.2f}")
            if last.get("loss") is not None:
                stats.append(f" · loss {float(last['loss']):.4f}", style="cyan")
            if last.get("tokens_per_s") is not None:
                stats.append(f" · {float(last['tokens_per_s']):.0f} tok/s")
            stats.append(f" · ETA {duration(last.get('eta_s'))}")
        else:
            bar.update(total=None, progress=0)
            stats.append("not trained yet · t starts training" if self.training_run is None
                         else "starting…", style="dim")
        self.query_one("#train-stats", Static).update(stats)
        losses = [float(r["loss"]) for r in self.rows if r.get("loss") is not None]
        self.query_one("#train-loss", Sparkline).data = losses
        title = "loss"
        if losses:
            title += f"  first {losses[0]:.3f} → last {losses[-1]:.3f}  (min {min(losses):.3f})"
        self.query_one("#loss-title", Static).update(title)

    # -- training -----------------------------------------------------------------------------
    def command(self, run_id: int) -> list[str] | None:
        base = self.sg.train_command
        if base is None:
            if importlib.util.find_spec(WORKER_MODULE) is None:
                return None
            base = [sys.executable, "-m", WORKER_MODULE]
        return [*base, "--db", str(self.sg.db_path), "--run", str(run_id)]

    def action_train(self) -> None:
        if self.training_run is not None:
            self.notify("training is already running (c cancels it)", severity="warning")
            return
        if self.run_id is None:
            self.notify("no run to train on: generate one first (2)", severity="warning")
            return
        if self.info.get("pairs") == 0:
            self.notify("no training pairs: keep some samples first (3 Review)", severity="warning")
            return
        cmd = self.command(self.run_id)
        log = self.query_one("#train-log", Log)
        if cmd is None:
            msg = (f"training is not available: the module {WORKER_MODULE} is not installed in "
                   "this version of sgtui, so there is nothing to run")
            log.write_line(msg)
            self.notify(msg, severity="error", timeout=10)
            return
        self.training_run, self.cancelled, self.rows = self.run_id, False, []
        log.write_line(f"$ {' '.join(cmd)}")
        self.watch_training(self.run_id, cmd)
        self._refresh_view()

    def action_cancel(self) -> None:
        if self.training_run is None:
            self.notify("no training is running")
            return
        self.cancelled = True
        proc = self.sg.train_proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        self.query_one("#train-log", Log).write_line("cancelling: the training process was sent "
                                                     "SIGTERM")

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def watch_training(self, run_id: int, cmd: list[str]) -> None:
        store = Store(self.sg.db_path)
        try:
            before = store.db.execute("select coalesce(max(id), 0) from train_progress").fetchone()[0]
            try:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, bufsize=1)
            except OSError as e:
                self.post_message(TrainFinished(run_id, None, False, f"could not start: {e}"))
                return
            self.sg.train_proc = proc
            if self.cancelled:
                proc.terminate()
            from_json: list[dict] = []
            lines: list[str] = []
            last = 0.0

            def flush() -> None:
                rows = [r for r in store.progress(run_id) if r["id"] > before] or from_json
                self.post_message(TrainProgress(run_id, rows))
                if lines:
                    self.post_message(TrainLog(run_id, lines.copy()))
                    lines.clear()

            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                data = None
                if line.startswith("{"):
                    try:
                        data = json.loads(line)
                    except ValueError:
                        data = None
                if isinstance(data, dict) and "step" in data:
                    from_json.append(data)
                else:
                    lines.append(line)
                if time.monotonic() - last >= 0.1:
                    flush()
                    last = time.monotonic()
            rc = proc.wait()
            flush()
            self.post_message(TrainFinished(run_id, rc, self.cancelled))
        finally:
            store.close()

    def on_train_progress(self, message: TrainProgress) -> None:
        if message.run_id == self.run_id:
            self.rows = message.rows
            self._refresh_view()

    def on_train_log(self, message: TrainLog) -> None:
        log = self.query_one("#train-log", Log)
        for line in message.lines:
            log.write_line(line)

    def on_train_finished(self, message: TrainFinished) -> None:
        self.training_run = None
        self.sg.train_proc = None
        log = self.query_one("#train-log", Log)
        if message.cancelled:
            text, sev = "training cancelled", "warning"
        elif message.returncode == 0:
            text, sev = "training finished", "information"
        else:
            text = message.error or f"training failed (exit code {message.returncode}); see the log"
            sev = "error"
        log.write_line(text)
        self.notify(text, severity=sev)  # type: ignore[arg-type]
        if self.run_id is not None:
            self.load_info(self.run_id)
        self._refresh_view()
