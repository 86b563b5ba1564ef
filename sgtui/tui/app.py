"""The app: screens, global keys, the shared selection (task, run, model) and the model owner.

Each screen owns its own handlers; the app only routes worker messages to them (through
signals) and keeps what several screens share.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.signal import Signal

from ..paths import default_db
from ..store import Store
from ..training import TrainingJob
from . import bootstrap
from .help import HelpScreen
from .messages import GenerationNotice, GenerationProgress, GenerationState, SamplesArrived
from .model_owner import GenerateRequest, GeneratorFactory, ModelOwner
from .model_picker import ModelPicker
from .shell import PAGE_CLASSES, MainScreen
from .widgets import Page

TERMINAL = ("done", "stopped", "failed")


class SgtuiApp(App):
    CSS_PATH = "sgtui.tcss"
    TITLE = "sgtui"
    ENABLE_COMMAND_PALETTE = False  # the footer's room at 80 columns goes to the screen's keys
    PAGES = PAGE_CLASSES
    BINDINGS = [
        Binding("1", "goto('tasks')", "Tasks", show=False),
        Binding("2", "goto('generate')", "Generate", show=False),
        Binding("3", "goto('review')", "Review", show=False),
        Binding("4", "goto('train')", "Train", show=False),
        Binding("5", "goto('evaluate')", "Evaluate", show=False),
        Binding("6", "goto('runs')", "Runs", show=False),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="this help"),
        Binding(
            "m",
            "pick_model",
            "Model",
            tooltip="pick the model: the bundled one, a GGUF file or a Hugging Face folder",
        ),
        Binding(
            "q",
            "quit",
            "Quit",
            tooltip="quit; a running generation stops cleanly and can be resumed",
        ),
    ]

    def __init__(
        self,
        db: str | Path | None = None,
        model: str | None = None,
        backend: str | None = None,
        generator_factory: GeneratorFactory | None = None,
        cursor_blink: bool = True,
        train_job_factory: Callable[[], TrainingJob] | None = None,
    ) -> None:
        super().__init__()
        self.db_path = Path(db) if db else default_db()
        self.store = Store(self.db_path)  # the UI thread's own connection
        bootstrap.seed_example_tasks(self.store)
        self.model_path = model or bootstrap.default_model()
        self.backend = backend or (
            bootstrap.backend_for(self.model_path) if self.model_path else ""
        )
        self.known_models = bootstrap.saved_models()
        if model and model not in self.known_models:
            self.known_models.append(model)
        self.cursor_blink = cursor_blink
        self.train_job_factory: Callable[[], TrainingJob] = train_job_factory or TrainingJob
        tasks = self.store.tasks()
        self.current_task_id: int | None = tasks[0]["id"] if tasks else None
        runs = self.store.runs()
        self.current_run_id: int | None = runs[0]["id"] if runs else None
        self.owner = ModelOwner(self.db_path, self.post_message, generator_factory)
        self._owner_started = False
        self.gen_run_id: int | None = None
        self.gen_state = "idle"
        self.gen_detail = ""
        self.gen_stages: dict = {}
        self.selection = Signal[str](self, "selection")  # "task" | "run" | "model"
        self.generation = Signal[object](self, "generation")  # the worker messages
        self.train_job: TrainingJob | None = None  # the training child process (Train page)

    # -- navigation ---------------------------------------------------------------------------
    def get_default_screen(self) -> MainScreen:
        self.main = MainScreen()
        return self.main

    @property
    def page_name(self) -> str:
        return self.main.current

    def page(self, name: str) -> Page:
        return self.main.page(name)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # page keys only on the main screen: in a dialog or the task form a digit must not
        # throw away what is being edited
        if action == "goto":
            return self.screen is self.main
        return True

    def action_goto(self, name: str) -> None:
        self.main.show(name)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.page_name))

    def action_pick_model(self) -> None:
        def chosen(result: tuple[str, str] | None) -> None:
            if result:
                self.set_model(*result)

        self.push_screen(ModelPicker(), chosen)

    async def action_quit(self) -> None:
        self.shutdown()
        self.exit()

    def on_unmount(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self.owner.shutdown()
        job, self.train_job = self.train_job, None
        if job is not None:
            job.cancel()

    # -- shared selection ---------------------------------------------------------------------
    def select_task(self, task_id: int | None) -> None:
        self.current_task_id = task_id
        self.selection.publish("task")

    def select_run(self, run_id: int | None) -> None:
        self.current_run_id = run_id
        self.selection.publish("run")

    def set_model(self, path: str, backend: str) -> None:
        self.model_path, self.backend = path, backend
        if path != bootstrap.default_model() and path not in self.known_models:
            self.known_models.append(path)
            bootstrap.save_models(self.known_models)
        self.selection.publish("model")
        self.notify(f"model: {Path(path).name} ({backend})")

    # -- generation: the model owner ----------------------------------------------------------
    @property
    def generating(self) -> bool:
        return self.gen_state not in ("idle", *TERMINAL)

    def start_generation(self, request: GenerateRequest) -> bool:
        """Queue a run for the model owner. Returns False if one is already going."""
        if self.generating:
            self.notify("a run is already generating: pause or stop it first", severity="warning")
            return False
        if not self._owner_started:
            self._owner_started = True
            self.model_owner()
        self.gen_run_id = request.run_id
        self.gen_state, self.gen_detail, self.gen_stages = "starting", "", {}
        self.owner.submit(request)
        self.generation.publish(GenerationState(request.run_id, "starting"))
        return True

    def pause_generation(self) -> None:
        if self.gen_state in ("running", "loading", "starting"):
            self.owner.pause()
            self.gen_state = "pausing"
            self.generation.publish(GenerationState(self.gen_run_id, "pausing"))

    def resume_generation(self) -> None:
        if self.gen_state in ("paused", "pausing"):
            self.owner.resume()

    def stop_generation(self) -> None:
        if self.generating:
            self.owner.stop_run()
            self.gen_state = "stopping"
            self.generation.publish(GenerationState(self.gen_run_id, "stopping"))

    def release_model(self) -> threading.Event | None:
        """Ask the model owner to close its model before a training (None: it never loaded
        one). Training then has the memory, the GPU's above all."""
        return self.owner.release() if self._owner_started else None

    def reload_model(self) -> None:
        if self._owner_started:
            self.owner.reload()

    @work(thread=True, exclusive=True, exit_on_error=False, group="model", name="model-owner")
    def model_owner(self) -> None:
        self.owner.serve()

    def on_samples_arrived(self, message: SamplesArrived) -> None:
        self.generation.publish(message)

    def on_generation_progress(self, message: GenerationProgress) -> None:
        self.gen_stages = message.stages
        self.generation.publish(message)

    def on_generation_notice(self, message: GenerationNotice) -> None:
        self.notify(
            message.text, severity="warning" if message.level == "warning" else "information"
        )
        self.generation.publish(message)

    def on_generation_state(self, message: GenerationState) -> None:
        if message.run_id is not None:
            self.gen_run_id = message.run_id
        if message.state == "running" and self.gen_state == "stopping":
            return  # the owner has not seen the stop yet
        self.gen_state, self.gen_detail = message.state, message.detail
        if message.state == "created":
            self.select_run(message.run_id)
        elif message.state == "failed":
            self.notify(
                message.detail or "generation failed",
                title="generation failed",
                severity="error",
                timeout=10,
            )
        elif message.state == "done":
            self.notify(f"run {message.run_id} finished")
        self.generation.publish(message)


def run_app(db: str | None = None, model: str | None = None) -> int:
    SgtuiApp(db=db, model=model).run()
    return 0
