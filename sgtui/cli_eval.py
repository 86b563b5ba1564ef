"""`sgtui eval`: score the base model, the fine-tuned adapter and the baselines on held-out rows,
print a comparison table and store every result."""

from __future__ import annotations

import sys
from pathlib import Path

from . import evaluation as ev
from .cli_args import add_model_args, record_id, resolve_model, store_of
from .errors import SgtuiError
from .generator import is_llama_cpp, open_generator
from .store import task_of
from .task import default_eval_split, load_task_spec

SYSTEMS = ("base", "trivial", "self-icl", "self-guide")


def add_eval_command(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate the model, an adapter and baselines on a split",
        description="Greedy-decode every row with the task's few-shot prompt and "
        "score it (exact match for classification, ROUGE-L for "
        "generation; scores x100).",
    )
    p.add_argument(
        "task",
        nargs="?",
        help="a task file, an NI task folder or an NI task id such "
        "as task937 (default: the task of --run)",
    )
    p.add_argument(
        "--split",
        metavar="SPEC",
        help="a JSONL file of {input, output} rows, or an NI split such as "
        "task937:test or FOLDER:validation (default: the NI task's test split, "
        "or NAME.eval.jsonl beside NAME.toml)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="score N rows drawn by a seeded shuffle")
    p.add_argument("--seed", type=int, default=0, help="the shuffle seed for --limit (default 0)")
    p.add_argument(
        "--adapter",
        metavar="PATH.gguf",
        help="a LoRA adapter in GGUF form: adds the fine-tuned system 'self-guide'",
    )
    p.add_argument(
        "--run",
        type=record_id,
        metavar="RUN",
        help="store results under this run; its synthetic pairs feed 'self-icl'",
    )
    p.add_argument(
        "--systems",
        help="comma-separated, from: " + ", ".join(SYSTEMS) + " (default: "
        "base, trivial, plus self-guide with --adapter and self-icl "
        "with --run)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        help="answer budget (default: 2x the longest seed or gold answer + 16, at most 500)",
    )
    p.add_argument(
        "--icl-pairs",
        type=int,
        metavar="K",
        help="synthetic pairs shown to self-icl (default: a third, at most 8)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the table")
    add_model_args(p)


def _default_split(args, task) -> str:
    if args.split:
        return args.split
    split = default_eval_split(task.source) if task.source else None
    if split:
        return split
    raise SgtuiError(
        "no evaluation split given",
        path=task.source or None,
        fix="pass --split with a JSONL file of {input, output} rows, or an NI split "
        "such as task937:test",
    )


def _systems(args, run_id: int | None) -> list[str]:
    if args.systems:
        chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    else:
        chosen = (
            ["base", "trivial"]
            + (["self-icl"] if run_id is not None else [])
            + (["self-guide"] if args.adapter else [])
        )
    bad = [s for s in chosen if s not in SYSTEMS]
    if bad or not chosen:
        raise SgtuiError(
            f"unknown system {', '.join(bad) or '(none)'}",
            fix=f"use --systems with some of: {', '.join(SYSTEMS)}",
        )
    if "self-icl" in chosen and run_id is None:
        raise SgtuiError("self-icl needs synthetic pairs", fix="pass --run RUN (see `sgtui runs`)")
    if "self-guide" in chosen and not args.adapter:
        raise SgtuiError("self-guide needs the fine-tuned adapter", fix="pass --adapter PATH.gguf")
    return list(dict.fromkeys(chosen))


def _progress(system: str, quiet: bool):
    tty = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if quiet:
            return
        step = max(1, total // 10)
        if tty:
            print(
                f"\r{system:>10}: {done}/{total}",
                end="\n" if done >= total else "",
                file=sys.stderr,
                flush=True,
            )
        elif done % step == 0 or done >= total:
            print(f"{system:>10}: {done}/{total}", file=sys.stderr, flush=True)

    return report


def _check_adapter(adapter: str, backend: str) -> None:
    if not Path(adapter).is_file():
        raise SgtuiError(
            "adapter file not found",
            path=adapter,
            fix="pass the .gguf adapter written by `sgtui train`",
        )
    if not is_llama_cpp(backend):
        raise SgtuiError(
            f"--adapter needs the llama-cpp backend, not {backend!r}",
            path=adapter,
            fix="pass a .gguf --model (or none for the bundled one)",
        )


def _load(backend: str, model: str, args, lora_path: str | None = None):
    return open_generator(
        model,
        backend,
        lora_path=lora_path,
        trust_remote_code=bool(getattr(args, "trust_remote_code", False)),
    )


def cmd_eval(args) -> int:
    store = store_of(args.db)
    run = store.run(args.run) if args.run is not None else None
    if args.task:
        task = load_task_spec(args.task)
    elif run is not None:
        task = task_of(run)
    else:
        raise SgtuiError("give a task, or --run RUN", fix="sgtui eval task937 --split task937:test")
    systems = _systems(args, args.run)
    synthetic = _synthetic(store, args.run) if "self-icl" in systems else []
    rows, split = ev.load_rows(_default_split(args, task), args.limit, args.seed)
    model, backend = "none", ""
    if any(s != "trivial" for s in systems):
        # the run's own model by default, so every system is compared on the same model
        model, backend = resolve_model(args.model or (run["model"] if run else None), args.backend)
        if "self-guide" in systems:
            _check_adapter(args.adapter, backend)
    if not args.quiet:
        print(
            f"{task.name}: {len(rows)} rows from {split}; model {Path(model).name}", file=sys.stderr
        )

    results: list[tuple[str, ev.EvalResult]] = []
    max_tokens = args.max_tokens
    gen, loaded = None, None
    try:
        # the base model's systems first, so each model is loaded once
        model_systems = [s for s in systems if s != "trivial"]
        for system in sorted(model_systems, key=lambda s: s == "self-guide"):
            lora = args.adapter if system == "self-guide" else None
            if gen is None or loaded != lora:
                if gen is not None:
                    gen.close()
                gen, loaded = _load(backend, model, args, lora_path=lora), lora
            if max_tokens is None:  # one budget for every system compared
                max_tokens = ev.default_max_tokens(gen, task, rows)
            pairs = (
                _icl_pairs(synthetic, args, gen, task, rows, max_tokens)
                if system == "self-icl"
                else []
            )
            r = ev.evaluate(
                gen,
                task,
                rows,
                extra_pairs=pairs,
                max_tokens=max_tokens,
                on_item=_progress(system, args.quiet),
            )
            # stored at once, so an interrupted comparison keeps what it finished
            ev.save(
                store,
                args.run,
                system,
                split,
                r,
                f"{model} + {args.adapter}" if system == "self-guide" else model,
            )
            results.append((system, r))
    finally:
        if gen is not None:
            gen.close()
    if "trivial" in systems:
        r = ev.trivial_baseline(task, rows)
        ev.save(store, args.run, "trivial", split, r, "none")
        results.append(("trivial", r))

    results.sort(key=lambda sr: systems.index(sr[0]))
    print(ev.comparison_table(results))
    if not args.quiet:
        print(f"scores x100; stored in {store.path}" + (f" under run {args.run}" if run else ""))
    return 0


def _synthetic(store, run_id: int) -> list[dict]:
    pairs = store.training_pairs(run_id)
    if not pairs:
        raise SgtuiError(
            f"run {run_id} has no synthetic pairs for self-icl",
            path=str(store.path),
            fix=f"finish the run with `sgtui generate --resume {run_id}`, or leave "
            "self-icl out of --systems",
        )
    return pairs


def _icl_pairs(synthetic, args, gen, task, rows, max_tokens: int) -> list[tuple[str, str]]:
    wanted = ev.self_icl_pairs(synthetic, args.icl_pairs, seed=args.seed)
    pairs = ev.fit_pairs(gen, task, wanted, rows, max_tokens)
    if not pairs and wanted:
        raise SgtuiError(
            "no synthetic pair fits the model's context beside the longest row",
            fix="use --limit or a split with shorter inputs, or a smaller --max-tokens",
        )
    if len(pairs) < len(wanted) and not args.quiet:
        print(f"self-icl: {len(pairs)} of {len(wanted)} pairs fit the context", file=sys.stderr)
    return pairs


HANDLERS = {"eval": cmd_eval}
