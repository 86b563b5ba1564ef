"""What the CLI modules share: argument types and options, the run's parameters from the
flags, opening a run from the arguments, and the progress printer."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from typing import Sequence

from . import generator
from .config import DEFAULT_MODE, RunParams, cli_fields, range_text
from .errors import SgtuiError
from .events import NoticeEvent, ProgressEvent
from .models import resolve_model as model_by_name
from .paths import default_db
from .store import Store
from .synthesis import open_run, reopen_run
from .task import load_task_spec
from .training import EPOCHS_BY_TYPE, TrainParams

SQLITE_MAX_INT = 2**63 - 1  # the largest id SQLite can store


def record_id(text: str) -> int:
    """A run or sample id: a whole number SQLite can hold, so a typo such as
    99999999999999999999 is an argument error, not an OverflowError from SQLite."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= SQLITE_MAX_INT:
        raise argparse.ArgumentTypeError(
            f"{text} is not an id (ids run from 1 to {SQLITE_MAX_INT}; `sgtui runs` lists them)"
        )
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="a .gguf file, a Hugging Face folder, ollama:NAME[:TAG], "
        "lmstudio:PUB/REPO or ORG/NAME in the local Hugging Face "
        "cache (default: the bundled SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--backend",
        help="llama-cpp (default for .gguf), transformers, or openai (a server: --base-url)",
    )
    g = p.add_argument_group("a server (--backend openai)")
    g.add_argument(
        "--base-url",
        metavar="URL",
        help="an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1",
    )
    g.add_argument("--served-model", metavar="NAME", help="the model's name on the server")
    g.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="the environment variable that holds the API key (never the key)",
    )
    g.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="parallel requests (default 4)"
    )
    p.add_argument("--db", help="the SQLite database (default: $SGTUI_HOME/sgtui.db)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run code shipped with a model (off by default)",
    )


def add_run_params(p: argparse.ArgumentParser) -> None:
    """The RunParams fields that have a flag, from their one declaration (sgtui/config.py)."""
    g = p.add_argument_group("run parameters (defaults: the paper's, per task type)")
    for f in cli_fields():
        m = f.metadata
        if isinstance(f.default, bool):
            g.add_argument(
                m["flag"],
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                help=m["help"] or None,
            )
        elif m["choices"]:
            g.add_argument(m["flag"], dest=f.name, choices=m["choices"], help=m["help"] or None)
        else:
            g.add_argument(
                m["flag"],
                dest=f.name,
                type=type(f.default),
                metavar="N" if isinstance(f.default, int) else "X",
                help=f"{m['help']} ({range_text(f)})".lstrip(),
            )


PARAM_KEYS = tuple(f.name for f in cli_fields())


def add_param_args(parser, prefixed: Sequence[str] = ()) -> None:
    """The TrainParams options, shared by the worker, `sgtui train` and `sgtui run`, from the
    fields' declarations. Names in `prefixed` get a --train- prefix (`sgtui run` already has a
    generation --seed)."""
    defaults = TrainParams()
    g = parser.add_argument_group("training (defaults: docs/TRAINING.md)")
    for f in fields(TrainParams):
        default, m = getattr(defaults, f.name), f.metadata
        name = f"train_{f.name}" if f.name in prefixed else f.name
        flag = "--train-" + m["flag"][2:] if f.name in prefixed else m["flag"]
        if isinstance(default, bool):
            g.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=m["help"] or None,
            )
        else:
            shown = (
                ", ".join(f"{n} for {t}" for t, n in EPOCHS_BY_TYPE.items())
                if f.name == "epochs"
                else default
            )
            g.add_argument(
                flag,
                dest=name,
                type=type(default),
                default=None,
                choices=m["choices"],
                help=(m["help"] + f" (default {shown})").strip(),
            )


def train_params_from_args(
    args, prefixed: Sequence[str] = (), task_type: str | None = None
) -> TrainParams:
    return TrainParams.for_task(task_type).override(
        **{
            f.name: getattr(args, f"train_{f.name}" if f.name in prefixed else f.name, None)
            for f in fields(TrainParams)
        }
    )


