"""The model picker: every model already on the machine (the bundled one, Ollama's, LM Studio's,
the Hugging Face cache's, the ones picked before) with what each says about itself, and a field
for any other path or name. Choosing one only records its name; the app resolves it to a file
(sgtui.models.resolve_model) and the model owner loads it for the next run."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

import backends

from .. import models
from ..errors import SgtuiError
from ..models import ModelInfo, Skipped
from . import bootstrap
from .widgets import KeyBar, Modal, short

# name, architecture, parameters, quantization, size on disk, chat template
COLUMNS = ((31, "model"), (8, "arch"), (6, "params"), (6, "quant"), (7, "size"), (4, "chat"))


def backend_choices() -> list[tuple[str, str]]:

    out = [("auto", "auto")]
    for b in backends.info():
        out.append((b.name if b.available else f"{b.name} (unavailable)", b.name))
    return out


def _line(cells: list[str]) -> str:
    return " ".join(short(c, w).ljust(w) for c, (w, _) in zip(cells, COLUMNS)).rstrip()


def header() -> str:
    return _line([title for _, title in COLUMNS])


def label(info: ModelInfo) -> str:
    """What the list shows for a model: a path by its file name, a name as it is typed."""
    if info.source == "bundled":
        return Path(info.name).stem.split(".")[0] + " (bundled)"
    if info.source == "path":
        return Path(info.name).name or info.name
    return info.name


def row(info: ModelInfo) -> str:
    if info.format == "?":  # a model picked before that no longer resolves
        return _line([label(info), "?", "", "", "", ""])
    chat = {True: "yes", False: "no", None: "?"}[info.chat_template]
    return _line(
        [
            label(info),
            info.architecture or "?",
            info.params_label,
            info.quantization or "?",
            info.size_label,
            chat,
        ]
    )


def known_model(name: str) -> ModelInfo:
    """A model picked before, described afresh; one that no longer resolves or reads is still
    listed, with why, so the person sees what happened to it."""
    try:
        return models.describe_model(name, "path")
    except SgtuiError as e:
        return ModelInfo(name, name, "path", e.message, "?")


class ModelsFound(Message):
    def __init__(self, found: list[ModelInfo], skipped: list[Skipped]) -> None:
        super().__init__()
        self.found = found
        self.skipped = skipped


class ModelPicker(Modal):
    """Dismisses with (name, backend): the name to type in --model (a path, `ollama:NAME:TAG`,
    `lmstudio:PUBLISHER/REPO`, `ORG/NAME`) and the backend; or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    #model-head { height: 1; padding: 0 2; color: $text-muted; text-style: bold; }
    #model-detail { height: 1; color: $text-muted; }
    #model-skipped { height: auto; color: $text-muted; display: none; }
    """

    def compose(self) -> ComposeResult:
        self.entries: list[ModelInfo] = []
        with Vertical(id="model-box", classes="dialog"):
            yield Static("[b]Model[/b]  [dim]enter: use the highlighted one[/dim]", markup=True)
            yield Static(header(), id="model-head", markup=False)
            yield OptionList(
                Option("looking for models on this machine…", disabled=True), id="model-list"
            )
            yield Static(id="model-detail", markup=False)
            yield Static(id="model-skipped", markup=False)
            yield Label("or a path (.gguf file, Hugging Face folder) or a name (enter to add):")
            yield Input(
                id="model-path",
                compact=True,
                placeholder="~/models/x.gguf · ollama:NAME:TAG · ORG/NAME",
            )
            with Horizontal(classes="form-row"):
                yield Label("backend ", classes="form-label")
                yield Select(
                    backend_choices(),
                    value="auto",
                    allow_blank=False,
                    id="model-backend",
                    compact=True,
                )
            yield Static(id="model-error")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#model-list", OptionList).focus()
        self.look_for_models(list(self.sg.known_models), self.sg.model_path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model-list")
    def look_for_models(self, known: list[str], current: str | None) -> None:
        """Reading the stores and the GGUF headers takes a moment: off the UI thread."""
        scan = models.find_models()
        listed = {m.name for m in scan.models} | {m.path for m in scan.models}
        extra = [known_model(k) for k in [current or "", *known] if k and k not in listed]
        unique = list({m.name: m for m in [*scan.models, *extra]}.values())
        self.post_message(ModelsFound(unique, scan.skipped))

    def on_models_found(self, message: ModelsFound) -> None:
        self.entries = message.found
        ol = self.query_one("#model-list", OptionList)
        ol.clear_options()
        ol.add_options([Option(row(m), id=f"m{i}") for i, m in enumerate(self.entries)])
        current = self.sg.model_path
        at = next((i for i, m in enumerate(self.entries) if current in (m.name, m.path)), 0)
        if self.entries:
            ol.highlighted = at
        else:
            ol.add_option(Option("no models found: type a path or a name below", disabled=True))
        if message.skipped:
            s = message.skipped
            more = f" (and {len(s) - 1} more)" if len(s) > 1 else ""
            note = self.query_one("#model-skipped", Static)
            note.update(short(f"skipped {s[0].name}: {s[0].reason}{more}", 74))
            note.display = True

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        i = event.option_index
        if 0 <= i < len(self.entries):
            self.query_one("#model-detail", Static).update(short(self.entries[i].where, 74))

    def _backend(self, guessed: str) -> str:
        chosen = str(self.query_one("#model-backend", Select).value)
        return guessed if chosen == "auto" else chosen

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if 0 <= event.option_index < len(self.entries):
            self._use(event.option_index)

    def _use(self, index: int) -> None:
        info = self.entries[index]
        guessed = info.backend if info.format != "?" else bootstrap.backend_for(info.path)
        self.dismiss((info.name, self._backend(guessed)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        try:
            if not text or Path(text).expanduser().exists():
                name, guessed = bootstrap.check_model_path(text)
            else:  # a name: resolved here only to check it, kept as typed
                _, guessed = bootstrap.check_model_path(models.resolve_model(text))
                name = text
        except SgtuiError as e:
            t = Text(e.render(), style="bold red")
            self.query_one("#model-error", Static).update(t)
            return
        self.dismiss((name, self._backend(guessed)))

    def action_cancel(self) -> None:
        self.dismiss(None)
