"""The Train screen: fine-tune on the kept samples in a child process, with a progress bar, a
live loss plot, ETA and tokens/s; cancel terminates the process (its memory goes with it)."""

from __future__ import annotations

import json

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Log, Sparkline, Static

from .. import vram
from ..errors import SgtuiError
from ..generator import train_weights
from ..store import Store, task_fields
from ..task import Task
from ..training import TrainParams
from .messages import Loaded, TrainFinished, TrainLog, TrainProgress
from .params import train_params_form, train_summary
from .widgets import Page, bar_text, duration


def describe_event(event: dict) -> str:
    kind = event.get("event")
    if kind == "start":
        return (
            f"started: {event.get('backend', '?')} on {event.get('device', '?')} "
            f"({event.get('precision', '?')})"
        )
    if kind == "checkpoint":
        return f"checkpoint after epoch {event.get('epoch')}: {event.get('path', '')}"
    if kind == "notice":
        return str(event.get("text", ""))
    if kind == "done":
        return f"done: adapter {event.get('adapter', '')}"
    if kind == "error":
        fix = f" (fix: {event['fix']})" if event.get("fix") else ""
        return f"error: {event.get('message', '')}{fix}"
    return json.dumps(event)


def _plan_inputs(run: dict, task: dict) -> dict:
    """What the memory plan needs that takes time to read (the model's metadata, the card),
    read in the loading thread; plan_text does the arithmetic for the current parameters."""
    try:
        card, source = vram.card_memory()
        t = Task.from_dict(task, f"run {run['id']}")
        answer = int((run.get("params") or {}).get("ann_max_tokens") or 0) + 1
        return {
            "plan": (
                vram.model_dims(run["model"]),
                card,
                source,
                vram.prompt_tokens(t) + answer,
                answer,
            )
        }
    except SgtuiError as e:
        return {"plan_error": e.message}


def plan_text(info: dict, params: TrainParams) -> Text:
    """One line, or a few: the training settings that fit the card (sgtui/vram.py), or what
    4-bit QLoRA would need on a card when there is none."""
    text = Text("memory: ", style="bold")
    if "plan_error" in info:
        text.append(f"no plan ({info['plan_error']})", style="dim")
        return text
    if "plan" not in info:
        return text
    dims, card, source, example, answer = info["plan"]
    wanted = vram.TrainSettings.from_params(params, loss_tokens=answer)
    if card is None:
        need = wanted.predict(dims).total
        text.append(
            f"no GPU seen, training runs on the CPU; 4-bit QLoRA on a card: {vram.gib(need)}",
            style="dim",
        )
        return text
    plan = vram.fit_training(
        dims, card, wanted, min_len=min(params.max_len, max(vram.MIN_MAX_LEN, example))
    )
    first, *rest = plan.text().splitlines()
    text.append(f"{first} [{source}]", style="green" if plan.fits else "bold red")
    for line in rest:
        text.append("\n" + line.strip(), style="yellow")
    return text


def _describe(e: SgtuiError) -> str:
    return f"{e.message} (fix: {e.fix})" if e.fix else e.message


def latest_session(rows: list[dict]) -> list[dict]:
    """train_progress keeps every training of a run; show the last one (steps start again)."""
    start = 0
    for i in range(1, len(rows)):
        if (rows[i].get("step") or 0) <= (rows[i - 1].get("step") or 0):
            start = i
    return rows[start:]


