"""`sgtui train`, `sgtui export` and `sgtui run` (generate -> train -> evaluate before/after).

Training runs in a child process (sgtui.training.TrainingJob); this module only starts it,
shows its progress and reports. Nothing here imports torch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

from . import evaluation as ev
from . import modelfile
from .cli_args import (
    Printer,
    add_model_args,
    add_param_args,
    add_run_params,
    open_run_from_args,
    print_summary,
    record_id,
    store_of,
    train_params_from_args,
)
from .errors import SgtuiError
from .events import EpochChosen, Evaluating, Exported, SynthesisDone, Trained, TrainingEvent
from .export import FORMATS, MERGED_QUANTS, export_run
from .generator import LOCAL_WEIGHTS, SERVER, ollama_weights, train_weights
from .loop import run_loop
from .models import resolve_model
from .paths import default_db
from .store import task_fields
from .task import default_eval_split, default_val_split, load_task, resolve_task_spec
from .training import _task_of, format_progress, train

RUN_EVAL_LIMIT = 100  # rows of an NI test split that `sgtui run` scores by default
RUN_PREFIXED = ("seed",)  # `sgtui run` has a generation --seed; training's is --train-seed


def add_commands(sub) -> None:

    p = sub.add_parser(
        "train",
        help="fine-tune the model on a run's training pairs (LoRA)",
        description="LoRA fine-tuning in a child process; progress every second, "
        "a checkpoint every epoch, the adapter in the run's folder.",
    )
    p.add_argument("run", type=record_id)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last epoch checkpoint (its parameters are kept)",
    )
    p.add_argument("--model", help="the base model (default: the run's model)")
    p.add_argument("--db", help="the SQLite database (default: $SGTUI_HOME/sgtui.db)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run code shipped with a model (off by default)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the result")
    add_param_args(p)

    p = sub.add_parser(
        "export",
        help="export a run's fine-tune: a LoRA GGUF, an Ollama "
        "Modelfile, one merged GGUF, or peft / HF folders",
    )
    p.add_argument("run", type=record_id)
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="gguf",
        help="gguf: a llama.cpp LoRA adapter for the base GGUF (default); ollama: "
        "that adapter and a Modelfile for `ollama create`; gguf-merged: one GGUF "
        "with the LoRA merged in, quantised (--quant); adapter: the peft folder; "
        "merged: a HF folder with the LoRA merged in",
    )
    p.add_argument(
        "--quant",
        choices=MERGED_QUANTS,
        default=None,
        help="gguf-merged only: the type of the merged weights (default q8_0)",
    )
    p.add_argument(
        "--out",
        metavar="PATH",
        help="default: <run folder>/export/ (an earlier export there is replaced); "
        "an existing PATH is refused unless --force",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out, if it is a regular file (gguf) or a folder "
        "that sgtui exported; anything else is never replaced",
    )
    p.add_argument(
        "--base",
        metavar="MODEL",
        help="the base model (default: the one the adapter was trained on); for "
        "gguf of a HF-folder base, the base's converted .gguf",
    )
    p.add_argument("--db")
    p.add_argument("--trust-remote-code", action="store_true")

    p = sub.add_parser("run", help="the whole loop: generate, fine-tune, evaluate before/after")
    p.add_argument("task", help="a task file (.toml / NI .json), an NI task folder or NI task id")
    add_model_args(p)
    p.add_argument(
        "--train-model",
        metavar="MODEL",
        help="with --backend openai: the served model's weights on this machine, to train "
        "on and score with (a .gguf, a Hugging Face folder, ollama:NAME, ORG/NAME; default: "
        "--model, else the Ollama blob behind the served name when the server is this "
        "machine's Ollama)",
    )
    add_run_params(p)
    add_param_args(p, prefixed=RUN_PREFIXED)
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--eval-split",
        metavar="SPEC",
        help="a JSONL file of {input, output} rows or an NI split such as "
        "task937:test (default: an NI task's test split; a task file needs one)",
    )
    g.add_argument(
        "--eval-limit",
        type=int,
        metavar="N",
        help=f"score N rows (default {RUN_EVAL_LIMIT} for an NI test split; all rows "
        "of --eval-split)",
    )
    g.add_argument("--no-eval", action="store_true", help="stop after training and export")
    g.add_argument(
        "--val-split",
        metavar="SPEC",
        help="choose the epoch on these rows (a JSONL file or an NI split such as "
        "task937:validation, never the test rows): the base model and every "
        "epoch's checkpoint are scored and the best one is evaluated; 0 means "
        "the fine-tune did not beat the base model (GGUF base models only; "
        "default: an NI task's validation split, or NAME.val.jsonl beside a "
        "task file)",
    )
    g.add_argument(
        "--no-val",
        action="store_true",
        help="evaluate the last epoch, without choosing the epoch on validation rows",
    )
    p.add_argument("--quiet", action="store_true", help="print only summaries and the table")


# -- progress ---------------------------------------------------------------------------------
class TrainPrinter:
    """Progress lines on stderr: one live line on a terminal, a line every ~5 s otherwise."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if self.quiet or kind in ("error", "done"):
            return
        if kind == "progress":
            now = time.monotonic()
            final = event["step"] >= event["total_steps"]
            if not (final or event.get("epoch_end") or self.tty or now - self.last >= 5.0):
                return
            self.last = now
            line = format_progress(event)
            if self.tty:
                end = "\n" if final or event.get("epoch_end") else ""
                print("\r" + line.ljust(78), end=end, file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)
        elif kind == "start":
            print(
                f"training {event['examples']} examples ({event['dropped']} dropped as longer "
                f"than --max-len) for {event['epochs']} epochs, {event['total_steps']} steps: "
                f"{event['backend']} on {event['device']}, {event['precision']}",
                file=sys.stderr,
                flush=True,
            )
        elif kind == "resumed":
            print(
                f"resuming after epoch {event['epoch']} (step {event['step']})",
                file=sys.stderr,
                flush=True,
            )
        elif kind == "checkpoint":
            if self.tty:
                print(file=sys.stderr)
            print(
                f"checkpoint: epoch {event['epoch']} -> {event['path']}",
                file=sys.stderr,
                flush=True,
            )
        elif kind == "notice":
            print(f"[notice] {event['text']}", file=sys.stderr, flush=True)


