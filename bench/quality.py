"""Does the loop make the model better? Base against fine-tune, over training seeds.

For each task: the trivial baseline and the base model's few-shot score, then one synthesis
run with the defaults `sgtui run` uses (small mode), then one training per seed at the default
epochs (no epoch choice on validation, so a bad fine-tune cannot hide), each fine-tune exported
as a GGUF adapter and scored greedily through llama.cpp on the same rows.

Rows: an NI task's test split, the first --eval-limit rows of a seeded shuffle (200 by
default, or all where fewer); a task of data/tasks/ is scored on all rows of its own
NAME.eval.jsonl. Results go to OUT.json as they come, in the shape of issue 12 (scores x100,
one `tuned` score per training seed), and a markdown rendering to OUT.md. A stopped benchmark
continues where it stopped: the base, the synthesis run and every seed are kept as they
finish, and an unfinished synthesis run is resumed.

    .venv/bin/python bench/quality.py --tasks formal-rewrite,city-fact,sentiment
    .venv/bin/python bench/quality.py --tasks task1195,task036 --seeds 42,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe as machine  # noqa: E402  (bench/machine.py)

NI_TASKS = [
    "task937",
    "task1195",
    "task190",
    "task121",
    "task199",
    "task036",
    "task200",
    "task039",
    "task738",
    "task1385",
    "task1386",
]
OWN_TASKS = ["formal-rewrite", "city-fact", "sentiment"]


def work_dir() -> Path:
    """Where the benchmarks keep their databases: $SGTUI_HOME, else bench/.work/ (not
    committed), set as SGTUI_HOME so the runs' folders go there too."""
    work = Path(os.environ.get("SGTUI_HOME") or ROOT / "bench" / ".work")
    os.environ["SGTUI_HOME"] = str(work)
    return work


def task_and_rows(name: str, limit: int):
    """(task, rows, split name) for an NI task id or a task of data/tasks/, by its file's name
    ("sentiment") or its own (`name = "review-sentiment"`, which the results are keyed by)."""
    from sgtui import evaluation as ev
    from sgtui.paths import shared_ni
    from sgtui.task import load_task

    own = ROOT / "data" / "tasks" / f"{name}.toml"
    if not own.is_file():
        own = next(
            (p for p in (ROOT / "data" / "tasks").glob("*.toml") if load_task(p).name == name),
            own,
        )
    if own.is_file():
        rows, split = ev.load_rows(str(own.with_name(f"{name}.eval.jsonl")))
        return load_task(own), rows, split
    ni = shared_ni()
    if ni is None or not (ni / name).is_dir():
        raise SystemExit(f"{name}: not a task of data/tasks/ and not in ../shared/ni")
    rows, split = ev.load_rows(f"{name}:test", limit, seed=0)
    return load_task(ni / name), rows, split


def evaluate(task, rows, model: str, max_tokens: int | None, lora: str | None = None):
    import backends
    from sgtui import evaluation as ev

    gen = backends.load_generator("llama-cpp", model, **({"lora_path": lora} if lora else {}))
    try:
        if max_tokens is None:
            max_tokens = ev.default_max_tokens(gen, task, rows)
        return ev.evaluate(gen, task, rows, max_tokens=max_tokens), max_tokens
    finally:
        gen.close()


def synthesize(store, task, params, model: str, res: dict, save) -> None:
    """Create the task's run, or finish the one a stopped benchmark left."""
    import backends
    from sgtui.synthesis import create_run, run_synthesis

    if "run" not in res:
        res["run"] = create_run(store, task, params, model, "llama-cpp")
        save()
    if store.run(res["run"])["status"] != "done":
        t = time.monotonic()
        gen = backends.load_generator("llama-cpp", model)
        try:
            summary = run_synthesis(store, res["run"], gen, lambda e: None)
        finally:
            gen.close()
        res["synthesis_minutes"] = round((time.monotonic() - t) / 60, 1)
    else:
        summary = store.run(res["run"])["summary"]
    res.update(
        kept=summary["training_pairs"],
        candidates=summary["candidates"],
        filtered=summary["filtered"],
        warnings=summary["warnings"],
    )
    save()


def train_seed(
    store, task, res: dict, seed: int, model: str, epochs: int | None, train_set: dict
) -> tuple[str, int]:
    """Train the run's samples again with this seed; returns (GGUF adapter, epochs)."""
    from sgtui.cli_train import train_run
    from sgtui.export import export_gguf
    from sgtui.training import TrainParams, run_dir

    params = TrainParams.for_task(task.type).override(**train_set, seed=seed)
    if epochs:
        params = params.override(epochs=epochs)
    outcome = train_run(str(store.path), res["run"], params, quiet=True)
    dest = run_dir(store, res["run"]) / "export" / f"seed-{seed}.gguf"
    lora = str(export_gguf(Path(outcome.adapter), model, dest))
    return lora, params.epochs


def has_run(store, run_id: int) -> bool:
    from sgtui.errors import SgtuiError

    try:
        store.run(run_id)
    except SgtuiError:
        return False
    return True


