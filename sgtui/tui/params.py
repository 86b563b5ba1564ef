"""The run-parameter form: every field of RunParams, starting from the paper's defaults for the
task type (RunParams.defaults_for), each one editable."""
from __future__ import annotations

import dataclasses
import inspect

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static, Switch

from .. import config
from ..config import RunParams
from .widgets import KeyBar, Modal

MODES: tuple[str, ...] = getattr(config, "MODES", ("paper", "small"))
LABELS = {"per_round": "per round", "gen_temperature": "gen temp", "gen_top_k": "gen top_k",
          "gen_top_p": "gen top_p", "gen_max_tokens": "gen max tok", "max_low_quality": "pool examples",
          "context_cutoff": "prompt limit", "input_length_filter": "input length",
          "output_length_filter": "output length", "noise_filter": "noise filter",
          "best_of": "best of", "ann_temperature": "ann temp", "ann_top_k": "ann top_k",
          "ann_max_tokens": "ann max tok", "min_frequency": "vote min freq",
          "balance_classes": "balance", "small_filters": "small filters",
          "near_copy_threshold": "near-copy"}
AT_LEAST_ONE = ("rounds", "per_round", "n", "best_of", "gen_max_tokens", "ann_max_tokens",
                "context_cutoff")


def default_mode() -> str:
    return getattr(config, "DEFAULT_MODE", "paper")


def defaults(task_type: str, mode: str | None = None) -> RunParams:
    """The paper's defaults for the task type, in the input-generation mode (when this version
    of the core has modes)."""
    if "mode" in inspect.signature(RunParams.defaults_for).parameters:
        return RunParams.defaults_for(task_type, mode or default_mode())
    return RunParams.defaults_for(task_type)


def summary(p: RunParams) -> str:
    filters = [name for name, on in (("length", p.input_length_filter),
                                     ("out-length", p.output_length_filter),
                                     ("noise", p.noise_filter),
                                     ("small", getattr(p, "small_filters", False))) if on]
    return (f"{p.rounds}×{p.per_round} inputs · n {p.n} · T {p.gen_temperature}/{p.ann_temperature}"
            f" · max tok {p.gen_max_tokens}/{p.ann_max_tokens} · {p.mode} · "
            f"filters {'+'.join(filters) or 'none'}")


def parse_params(values: dict[str, object]) -> RunParams:
    """Turn the form's values into RunParams; ValueError names the field in trouble."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(RunParams):
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
            raise ValueError(f"{LABELS.get(f.name, f.name)}: {v!r} is not a "
                             f"{'whole number' if kind is int else 'number'}") from None
    for name in AT_LEAST_ONE:
        if name in out and int(out[name]) < 1:  # type: ignore[call-overload]
            raise ValueError(f"{LABELS.get(name, name)} must be at least 1")
    if "best_of" in out and "n" in out and int(out["best_of"]) < int(out["n"]):  # type: ignore[call-overload]
        raise ValueError("best of must be at least n")
    return RunParams.from_dict(out)


class ParamsForm(Modal):
    """Dismisses with the new RunParams, or None when cancelled."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+d", "defaults", "Paper defaults", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, params: RunParams, task_type: str) -> None:
        super().__init__()
        self.params = params
        self.task_type = task_type

    def compose(self) -> ComposeResult:
        with Vertical(id="params-box", classes="dialog"):
            yield Static(f"[b]Run parameters[/b]  [dim]({self.task_type}; ctrl+d: the paper's "
                         "defaults)[/dim]", markup=True)
            with Grid(id="params-grid"):
                for f in dataclasses.fields(RunParams):
                    v = getattr(self.params, f.name)
                    yield Label(LABELS.get(f.name, f.name.replace("_", " ")), classes="p-label")
                    if f.name == "mode":
                        yield Select([(m, m) for m in MODES], value=v, allow_blank=False,
                                     id="p-mode", compact=True)
                    elif isinstance(v, bool):
                        yield Switch(v, id=f"p-{f.name}", classes="p-switch")
                    else:
                        yield Input(str(v), id=f"p-{f.name}", compact=True,
                                    type="integer" if isinstance(v, int) else "number")
            yield Static(id="params-error")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="p-save", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="p-cancel", compact=True)
        yield KeyBar()

    def values(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in dataclasses.fields(RunParams):
            w = self.query_one(f"#p-{f.name}")
            out[f.name] = w.value  # type: ignore[attr-defined]
        return out

    def set_values(self, p: RunParams) -> None:
        for f in dataclasses.fields(RunParams):
            w = self.query_one(f"#p-{f.name}")
            v = getattr(p, f.name)
            w.value = v if isinstance(v, (bool, str)) else str(v)  # type: ignore[attr-defined]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "p-mode" and event.value != self.params.mode:
            # a mode brings its own defaults; start from them
            self.params = defaults(self.task_type, str(event.value))
            self.set_values(self.params)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_save() if event.button.id == "p-save" else self.action_cancel()

    def action_defaults(self) -> None:
        self.params = defaults(self.task_type, str(self.query_one("#p-mode", Select).value))
        self.set_values(self.params)

    def action_save(self) -> None:
        try:
            params = parse_params(self.values())
        except ValueError as e:
            self.query_one("#params-error", Static).update(Text(str(e), style="bold red"))
            return
        self.dismiss(params)

    def action_cancel(self) -> None:
        self.dismiss(None)