def _db_path(db: str | None) -> str:
    return str(db or default_db())


def train_run(
    db: str,
    run_id: int,
    params,
    *,
    resume: bool = False,
    model: str | None = None,
    trust_remote_code: bool = False,
    quiet: bool = False,
    given: Sequence[str] = (),
):
    """Run one training in a child process, showing progress; Ctrl-C cancels it. `given`: the
    options the user typed, which a resumed training ignores (it keeps its own)."""

    def said(job) -> None:
        if job.resuming and given and not quiet:
            print(
                f"[notice] --resume keeps the interrupted training's parameters; ignoring "
                f"{', '.join(given)}",
                file=sys.stderr,
            )

    return train(
        db,
        run_id,
        params,
        resume=resume,
        model=model,
        trust_remote_code=trust_remote_code,
        on_event=TrainPrinter(quiet),
        on_start=said,
    )


def cmd_train(args) -> int:
    store = store_of(args.db)
    params = train_params_from_args(args, task_type=_task_of(store, args.run).type)
    model = train_weights(store, args.run, args.model)
    if model is None:
        raise _no_weights(store.run(args.run)["model"], "--model")
    given = [k for k in [*params.to_dict(), "model"] if getattr(args, k, None) is not None]
    outcome = train_run(
        _db_path(args.db),
        args.run,
        params,
        resume=args.resume,
        model=model,
        trust_remote_code=args.trust_remote_code,
        quiet=args.quiet,
        given=["--" + k.replace("_", "-") for k in given],
    )
    loss = f", final loss {outcome.final_loss:.4f}" if outcome.final_loss is not None else ""
    print(f"run {args.run}: trained {outcome.steps} steps{loss}")
    print(f"  adapter: {outcome.adapter}")
    print(f"  next: sgtui export {args.run} --format gguf")
    return 0


def _no_weights(server_model: str, flags: str = "--train-model (or --model)") -> SgtuiError:
    return SgtuiError(
        f"this run generates through a server ({server_model}), and training needs the "
        "served model's weights on this machine",
        fix=f"pass {flags} with {LOCAL_WEIGHTS}",
    )