def store_of(db: str | None):
    return Store(db or default_db())


def resolve_model(model: str | None, backend: str | None) -> tuple[str, str]:
    """(path, backend) for --model and --backend (sgtui.generator.resolve)."""
    return generator.resolve(model, backend)


def run_params_from_args(args, task_type: str):
    """The run's parameters: the defaults for the task type with the flags given, validated
    (an SgtuiError naming the flag) before any model is loaded or run created."""
    mode = getattr(args, "mode", None) or DEFAULT_MODE
    return RunParams.defaults_for(task_type, mode).override(
        **{k: getattr(args, k, None) for k in PARAM_KEYS}
    )


def server_spec(args) -> str:
    """--base-url [and --served-model] as the openai backend's model: "URL#MODEL"."""
    if not getattr(args, "base_url", None):
        raise SgtuiError(
            "--backend openai needs the server's address",
            fix="pass --base-url, e.g. --base-url http://127.0.0.1:8080/v1",
        )
    served = getattr(args, "served_model", None)
    return args.base_url + (f"#{served}" if served else "")


def generator_options(args, backend: str) -> dict:
    """What the backend needs from the command line, besides the model."""
    if backend == "transformers":
        return {"trust_remote_code": bool(getattr(args, "trust_remote_code", False))}
    if backend == generator.SERVER:
        model = getattr(args, "model", None)
        concurrency = getattr(args, "concurrency", 4) or 4
        if concurrency < 1:
            raise SgtuiError(
                f"--concurrency must be at least 1 (got {concurrency})",
                fix="pass --concurrency 4, or leave it out",
            )
        # --model with a server: the local copy whose template and tokenizer the server runs
        return {
            "api_key_env": getattr(args, "api_key_env", None),
            "concurrency": concurrency,
            "template_from": model_by_name(model) if model else None,
        }
    return {}


def open_run_from_args(store: Store, args, check=None) -> tuple[int, object]:
    """A new run from the task, model and flags given, or the run of --resume. The parameters
    are checked (an SgtuiError naming the flag) before any model is loaded or run created, and
    `check(generator)` (synthesis.open_run) before a new run is created.
    Returns (run id, generator)."""
    if args.resume is not None:
        backend = store.run(args.resume)["backend"]
        return reopen_run(
            store, args.resume, getattr(args, "base_url", None), **generator_options(args, backend)
        )
    task = load_task_spec(args.task)
    if getattr(args, "backend", None) == generator.SERVER:
        model, backend = server_spec(args), generator.SERVER
    else:
        model, backend = resolve_model(args.model, args.backend)
    params = run_params_from_args(args, task.type)
    return open_run(
        store, task, params, model, backend, check=check, **generator_options(args, backend)
    )


class Printer:
    """A live one-line progress display on a terminal; periodic lines otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, event) -> None:
        if self.quiet:
            return
        if isinstance(event, NoticeEvent):
            print(("\n" if self.tty else "") + f"[{event.level}] {event.text}", file=sys.stderr)
        elif isinstance(event, ProgressEvent):
            now = time.monotonic()
            final = event.done >= event.total
            if not final and now - self.last < (0.2 if self.tty else 5.0):
                return
            self.last = now
            line = (
                f"{event.stage:>8}: {event.done}/{event.total}  kept {event.kept}  "
                f"filtered {event.filtered}  {event.tokens_per_s:.0f} tok/s"
            )
            if self.tty:
                print("\r" + line.ljust(78), end="\n" if final else "", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)


def print_summary(run_id: int, summary: dict, store) -> None:
    print(
        f"run {run_id}: {summary['candidates']} candidate inputs, {summary['inputs_kept']} "
        f"passed the input filters, {summary['kept']} annotated samples kept "
        f"({summary['training_pairs']} training pairs after marks)"
    )
    for name, n in sorted(summary["filtered"].items(), key=lambda kv: -kv[1]):
        print(f"  filtered by {name:<14} {n}")
    for w in summary.get("warnings", []):
        print(f"  warning: {w}")
    print(f"  database: {store.path}")