def run_task(name: str, args, results: dict, save, store, model: str) -> None:
    from sgtui import evaluation as ev
    from sgtui.config import RunParams

    task, rows, split = task_and_rows(name, args.eval_limit)
    # the tasks of data/tasks/ are keyed by their own name ("review-sentiment")
    res = results["tasks"].setdefault(
        task.name,
        {
            "type": task.type,
            "metric": task.metric,
            "n": len(rows),
            "split": split,
            "machine": machine(),
        },
    )
    if "base" not in res:
        t = time.monotonic()
        base, res["max_tokens"] = evaluate(task, rows, model, None)
        res.update(
            trivial=round(ev.trivial_baseline(task, rows).score, 1),
            base=round(base.score, 1),
            base_minutes=round((time.monotonic() - t) / 60, 1),
        )
        save()
    params = RunParams.defaults_for(task.type, "small").override(**args.set)
    changed = {
        k: v
        for k, v in params.to_dict().items()
        if v != getattr(RunParams.defaults_for(task.type, "small"), k)
    }
    changed.update({f"train {k}": v for k, v in args.train_set.items()})
    if res.get("kept") is not None and res.get("params", "defaults") != (changed or "defaults"):
        # the stored figures were made with the stored parameters: relabelling them, or
        # training more seeds with others, would mix two settings in one entry
        sys.exit(
            f"{task.name}: its stored figures used {res.get('params')}, not "
            f"{changed or 'defaults'}; pass the same --set and --train-set, or --restart {name}"
        )
    res["params"] = changed or "defaults"
    if res.get("kept") is not None and not has_run(store, res["run"]):
        # the seeds trained on that run's samples: a new run would mix two data sets
        sys.exit(
            f"{task.name}: its synthesis run {res['run']} is not in {store.path}; pass "
            f"--restart {name} to synthesise and train it again from the start"
        )
    if res.get("kept") is not None:
        # "defaults" means those of the code that made the run: after a change of the defaults
        # the stored samples are another setting's, whatever the JSON's params say
        made = RunParams.from_dict(store.run(res["run"])["params"]).to_dict()
        differ = {k: v for k, v in made.items() if params.to_dict()[k] != v}
        if differ:
            sys.exit(
                f"{task.name}: its synthesis run {res['run']} was made with "
                f"{', '.join(f'{k}={v}' for k, v in differ.items())}, which these parameters "
                f"change; pass --restart {name} to synthesise and train it again"
            )
    if res.get("kept") is None:
        synthesize(store, task, params, model, res, save)
    by_seed = res.setdefault("by_seed", {})
    for seed in args.seeds:
        if str(seed) in by_seed or not res["kept"]:
            continue
        t = time.monotonic()
        lora, res["epochs"] = train_seed(store, task, res, seed, model, args.epochs, args.train_set)
        result, _ = evaluate(task, rows, model, res["max_tokens"], lora)
        by_seed[str(seed)] = {
            "score": round(result.score, 1),
            "minutes": round((time.monotonic() - t) / 60, 1),
        }
        print(f"{name} seed {seed}: {by_seed[str(seed)]}", flush=True)
        save()
    # the shape: one score per training seed; no sample kept means no fine-tune, so
    # the tool keeps the base model and every seed scores the base
    res["tuned"] = (
        [by_seed[str(s)]["score"] for s in args.seeds if str(s) in by_seed]
        if res["kept"]
        else [res["base"]] * len(args.seeds)
    )
    save()


def fmt(x) -> str:
    return "" if x is None else f"{x:.1f}"


def summary_rows(results: dict) -> tuple[list[str], dict]:
    lines, deltas = [], {"classification": [], "generation": []}
    for name, r in results["tasks"].items():
        tuned = r.get("tuned") or []
        if "base" not in r:
            continue
        mean = statistics.mean(tuned) if tuned else None
        sd = statistics.stdev(tuned) if len(tuned) > 1 else None
        delta = mean - r["base"] if mean is not None else None
        if delta is not None and len(tuned) == 3:
            deltas[r["type"]].append((name, delta))
        worst = min(tuned) - r["base"] if tuned else None
        filtered = ", ".join(
            f"{k} {v}" for k, v in sorted((r.get("filtered") or {}).items(), key=lambda kv: -kv[1])
        )
        lines.append(
            f"| {name} | {r['type'][:3]} | {r['n']} | {fmt(r.get('trivial'))} | "
            f"{fmt(r['base'])} | {' / '.join(fmt(x) for x in tuned)} | {fmt(mean)} | "
            f"{fmt(sd)} | {'' if delta is None else f'{delta:+.1f}'} | "
            f"{'' if worst is None else f'{worst:+.1f}'} | {r.get('kept', '')} | "
            f"{filtered} |"
        )
    return lines, deltas


def machine_lines(results: dict) -> list[str]:
    """The machine of each task's figures (timings differ from one to another)."""
    by: dict[str, list[str]] = {}
    for name, r in results["tasks"].items():
        by.setdefault(r.get("machine", results["machine"]), []).append(name)
    if len(by) <= 1:
        return [f"- machine: {next(iter(by), results['machine'])}"]
    return [f"- machine of {', '.join(names)}: {m}" for m, names in by.items()]