class TrainPage(Page):
    PAGE = "train"
    MAIN = "#train-log"
    BINDINGS = [
        Binding(
            "t", "train", "Train", tooltip="fine-tune on the training pairs in a child process"
        ),
        Binding(
            "c",
            "cancel",
            "Cancel",
            tooltip="cancel training (terminates the process; epoch checkpoints stay)",
        ),
        Binding(
            "p",
            "params",
            "Params",
            tooltip="training parameters (epochs, learning rate, LoRA rank, ...)",
        ),
    ]

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: int | None = None
        self.training_run: int | None = None
        self.train_params = TrainParams()
        self.params_edited = False  # until the person edits them: the defaults for the task type
        self.info: dict = {}
        self.rows: list[dict] = []

    def compose_page(self) -> ComposeResult:
        yield Static(id="train-head")
        yield Static(id="train-params")
        yield Static(id="train-plan")
        yield Static(id="train-bar")
        yield Static(id="train-stats")
        yield Static("loss", id="loss-title")
        yield Sparkline([], id="train-loss")
        yield Log(id="train-log", max_lines=500)

    def on_mount(self) -> None:
        self.sg.selection.subscribe(self, self._on_selection)
        self.show_run(self.sg.current_run_id)

    def on_page_shown(self) -> None:
        if self.run_id is not None and self.training_run is None:
            self.load_info(self.run_id)  # marks or a finished generation change the pairs

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
            task = task_fields(run)
            info = {
                "task": task.get("name", ""),
                "type": task.get("type"),
                "status": run["status"],
                "pairs": len(store.training_pairs(run_id)),
                "warnings": run["summary"].get("warnings", []),  # annotation sanity
                "adapters": [a["path"] for a in store.artifacts(run_id, "adapter")],
            }
            info.update(_plan_inputs(run, task))
            self.post_message(Loaded("train-info", (info, store.progress(run_id)), run_id))
        finally:
            store.close()

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "train-info" and message.key == self.run_id:
            self.info, rows = message.data  # type: ignore[misc]
            if not self.params_edited:
                self.train_params = TrainParams.for_task(self.info.get("type"))
            if self.training_run != self.run_id and (rows or not self.rows):
                self.rows = latest_session(rows)  # the stored rows, unless a training is live
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
                head.append(f"· {self.info['pairs']} training pairs (kept or marked keep)")
            for w in self.info.get("warnings", []):
                head.append(f"\nwarning: {w}", style="bold yellow")
        if self.training_run is not None:
            head.append(
                f"\ntraining run {self.training_run} in a child process · c cancels", style="yellow"
            )
        elif self.info.get("adapters"):
            head.append(f"\nadapter: {self.info['adapters'][-1]}", style="green")
        self.query_one("#train-head", Static).update(head, layout=False)
        params = Text(train_summary(self.train_params), style="dim")
        params.append("  p: edit", style="bold")
        self.query_one("#train-params", Static).update(params, layout=False)
        self.query_one("#train-plan", Static).update(plan_text(self.info, self.train_params))
        bar = self.query_one("#train-bar", Static)
        stats = Text()
        if self.rows:
            last = self.rows[-1]
            total = last.get("total_steps") or None
            bar.update(bar_text("steps", int(last.get("step") or 0), total), layout=False)
            stats.append(f"step {last.get('step')}/{total or '?'}", style="bold")
            if last.get("epoch") is not None:
                stats.append(f" · epoch {float(last['epoch']):.2f}")
            if last.get("loss") is not None:
                stats.append(f" · loss {float(last['loss']):.4f}", style="cyan")
            if last.get("tokens_per_s") is not None:
                stats.append(f" · {float(last['tokens_per_s']):.0f} tok/s")
            stats.append(f" · ETA {duration(last.get('eta_s'))}")
        else:
            bar.update(bar_text("steps", 0, None), layout=False)
            stats.append(
                "not trained yet · t starts training" if self.training_run is None else "starting…",
                style="dim",
            )
        self.query_one("#train-stats", Static).update(stats, layout=False)
        losses = [float(r["loss"]) for r in self.rows if r.get("loss") is not None]
        spark = self.query_one("#train-loss", Sparkline)
        spark.data = losses
        spark.display = bool(losses)
        # a few points spread over the whole width read as blocks; keep ~3 cells a point
        spark.styles.width = max(12, 3 * len(losses)) if len(losses) < 26 else "1fr"
        title = "loss"
        if losses:
            title += f"  first {losses[0]:.3f} → last {losses[-1]:.3f}  (min {min(losses):.3f})"
        self.query_one("#loss-title", Static).update(title, layout=False)

    # -- training -----------------------------------------------------------------------------
    def action_params(self) -> None:
        def saved(p: TrainParams | None) -> None:
            if p is not None:
                self.train_params, self.params_edited = p, True
                self._refresh_view()

        self.app.push_screen(train_params_form(self.train_params, self.info.get("type")), saved)

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
        if self.sg.generating:
            # the generation model is closed for training, and a paused run would hold it
            self.notify(
                "a run is generating: stop it, or let it finish, before training "
                "(the two would share the memory)",
                severity="warning",
            )
            return
        weights = train_weights(self.sg.store, self.run_id)
        if weights is None:
            self.notify(
                f"run {self.run_id} was generated through a server, and training needs the "
                f"served model's weights on this machine: sgtui train {self.run_id} --model "
                "LOCAL (a .gguf, a Hugging Face folder, ollama:NAME or ORG/NAME)",
                severity="warning",
                timeout=10,
            )
            return
        self.training_run, self.rows = self.run_id, []
        self.query_one("#train-log", Log).write_line(
            f"training run {self.run_id}: {train_summary(self.train_params)}"
        )
        self.run_training(self.run_id, self.train_params, weights)
        self._refresh_view()

    def action_cancel(self) -> None:
        job = self.sg.train_job
        if self.training_run is None or job is None:
            self.notify("no training is running")
            return
        job.cancel()  # terminates the child process; its memory goes with it
        self.query_one("#train-log", Log).write_line(
            "cancelling: the training process was sent SIGTERM"
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def run_training(self, run_id: int, params: TrainParams, model: str) -> None:
        job = self.sg.train_job_factory()
        rows: list[dict] = []

        def on_event(event: dict) -> None:
            kind = event.get("event")
            if kind == "progress":
                rows.append(event)
                self.post_message(TrainProgress(run_id, list(rows)))
            elif kind is not None:
                self.post_message(TrainLog(run_id, [describe_event(event)]))

        self.sg.train_job = job
        released = self.sg.release_model()
        if released is not None:
            # a generation in progress finishes first; the model is closed before training loads
            if not released.is_set():
                self.post_message(TrainLog(run_id, ["waiting for the generation model to close"]))
            released.wait()
            self.post_message(
                TrainLog(
                    run_id,
                    ["the generation model is closed while training runs, and loaded again after"],
                )
            )
        try:
            job.start(self.sg.db_path, run_id, params, model=model)
            if job.cancelled:  # cancel was pressed while the process was starting
                job.cancel()
            outcome = job.wait(on_event)
        except SgtuiError as e:
            self.post_message(TrainFinished(run_id, None, job.cancelled, _describe(e)))
        except Exception as e:  # a broken child or pipe: say so, never kill the UI
            self.post_message(
                TrainFinished(run_id, None, job.cancelled, f"{type(e).__name__}: {e}")
            )
        else:
            self.post_message(TrainFinished(run_id, 0, False, f"adapter saved: {outcome.adapter}"))
        finally:
            if released is not None:
                self.sg.reload_model()

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
        self.sg.train_job = None
        log = self.query_one("#train-log", Log)
        if message.cancelled:
            text, sev = "training cancelled; the last epoch checkpoint is kept", "warning"
        elif message.returncode == 0:
            text, sev = f"training finished: {message.error}", "information"
        else:
            text, sev = f"training failed: {message.error}", "error"
        log.write_line(text)
        self.notify(text, severity=sev)  # type: ignore[arg-type]
        if self.run_id is not None:
            self.load_info(self.run_id)
        self._refresh_view()