def cmd_export(args) -> int:
    store = store_of(args.db)
    pair = ev.fine_tune_against_base(store, args.run)
    if pair and pair[0]["score"] < pair[1]["score"]:
        # exported all the same: the person may want it anyway, but should know first
        tuned, base = pair
        metric = ev.METRIC_NAMES.get(tuned["metric"], tuned["metric"])
        which = "" if tuned["system"] == "self-guide" else f" ({tuned['system']})"
        print(
            f"warning: run {args.run}'s fine-tune{which} scored {tuned['score']:.1f} {metric} "
            f"against the base model's {base['score']:.1f} on {tuned['split']}: it is worse "
            "than the base model",
            file=sys.stderr,
        )
    if args.quant and args.format != "gguf-merged":
        raise SgtuiError(
            f"--quant is for --format gguf-merged, not {args.format}",
            fix="drop --quant, or use --format gguf-merged",
        )
    path = export_run(
        store,
        args.run,
        args.format,
        args.out,
        args.base,
        args.trust_remote_code,
        force=args.force,
        quant=args.quant,
    )
    print(f"run {args.run}: exported {args.format} -> {path}")
    if args.format == "gguf":
        print(
            "  use it with llama.cpp beside the base GGUF: "
            "Llama(model_path=BASE.gguf, lora_path=THIS.gguf)"
        )
    elif args.format == "gguf-merged":
        print("  one file, no adapter needed: llama-cli -m THIS.gguf, or Ollama's FROM")
    elif args.format == "ollama":
        _print_ollama(store, args.run, path)
    return 0


def _print_ollama(store, run_id: int, folder: Path) -> None:
    manifest = json.loads((folder / "sgtui-export.json").read_text())
    for note in manifest.get("notes") or []:
        print(f"  note: {note}", file=sys.stderr)
    name = modelfile.model_name(task_fields(store.run(run_id)).get("name") or "task")
    print(f"  make it an Ollama model: {modelfile.create_command(name, folder / 'Modelfile')}")
    print(f'  then: ollama run {name} "YOUR INPUT"')


# -- sgtui run --------------------------------------------------------------------------------
def _run_flag_names(message: str) -> str:
    """A training parameter's message with the flag `sgtui run` gives it."""
    for name in RUN_PREFIXED:
        message = message.replace(f"--{name} ", f"--train-{name} ")
    return message


def check_eval_limit(limit: int | None) -> None:
    """--eval-limit is a number of rows: refused in its own name before any work starts (0
    would otherwise mean the default, and a negative one be blamed on eval's --limit)."""
    if limit is not None and limit < 1:
        raise SgtuiError(
            f"--eval-limit must be at least 1 (got {limit})",
            fix=f"give --eval-limit a number of rows, or leave it out (default "
            f"{RUN_EVAL_LIMIT} rows of an NI test split, all rows of "
            "--eval-split)",
        )


class LoopPrinter:
    """sgtui.loop.run_loop's events, as `sgtui run` prints them. It also keeps `args.run` and
    `args.stage` current, for main()'s message if a signal stops the run."""

    def __init__(self, args, store):
        self.args, self.store, self.quiet = args, store, args.quiet
        self.synthesis, self.training = Printer(args.quiet), TrainPrinter(args.quiet)

    def __call__(self, event) -> None:
        if isinstance(event, TrainingEvent):
            self.training(event.data)
        elif isinstance(event, SynthesisDone):
            print_summary(event.run_id, event.summary, self.store)
            self.args.run, self.args.stage = event.run_id, "training"
        elif isinstance(event, Trained):
            print(f"run {event.run_id}: trained {event.steps} steps; adapter {event.adapter}")
            self.args.stage = "evaluation"
        elif isinstance(event, Exported):
            print(f"  llama.cpp adapter: {event.path}")
        elif isinstance(event, Evaluating):
            if not self.quiet:
                what = (
                    "choosing the epoch"
                    if event.system == "epochs"
                    else f"evaluating {event.system}"
                )
                print(f"{what} on {event.rows} rows of {event.split}", file=sys.stderr)
        elif isinstance(event, EpochChosen):
            scores = ", ".join(
                f"{'base' if k == 0 else f'epoch {k}'} {v:.1f}" for k, v in event.scores.items()
            )
            print(f"  validation ({event.split}): {scores}")
            if event.epoch == 0:
                print(
                    "  the fine-tune did not beat the base model on validation: keep the base "
                    "model; the table shows the last epoch for reference"
                )
            else:
                print(f"  chosen: epoch {event.epoch} ({event.adapter})")
        else:
            self.synthesis(event)


