"""The whole SELF-GUIDE loop on Natural-Instructions tasks with the bundled model.

For each task: the trivial baseline and the base model's few-shot score on the test split,
then, per input-generation mode (paper, small): generate -> filter -> train -> evaluate the
fine-tuned model through llama.cpp with the exported adapter. Writes a markdown table and the
raw figures to bench/results/. Results are kept per (task, mode) in the JSON file, so an
interrupted benchmark continues where it stopped.

    .venv/bin/python bench/ni_loop.py --tasks task937,task200,task1195,task036 \
        --rounds 10 --eval-limit 50
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgtui import evaluation as ev  # noqa: E402
from sgtui.config import RunParams  # noqa: E402
from sgtui.loop import base_scores, self_guide  # noqa: E402
from sgtui.paths import bundled_model, shared_ni  # noqa: E402
from sgtui.store import Store  # noqa: E402
from sgtui.task import load_task  # noqa: E402

# classification and generation interleaved, so that a partial run covers both types
ALL = ["task937", "task1195", "task190", "task121", "task199", "task036", "task200", "task039",
       "task738", "task1385", "task1386"]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()}, no GPU"


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
        params = RunParams.defaults_for(task.type, mode).override(rounds=rounds)
        res[mode] = self_guide(store, task, params, rows, model, res["max_tokens"],
                               epochs=args.epochs, split=split)
        out_json.write_text(json.dumps(results, indent=1))
        print(f"{name} {mode}: {res[mode]}", flush=True)


def fmt(x) -> str:
    return "—" if x is None else f"{x:.1f}"


def table(results: dict, args, command: str) -> str:
    lines = [f"# SELF-GUIDE loop on Natural-Instructions tasks (bundled SmolLM2-135M-Instruct)", "",
             f"- machine: {machine()}",
             f"- parameters: rounds x 10 prompts: small mode {args.rounds or 'default'}, paper "
             f"mode {args.paper_rounds or 'default'}; other parameters the mode's defaults "
             f"(docs/METHOD.md); LoRA epochs {args.epochs}, other training defaults "
             f"(docs/TRAINING.md); eval on the first {args.eval_limit} rows of a seeded shuffle of "
             "each test split, greedy, through llama.cpp",
             f"- command: `{command}`",
             "- scores x100: exact match (classification), word-level ROUGE-L (generation)", "",
             "| task | type | trivial | base few-shot | paper mode | small mode | kept (paper / small) | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    avg: dict[str, dict[str, list]] = {}
    for name, r in results.items():
        if "base" not in r:
            continue
        cells = [r.get(m, {}) for m in ("paper", "small")]
        minutes = r.get("base_minutes", 0) + sum(c.get("minutes", 0) for c in cells)
        lines.append(f"| {name} | {r['type'][:3]} | {fmt(r['trivial'])} | {fmt(r['base'])} | "
                     f"{fmt(cells[0].get('score'))} | {fmt(cells[1].get('score'))} | "
                     f"{cells[0].get('kept', '—')} / {cells[1].get('kept', '—')} | {minutes:.1f} |")
        a = avg.setdefault(r["type"], {k: [] for k in ("trivial", "base", "paper", "small")})
        a["trivial"].append(r["trivial"])
        a["base"].append(r["base"])
        for m, c in zip(("paper", "small"), cells):
            a[m].append(c.get("score") if c.get("score") is not None else r["base"]
                        if c.get("note") else None)
    for typ, a in avg.items():
        def mean(v):
            v = [x for x in v if x is not None]
            return sum(v) / len(v) if v else None
        lines.append(f"| **average ({typ})** | | {fmt(mean(a['trivial']))} | {fmt(mean(a['base']))} | "
                     f"{fmt(mean(a['paper']))} | {fmt(mean(a['small']))} | | |")
    lines += ["", "Where a mode kept no sample, nothing is trained and the average counts the base "
              "score for it (the tool refuses to fine-tune)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(ALL))
    ap.add_argument("--modes", default="paper,small")
    ap.add_argument("--rounds", type=int, default=None,
                    help="small-mode rounds (default: the mode's default per task type)")
    ap.add_argument("--paper-rounds", type=int, default=None,
                    help="paper-mode rounds (default: the paper's 40 / 20; a paper-mode round "
                         "is ten 500-token completions, minutes each on a CPU)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eval-limit", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ni_loop"))
    args = ap.parse_args()
    args.modes = args.modes.split(",")
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
    for name in args.tasks.split(","):
        run_task(name, args, results, out_json, store, model)
        out.with_suffix(".md").write_text(table(results, args, command))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
