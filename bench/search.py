"""The max-min search's results, rendered: the live `sgtui search` runs, and the epochs axis of
the small mode over every NI task the loop benchmark finished.

The loop benchmark with --select (bench/ni_loop.py) scores, for each task, the base model and
each epoch's checkpoint of the small-mode training on the first --eval-limit rows of a seeded
shuffle of the validation split (50 in bench/results/ni_loop.json). That is the cell `sgtui
search` measures for the configuration {"mode": "small", "epochs": e} with that --eval-limit
and the one training seed 42 (sgtui.search.real_measure: same rows, the checkpoint after e
epochs, from a synthesis and training of its own). This script feeds those cells through
sgtui.search.run_search as one-seed cells, so the ranking is the search's own max-min code,
over all the tasks instead of a few. A live search's cells show the mean ± sd over their
seeds.

    .venv/bin/python bench/search.py --live-db bench/.work-search/search.db --live-name gen
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (bench/machine.py)

from sgtui.search import cell_scores, mean_sd, rank, run_search  # noqa: E402
from sgtui.store import Store  # noqa: E402


def loop_cells(results: dict) -> tuple[list[dict], list[str], callable]:
    tasks = [
        n
        for n, r in results.items()
        if not n.startswith("_") and r.get("small", {}).get("selected")
    ]
    configs = [{"mode": "small", "epochs": e} for e in (1, 2, 3)]

    def measure(config: dict, task: str, seed: int, note) -> dict:
        r = results[task]
        val = {int(k): v for k, v in r["small"]["selected"]["val_scores"].items()}
        return {
            "task_type": r["type"],
            "base": val[0],
            "score": val.get(config["epochs"]),
            "run": r["small"]["run"],
            "from": "bench/results/ni_loop.json",
        }

    return configs, tasks, measure


def mean_sd_text(scores: list[float]) -> str:
    mean, sd = mean_sd(scores)
    return f"{mean:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")


def ranking_lines(ranking, title: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| task type | configuration | minimum Δ | Δ per task (score: mean ± sd over seeds) |",
        "|---|---|---|---|",
    ]
    for r in ranking:
        per = ", ".join(
            f"{t} {d:+.1f} ({mean_sd_text(r.scores[t])})" for t, d in sorted(r.deltas.items())
        )
        lines.append(
            f"| {r.task_type} | `{json.dumps(r.config, sort_keys=True)}` | "
            f"{r.min_delta:+.1f} | {per} |"
        )
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loop", default=str(ROOT / "bench" / "results" / "ni_loop.json"))
    ap.add_argument("--live-db", default="", help="the database of a live `sgtui search`")
    ap.add_argument(
        "--live-name",
        action="append",
        default=[],
        help="a search's --name in that database (repeat for several)",
    )
    ap.add_argument(
        "--live-command",
        action="append",
        default=[],
        help="the command that ran it (one per --live-name, in the same order)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "search.md"))
    args = ap.parse_args()
    lines = [
        "# The max-min search (bundled SmolLM2-135M-Instruct)",
        "",
        "Δ: score minus the base model's few-shot score on the same validation rows "
        "(x100; exact match for classification, word-level ROUGE-L for generation). "
        "A configuration ranks by its minimum Δ over the tasks of its type.",
        "",
        f"Machine: {describe()}. Each cell: the first --eval-limit rows of a seeded shuffle "
        "of the task's validation split, greedy, through llama.cpp, one score per "
        "training seed; the other parameters the defaults of their time (docs/METHOD.md, "
        "docs/TRAINING.md).",
        "",
    ]
    store = Store(args.live_db) if args.live_db else None
    for i, name in enumerate(args.live_name if store else []):
        cells = store.search_cells(name)
        lines += ranking_lines(
            rank(store, name), f"Live `sgtui search --name {name}` ({len(cells)} cells)"
        )
        if i < len(args.live_command):
            lines += [f"Command: `{args.live_command[i]}`", ""]
        lines += [
            "| task | configuration | base | score per seed | mean ± sd | kept | minutes |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in cells:
            cell = json.loads(c["cell"])
            if c["score"] is None:  # stopped before its first seed was scored
                continue
            scores = cell_scores(c)
            pending = f" ({len(cell['pending'])} seed(s) to go)" if cell.get("pending") else ""
            lines.append(
                f"| {c['task']} | `{c['config']}` | {c['base']:.1f} | "
                f"{' / '.join(f'{x:.1f}' for x in scores)} | "
                f"{mean_sd_text(scores)}{pending} | {cell.get('kept', '—')} | "
                f"{cell.get('minutes', 0):.1f} |"
            )
        lines.append("")
    results = json.loads(Path(args.loop).read_text())
    configs, tasks, measure = loop_cells(results)
    store = Store(":memory:")
    # the loop benchmark trained each task once, with the training seed 42
    ranking = run_search(store, "epochs", configs, tasks, measure, seeds=[42], log=lambda s: None)
    lines += ranking_lines(
        ranking,
        f"The small mode's epochs axis over {len(tasks)} NI tasks "
        "(cells from bench/results/ni_loop.json)",
    )
    lines += ["Command: `python bench/search.py " + shlex.join(sys.argv[1:]) + "`", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