def cmd_run(args) -> int:
    check_eval_limit(args.eval_limit)
    task_path = resolve_task_spec(args.task)
    task_type = load_task(task_path).type
    try:
        train_params = train_params_from_args(args, RUN_PREFIXED, task_type)
    except SgtuiError as e:  # name the flag as `sgtui run` spells it (--train-seed)
        raise SgtuiError(_run_flag_names(e.message), path=e.path, fix=e.fix) from None
    args.task, args.resume = str(task_path), None
    # check the evaluation split before hours of generation and training
    rows, split = [], None
    spec = None if args.no_eval else (args.eval_split or default_eval_split(task_path))
    if spec:
        limit = args.eval_limit or (RUN_EVAL_LIMIT if not args.eval_split else None)
        rows, split = ev.load_rows(spec, limit, seed=0)
    elif not args.no_eval and not args.quiet:
        print(
            "[notice] no evaluation split for this task, so `run` stops after training; pass "
            "--eval-split FILE.jsonl (rows of {input, output}) to compare before/after",
            file=sys.stderr,
        )

    val_rows, val_split = [], None
    val_spec = (
        None if args.no_val or args.no_eval else (args.val_split or default_val_split(task_path))
    )
    if val_spec:
        val_rows, val_split = ev.load_rows(
            val_spec, args.eval_limit or (RUN_EVAL_LIMIT if not args.val_split else None), seed=0
        )

    store = store_of(args.db)
    # a server run's local weights: --train-model, else --model (the local copy whose
    # template the server runs), else the Ollama blob behind the served name
    local = args.train_model or (args.model if args.backend == SERVER else None)
    weights = {"given": resolve_model(local) if local else None}  # refused before loading

    def server_weights(generator) -> None:
        """A server run trains on local weights: given, or the Ollama blob behind the name."""
        if args.backend == SERVER and not weights["given"]:
            weights["given"] = ollama_weights(generator)
            if not weights["given"]:
                raise _no_weights(generator.model_path)

    run_id, generator = open_run_from_args(store, args, check=server_weights)
    try:
        # recorded with a server run, so `sgtui train` and `export` find them later
        train_model = train_weights(store, run_id, weights["given"])
        if val_rows and not args.val_split and not Path(train_model).is_file():
            val_rows = []  # the default: epochs are scored through llama.cpp, so GGUF only
        if val_rows and not Path(train_model).is_file():
            raise SgtuiError(
                "--val-split needs a GGUF base model (epochs are scored through llama.cpp)",
                path=train_model,
                fix="leave --val-split out, or use the model's .gguf file",
            )
    except BaseException:
        generator.close()
        raise
    result = run_loop(
        store,
        run_id,
        generator,
        train_params,
        rows=rows,
        split=split,
        val_rows=val_rows,
        val_split=val_split,
        trust_remote_code=args.trust_remote_code,
        train_model=train_model,
        on_event=LoopPrinter(args, store),
    )
    if not spec:
        print(
            f"  evaluate later: sgtui eval --run {run_id} --split FILE.jsonl "
            f"--adapter {result.gguf_adapter or '(export --format gguf first)'}"
        )
        return 0
    task = store.get_task(store.run(run_id)["task_id"])
    print(f"\n{task.name} on {split} (scores x100, greedy):")
    print(ev.comparison_table(result.results))
    if result.base_chosen:
        # the rows the choice was made on decide, not the test rows it is reported on
        print(f"\nkeep using the base model: no epoch of the fine-tune beat it on {val_split}")
    else:
        print(
            "\n"
            + ev.which_model(result.results[0][1].score, result.results[1][1].score, result.tuned)
        )
    return 0


HANDLERS = {"train": cmd_train, "export": cmd_export, "run": cmd_run}
