"""The run-parameter form: every field of RunParams, starting from the defaults for the
task type (RunParams.defaults_for), each one editable."""

from __future__ import annotations

import dataclasses
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from ..config import DEFAULT_MODE, RunParams
from ..errors import SgtuiError
from ..training import TrainParams
from .widgets import KeyBar, Modal, OnOff


def label(f: dataclasses.Field) -> str:
    """A parameter's name in the forms and their messages: the label declared with its field
    (sgtui/config.py, sgtui/training.py), or its name in words."""
    return f.metadata["label"] or f.name.replace("_", " ")


def defaults(task_type: str, mode: str | None = None) -> RunParams:
    """The defaults for the task type in an input-generation mode (the default mode when none
    is given), as `sgtui generate` starts from."""
    return RunParams.defaults_for(task_type, mode or DEFAULT_MODE)


def summary(p: RunParams) -> str:
    filters = [
        name
        for name, on in (
            ("length", p.input_length_filter),
            ("out-length", p.output_length_filter),
            ("noise", p.noise_filter),
            ("small", p.small_filters),
            ("form", p.form_filter),
            ("answer", p.answer_filters),
        )
        if on
    ]
    return (
        f"{p.rounds}×{p.per_round} inputs · n {p.n} · T {p.gen_temperature}/{p.ann_temperature}"
        f" · max tok {p.gen_max_tokens}/{p.ann_max_tokens} · {p.mode} · "
        f"filters {'+'.join(filters) or 'none'}"
    )


def parse_fields(cls: type, values: dict[str, object]) -> dict[str, object]:
    """The form's texts as the dataclass's field types; ValueError names the field."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v = values[f.name]
        kind = type(f.default)
        if kind is bool or kind is str:
            out[f.name] = v
            continue
        try:
            out[f.name] = int(str(v)) if kind is int else float(str(v))
        except ValueError:
            raise ValueError(
                f"{label(f)}: {v!r} is not a {'whole number' if kind is int else 'number'}"
            ) from None
    return out


def parse_params(values: dict[str, object]) -> RunParams:
    """Turn the form's values into RunParams, checked by the validation the CLI uses: the
    same values are refused, with the same message (a ValueError here, shown in the form)."""
    params = RunParams.from_dict(parse_fields(RunParams, values))
    try:
        params.validate()
    except SgtuiError as e:
        raise ValueError(e.message) from None
    return params


def parse_train(values: dict[str, object]) -> TrainParams:
    """TrainParams validate themselves, in the CLI's words."""
    try:
        return TrainParams().override(**parse_fields(TrainParams, values))
    except SgtuiError as e:
        raise ValueError(e.message) from None


def train_summary(p: TrainParams) -> str:
    return (
        f"{p.epochs} epoch{'s' if p.epochs != 1 else ''} · lr {p.lr:g} · "
        f"LoRA r{p.rank}/α{p.alpha} · batch {p.batch_size} · len {p.max_len}"
        + (" · seeds only" if p.seeds_only else "")
    )


class ParamsForm(Modal):
    """A form for a parameters dataclass (RunParams, TrainParams): one field per row pair.
    Dismisses with the new object, or None when cancelled."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding(
            "ctrl+d",
            "defaults",
            "Defaults",
            priority=True,
            tooltip="back to the defaults (the paper's, for run parameters)",
        ),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self,
        params: object,
        *,
        title: str,
        reset: Callable[[str | None], object],
        parse: Callable[[dict[str, object]], object],
        mode_field: str | None = None,
    ) -> None:
        super().__init__()
        self.params = params
        self.title_text = title
        self.reset = reset
        self.parse = parse
        self.mode_field = mode_field
        declared = dataclasses.fields(params)  # type: ignore[arg-type]
        self.fields = [f.name for f in declared]
        self.labels = {f.name: label(f) for f in declared}
        # a field declared with its choices is picked from them, not typed
        self.choices = {f.name: f.metadata["choices"] for f in declared if f.metadata["choices"]}

    def compose(self) -> ComposeResult:
        with Vertical(id="params-box", classes="dialog"):
            yield Static(self.title_text, markup=True)
            with Grid(id="params-grid"):
                for name in self.fields:
                    v = getattr(self.params, name)
                    yield Label(self.labels[name], classes="p-label")
                    if name in self.choices:
                        yield Select(
                            [(m, m) for m in self.choices[name]],
                            value=v,
                            allow_blank=False,
                            id=f"p-{name}",
                            compact=True,
                        )
                    elif isinstance(v, bool):
                        yield OnOff(v, id=f"p-{name}")
                    else:
                        yield Input(
                            str(v),
                            id=f"p-{name}",
                            compact=True,
                            type="integer" if isinstance(v, int) else "number",
                        )
            yield Static(id="params-error")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="p-save", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="p-cancel", compact=True)
        yield KeyBar()

    def values(self) -> dict[str, object]:
        return {
            name: self.query_one(f"#p-{name}").value  # type: ignore[attr-defined]
            for name in self.fields
        }

    def set_values(self, p: object) -> None:
        for name in self.fields:
            v = getattr(p, name)
            self.query_one(f"#p-{name}").value = (  # type: ignore[attr-defined]
                v if isinstance(v, (bool, str)) else str(v)
            )

    def on_select_changed(self, event: Select.Changed) -> None:
        if (
            self.mode_field
            and event.select.id == f"p-{self.mode_field}"
            and event.value != getattr(self.params, self.mode_field)
        ):
            # a mode brings its own defaults; start from them
            self.params = self.reset(str(event.value))
            self.set_values(self.params)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "p-save" else self.action_cancel()

    def action_defaults(self) -> None:
        mode = (
            str(self.query_one(f"#p-{self.mode_field}", Select).value) if self.mode_field else None
        )
        self.params = self.reset(mode)
        self.set_values(self.params)

    def action_save(self) -> None:
        try:
            params = self.parse(self.values())
        except ValueError as e:
            self.query_one("#params-error", Static).update(Text(str(e), style="bold red"))
            return
        self.dismiss(params)

    def action_cancel(self) -> None:
        self.dismiss(None)


def run_params_form(params: RunParams, task_type: str) -> ParamsForm:
    return ParamsForm(
        params,
        title=f"[b]Run parameters[/b]  [dim]({task_type}; ctrl+d: the paper's defaults)[/dim]",
        reset=lambda mode: defaults(task_type, mode),
        parse=parse_params,
        mode_field="mode",
    )


def train_params_form(params: TrainParams, task_type: str | None = None) -> ParamsForm:
    """ctrl+d resets to the defaults for the task type (the epochs the search chose)."""
    return ParamsForm(
        params,
        title="[b]Training parameters[/b]  [dim](ctrl+d: defaults, see docs/TRAINING.md)[/dim]",
        reset=lambda _: TrainParams.for_task(task_type),
        parse=parse_train,
    )
