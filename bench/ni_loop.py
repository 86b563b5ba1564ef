"""The whole SELF-GUIDE loop on Natural-Instructions tasks with the bundled model.

For each task: the trivial baseline and the base model's few-shot score on the test split,
then, per input-generation mode (paper, small): generate -> filter -> train -> evaluate the
fine-tuned model through llama.cpp with the exported adapter. Writes a markdown table and the
raw figures to bench/results/. Results are kept per (task, mode) in the JSON file, so an
interrupted benchmark continues where it stopped.

    .venv/bin/python bench/ni_loop.py --tasks task937,task200,task1195,task036 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe as machine  # noqa: E402  (bench/machine.py)

from sgtui import evaluation as ev  # noqa: E402
from sgtui.config import RunParams  # noqa: E402
from sgtui.loop import base_scores, self_guide  # noqa: E402
from sgtui.paths import bundled_model, shared_ni  # noqa: E402
from sgtui.store import Store  # noqa: E402
from sgtui.task import load_task  # noqa: E402

# classification and generation interleaved, so that a partial run covers both types
ALL = [
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


def run_task(name: str, args, results: dict, out_json: Path, store: Store, model: str) -> None:
    task = load_task(shared_ni() / name)
    rows, split = ev.load_rows(f"{name}:test", args.eval_limit, seed=0)
    res = results.setdefault(name, {"type": task.type, "metric": task.metric, "n_eval": len(rows)})
    if "base" not in res:
        b = base_scores(task, rows, model)
        res.update(trivial=b.trivial, base=b.base, max_tokens=b.max_tokens, base_minutes=b.minutes)
        out_json.write_text(json.dumps(results, indent=1))
    for mode in args.modes:
        if mode in res:
            continue
        rounds = args.paper_rounds if mode == "paper" else args.rounds
        params = RunParams.defaults_for(task.type, mode).override(rounds=rounds, **args.set)
        res[mode] = self_guide(
            store, task, params, rows, model, res["max_tokens"], epochs=args.epochs, split=split
        )
        if args.set:
            res[mode]["set"] = args.set  # shown in the table: not the mode's defaults
        out_json.write_text(json.dumps(results, indent=1))
        print(f"{name} {mode}: {res[mode]}", flush=True)
    if args.select:
        for mode in args.modes:
            cell = res.get(mode, {})
            if cell.get("score") is None or "selected" in cell:
                continue
            select(name, task, res, cell, args, store, model, split)
            out_json.write_text(json.dumps(results, indent=1))
            print(f"{name} {mode} epoch on validation: {cell['selected']}", flush=True)


def select(
    name: str, task, res: dict, cell: dict, args, store: Store, model: str, split: str
) -> None:
    """Choose the epoch (0 = the base model) on validation rows, then score it on test."""
    from sgtui.loop import score_epoch, select_epoch

    t = time.monotonic()
    val_rows, val_split = ev.load_rows(f"{name}:validation", args.eval_limit, seed=0)
    chosen = select_epoch(
        store,
        cell["run"],
        task,
        val_rows,
        model,
        res["max_tokens"],
        val_split,
        base_score=res.get("base_val"),
    )
    res["base_val"] = chosen["scores"][0]
    k, last = chosen["epoch"], max(chosen["scores"])
    if k == 0:
        score = res["base"]
    elif k == last:
        score = cell["score"]
    else:  # the checkpoint after k epochs, on the test rows (exported again: a second or two)
        rows, _ = ev.load_rows(f"{name}:test", args.eval_limit, seed=0)
        score, _ = score_epoch(store, cell["run"], k, task, rows, model, res["max_tokens"], split)
    cell["selected"] = {
        "epoch": k,
        "val_scores": chosen["scores"],
        "score": score,
        "minutes": (time.monotonic() - t) / 60,
    }


def parse_set(spec: str) -> dict:
    """ "key=value,..." -> typed RunParams overrides."""
    from dataclasses import fields

    types = {f.name: type(getattr(RunParams(), f.name)) for f in fields(RunParams)}
    out = {}
    for part in filter(None, spec.split(",")):
        key, _, value = part.partition("=")
        if key not in types:
            raise SystemExit(f"--set: unknown run parameter {key!r}")
        cast = types[key]
        out[key] = value.lower() in ("1", "true", "on") if cast is bool else cast(value)
    return out


def overrides(cell: dict, notes: list[str]) -> str:
    """The footnote mark of a cell run with --set overrides ("" for the mode's defaults)."""
    if not cell.get("set"):
        return ""
    text = ", ".join(f"{k}={v}" for k, v in sorted(cell["set"].items()))
    if text not in notes:
        notes.append(text)
    return "*" * (notes.index(text) + 1)


def fmt(x) -> str:
    return "—" if x is None else f"{x:.1f}"


def score(cell: dict) -> str:
    """A mode's score, or why there is none (nothing survived the filters: nothing trained)."""
    return "none kept" if cell.get("note") else fmt(cell.get("score"))


def table(results: dict, args, command: str) -> str:
    lines = [
        "# SELF-GUIDE loop on Natural-Instructions tasks (bundled SmolLM2-135M-Instruct)",
        "",
        f"- machine: {machine()}",
        f"- parameters: rounds x 10 prompts: small mode {args.rounds or 'default'}, paper "
        f"mode {args.paper_rounds or 'default'}; other parameters the mode's defaults "
        f"(docs/METHOD.md); LoRA epochs {args.epochs}, other training defaults "
        f"(docs/TRAINING.md); eval on the first {args.eval_limit} rows of a seeded shuffle of "
        "each test split, greedy, through llama.cpp",
        "- commands (each continues the results of the ones before): "
        + ", ".join(f"`{c}`" for c in results.get("_commands", [command])),
        "- scores x100: exact match (classification), word-level ROUGE-L (generation)",
        "- small mode, epoch on val: the epoch (0 = the base model, no fine-tune) with the "
        f"best score on the first {args.eval_limit} rows of a seeded shuffle of the task's "
        "validation split, scored on the test rows; the epoch chosen in brackets",
        "",
        "| task | type | trivial | base few-shot | paper mode | small mode (3 epochs) | "
        "small mode, epoch on val | kept (paper / small) | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cols = ("trivial", "base", "paper", "small", "selected")
    notes: list[str] = []  # parameter overrides (--set), one footnote mark each
    avg: dict[str, dict[str, list]] = {}
    for name, r in results.items():
        if name.startswith("_") or "base" not in r:
            continue
        paper, small = r.get("paper", {}), r.get("small", {})
        sel = small.get("selected", {})
        minutes = r.get("base_minutes", 0) + sum(c.get("minutes", 0) for c in (paper, small, sel))
        chosen = f"{fmt(sel['score'])} [{sel['epoch']}]" if sel else "—"
        mark = {m: overrides(c, notes) for m, c in (("paper", paper), ("small", small))}
        lines.append(
            f"| {name} | {r['type'][:3]} | {fmt(r['trivial'])} | {fmt(r['base'])} | "
            f"{score(paper)}{mark['paper']} | {score(small)}"
            f"{mark['small']} | {chosen}{mark['small'] if sel else ''} | "
            f"{paper.get('kept', '—')} / {small.get('kept', '—')} | {minutes:.1f} |"
        )
        if small.get("score") is None and not small.get("note"):
            continue  # not finished: the averages compare the same tasks in every column
        a = avg.setdefault(r["type"], {k: [] for k in cols})
        a["trivial"].append(r["trivial"])
        a["base"].append(r["base"])
        for m, c in (("paper", paper), ("small", small)):
            a[m].append(
                c.get("score")
                if c.get("score") is not None
                else r["base"]
                if c.get("note")
                else None
            )
        a["selected"].append(sel.get("score"))

    def mean(v):
        v = [x for x in v if x is not None]
        return f"{fmt(sum(v) / len(v))} ({len(v)})" if v else "—"

    for typ, a in avg.items():
        lines.append(
            f"| **average ({typ})** | | " + " | ".join(mean(a[c]) for c in cols) + " | | |"
        )
    lines += [
        "",
        "Against the targets of the small mode (points, small mode minus base few-shot; "
        "worst task in brackets):",
        "",
    ]
    for typ in avg:
        rows = [
            (n, r)
            for n, r in results.items()
            if not n.startswith("_")
            and "base" in r
            and r["type"] == typ
            and r.get("small", {}).get("score") is not None
        ]
        for label, get in (
            ("3 epochs", lambda r: r["small"]["score"]),
            ("epoch on val", lambda r: r["small"].get("selected", {}).get("score")),
        ):
            d = [(get(r) - r["base"], n) for n, r in rows if get(r) is not None]
            if not d:
                continue
            worst = min(d)
            lost = [
                n
                for n, r in rows
                if get(r) is not None and r["base"] > r["trivial"] and get(r) <= r["trivial"]
            ]
            lines.append(
                f"- {typ}, {label}: mean {sum(x for x, _ in d) / len(d):+.1f} over "
                f"{len(d)} tasks (target +5.0); worst {worst[0]:+.1f} ({worst[1]}; "
                f"target no worse than -2.0); at or below the trivial baseline where "
                f"the base beats it: {', '.join(lost) or 'none'}"
            )
    lines += [""] + [f"{'*' * (i + 1)} run with {n} (`--set`)" for i, n in enumerate(notes)]
    lines += [
        "",
        "Averages are over the tasks whose small-mode run finished (how many in "
        "brackets). Where a mode kept no sample, nothing is trained and the average counts "
        "the base score for it (the tool refuses to fine-tune).",
        "",
        "A reading of these figures, with the samples behind them: ni_loop-notes.md.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(ALL))
    ap.add_argument("--modes", default="paper,small")
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="small-mode rounds (default: the mode's default per task type)",
    )
    ap.add_argument(
        "--paper-rounds",
        type=int,
        default=None,
        help="paper-mode rounds (default: the paper's 40 / 20; a paper-mode round "
        "is ten 500-token completions, minutes each on a CPU)",
    )
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument(
        "--eval-limit",
        type=int,
        default=200,
        help="rows scored per split: the first N of a seeded shuffle, or all "
        "where fewer (default 200)",
    )
    ap.add_argument(
        "--select",
        action="store_true",
        help="also choose the epoch (0 = no fine-tune) on the validation split",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ni_loop"))
    ap.add_argument(
        "--merge",
        default="",
        help="comma-separated result JSON files of other invocations (for example "
        "runs pinned to one core each) to fold into --out; runs nothing",
    )
    ap.add_argument(
        "--set",
        default="",
        help="run parameters to override in every mode, key=value,... (for "
        "example gen_temperature=0.7); the defaults are docs/METHOD.md's",
    )
    args = ap.parse_args()
    args.modes = args.modes.split(",")
    args.set = parse_set(args.set)
    if shared_ni() is None:
        print("the Natural-Instructions tasks (../shared/ni) are not beside the project")
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out_json = out.with_suffix(".json")
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    work = Path(os.environ.get("SGTUI_HOME") or ROOT / "bench" / ".work")
    os.environ["SGTUI_HOME"] = str(work)
    store = Store(work / "bench.db")
    model = str(bundled_model())
    command = "python bench/ni_loop.py " + " ".join(sys.argv[1:])
    commands = results.setdefault("_commands", [])
    if args.merge:
        for f in filter(None, args.merge.split(",")):
            other = json.loads(Path(f).read_text())
            for c in other.pop("_commands", []):
                if c not in commands:
                    commands.append(c)
            for name, r in other.items():
                results.setdefault(name, {}).update(r)
        out_json.write_text(json.dumps(results, indent=1))
        out.with_suffix(".md").write_text(table(results, args, command))
        print(out.with_suffix(".md").read_text())
        return 0
    if command not in commands:
        commands.append(command)
    for name in args.tasks.split(","):
        run_task(name, args, results, out_json, store, model)
        out.with_suffix(".md").write_text(table(results, args, command))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
