"""The model picker: the bundled model, and any GGUF file or Hugging Face folder the person
points to. Choosing one only records it; the model owner loads it for the next run."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from ..errors import SgtuiError
from . import bootstrap
from .widgets import KeyBar, Modal


def backend_choices() -> list[tuple[str, str]]:
    import backends

    out = [("auto", "auto")]
    for b in backends.info():
        out.append((b.name if b.available else f"{b.name} (unavailable)", b.name))
    return out


class ModelPicker(Modal):
    """Dismisses with (path, backend), or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        sg = self.sg
        self.entries: list[str] = []
        bundled = bootstrap.default_model()
        options = []
        if bundled:
            self.entries.append(bundled)
            options.append(
                Option(f"SmolLM2-135M-Instruct (bundled)  {Path(bundled).name}", id="m0")
            )
        for p in sg.known_models:
            if p != bundled:
                self.entries.append(p)
                options.append(Option(f"{Path(p).name}  [dim]{p}[/dim]", id=f"m{len(options)}"))
        with Vertical(id="model-box", classes="dialog"):
            yield Static("[b]Model[/b]  [dim]enter: use the highlighted one[/dim]", markup=True)
            yield OptionList(*options, id="model-list")
            yield Label("or a path to a .gguf file or a Hugging Face folder (enter to add):")
            yield Input(id="model-path", compact=True, placeholder="~/models/my-model.gguf")
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
        ol = self.query_one("#model-list", OptionList)
        if self.sg.model_path in self.entries:
            ol.highlighted = self.entries.index(self.sg.model_path)
        ol.focus()

    def _backend(self, path: str, guessed: str) -> str:
        chosen = str(self.query_one("#model-backend", Select).value)
        return guessed if chosen == "auto" else chosen

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._use(event.option_index)

    def _use(self, index: int) -> None:
        path = self.entries[index]
        self.dismiss((path, self._backend(path, bootstrap.backend_for(path))))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            path, guessed = bootstrap.check_model_path(event.value)
        except SgtuiError as e:
            t = Text(e.render(), style="bold red")
            self.query_one("#model-error", Static).update(t)
            return
        self.dismiss((path, self._backend(path, guessed)))

    def action_cancel(self) -> None:
        self.dismiss(None)