def settings(results: dict) -> str:
    """The parameters the figures used: the defaults, or those with what --set and --train-set
    changed."""
    changed = {
        json.dumps(r["params"], sort_keys=True)
        for r in results["tasks"].values()
        if isinstance(r.get("params"), dict)
    }
    if not changed:
        return "defaults of `sgtui run` (small mode)"
    return "defaults of `sgtui run` (small mode) but " + "; ".join(
        ", ".join(f"{k}={v}" for k, v in json.loads(c).items()) for c in sorted(changed)
    )


def generation_seed(entry: dict) -> int:
    """The generation seed (`--set seed=N`, else 0) of a task entry's synthesis run."""
    params = entry.get("params")
    return params.get("seed", 0) if isinstance(params, dict) else 0


def synthesis_seeds(results: dict) -> list:
    """The generation seeds of the tasks' synthesis runs."""
    return sorted({generation_seed(r) for r in results["tasks"].values()})


def epochs_text(results: dict) -> str:
    """ "the default epochs", or the epochs of the tasks trained for others (--epochs)."""
    from sgtui.training import TrainParams

    other = {
        name: r["epochs"]
        for name, r in results["tasks"].items()
        if r.get("epochs") and r["epochs"] != TrainParams.for_task(r["type"]).epochs
    }
    if not other:
        return "the default epochs"
    if len(set(other.values())) == 1 and len(other) == len(results["tasks"]):
        return f"{next(iter(other.values()))} epochs"
    return "the default epochs but " + ", ".join(f"{t} {n}" for t, n in other.items())


def table(results: dict) -> str:
    lines, deltas = summary_rows(results)
    out = [
        "# Base against fine-tune, over training seeds "
        f"({results.get('model', 'bundled SmolLM2-135M-Instruct')})",
        "",
        *machine_lines(results),
        "- commands: " + "; ".join(f"`{c}`" for c in results["commands"]),
        f"- {settings(results)}, one synthesis run per task (generation seed "
        f"{'/'.join(map(str, synthesis_seeds(results)))}), one training per seed at "
        f"{epochs_text(results)}, no epoch choice; greedy "
        "decoding through llama.cpp with the exported GGUF adapter",
        "- scores x100: exact match (classification), word-level ROUGE-L (generation)",
        "",
        "| task | type | rows | trivial | base | tuned per seed | mean | sd | mean - base | "
        "worst seed - base | kept | filtered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *lines,
        "",
    ]
    out += [f"- {name}: {r['note']}" for name, r in results["tasks"].items() if r.get("note")]
    for kind, ds in deltas.items():
        if ds:
            mean = statistics.mean(d for _, d in ds)
            worst = min(ds, key=lambda x: x[1])
            out.append(
                f"- {kind}: mean {mean:+.1f} over {len(ds)} tasks with 3 seeds; worst "
                f"task {worst[0]} {worst[1]:+.1f}"
            )
    return "\n".join(out) + "\n"


def parse_set(spec: str) -> dict:
    out = {}
    for item in filter(None, spec.split(",")):
        k, v = item.split("=", 1)
        out[k] = json.loads(v) if v[:1] in "0123456789-[{tf" or v in ("true", "false") else v
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(OWN_TASKS + NI_TASKS))
    ap.add_argument("--seeds", default="42,1,2")
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: the task type's default, docs/TRAINING.md)",
    )
    ap.add_argument("--set", default="", help="run parameters to override, key=value,...")
    ap.add_argument(
        "--train-set", default="", help="training parameters to override, key=value,..."
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quality"))
    ap.add_argument(
        "--model",
        default=None,
        help="a GGUF model (default: the bundled SmolLM2-135M-Instruct); give it its own --out",
    )
    ap.add_argument(
        "--restart",
        default="",
        help="tasks whose recorded results are dropped first (a new synthesis run, new seeds)",
    )
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.set = parse_set(args.set)
    args.train_set = parse_set(args.train_set)
    out = Path(args.out)
    out_json, out_md = out.with_suffix(".json"), out.with_suffix(".md")
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    results.setdefault("tasks", {})
    for name in filter(None, args.restart.split(",")):
        task, _, _ = task_and_rows(name, args.eval_limit)
        results["tasks"].pop(task.name, None)
    results["machine"] = machine()
    command = "python bench/quality.py " + " ".join(sys.argv[1:])
    results["commands"] = [c for c in results.get("commands", []) if c != command] + [command]
    results["command"] = "; ".join(results["commands"])
    work = work_dir()
    from sgtui.paths import bundled_model
    from sgtui.store import Store

    store = Store(work / f"{out.name}.db")
    model = str(Path(args.model).resolve()) if args.model else str(bundled_model())
    if args.model:
        results["model"] = Path(args.model).name

    def save() -> None:
        out_json.write_text(json.dumps(results, indent=1))
        out_md.write_text(table(results))

    for name in args.tasks.split(","):
        run_task(name, args, results, save, store, model)
    print(out_md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
