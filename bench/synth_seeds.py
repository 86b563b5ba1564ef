"""How much does the sample set move a figure? Tuned minus base over synthesis runs.

bench/quality.py trains 3 seeds on one synthesis run per task, so its spread is training
noise only. This reads several of its result files, each the same defaults with another
generation seed (`--set seed=N`), and puts each task's tuned minus base (the mean over its
training seeds) side by side: per generation seed, their mean, and their spread. The mean
over generation seeds is the figure that a change of the defaults should be judged on.

    .venv/bin/python bench/synth_seeds.py bench/results/quality.json \\
        bench/results/synth-seed-1.json bench/results/synth-seed-2.json \\
        --tasks task036,task039,task1195,task121 --out bench/results/synth-seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import generation_seed  # noqa: E402  (bench/quality.py)


def delta(entry: dict) -> float | None:
    """Tuned minus base, the mean over the training seeds; None before all 3 are done."""
    tuned = entry.get("tuned") or []
    if "base" not in entry or len(tuned) != 3:
        return None
    return statistics.mean(tuned) - entry["base"]


def collect(files: list[Path], tasks: list[str]) -> tuple[list[int], dict[str, dict[int, float]]]:
    """{task: {generation seed: tuned minus base}}; a file's entry that changed another
    parameter than the seed is refused, since it would not measure the same defaults."""
    by_task: dict[str, dict[int, float]] = {t: {} for t in tasks}
    for f in files:
        results = json.loads(f.read_text(encoding="utf-8"))
        for t in tasks:
            entry = results["tasks"].get(t)
            if entry is None:
                continue
            params = entry.get("params")
            other = {k for k in params if k != "seed"} if isinstance(params, dict) else set()
            if other:
                sys.exit(f"{f}: {t} changed {', '.join(sorted(other))}, not only the seed")
            d = delta(entry)
            if d is not None:
                s = generation_seed(entry)
                if s in by_task[t]:
                    sys.exit(f"{f}: {t} has generation seed {s} in two files")
                by_task[t][s] = d
    return sorted({s for by_seed in by_task.values() for s in by_seed}), by_task


def table(files: list[Path], seeds: list[int], by_task: dict[str, dict[int, float]]) -> str:
    out = [
        "# Tuned minus base over synthesis runs (bundled SmolLM2-135M-Instruct)",
        "",
        "- from: " + ", ".join(f"`{f.as_posix()}`" for f in files),
        "- each cell: one synthesis run with that generation seed (`--set seed=N`, otherwise "
        "the defaults), the mean over its 3 training seeds, x100",
        "",
        "| task | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    means = []
    for t, by_seed in by_task.items():
        ds = [by_seed[s] for s in seeds if s in by_seed]
        mean = statistics.mean(ds) if ds else None
        if mean is not None and len(ds) == len(seeds):
            means.append(mean)
        sd = f"{statistics.stdev(ds):.1f}" if len(ds) > 1 else ""
        cells = [f"{by_seed[s]:+.1f}" if s in by_seed else "" for s in seeds]
        m = "" if mean is None else f"{mean:+.1f}"
        out.append(f"| {t} | " + " | ".join(cells) + f" | {m} | {sd} |")
    out.append("")
    per_seed = [
        statistics.mean(by_task[t][s] for t in by_task)
        for s in seeds
        if all(s in by_task[t] for t in by_task)
    ]
    if per_seed:
        out.append(
            "- mean over the tasks, per generation seed: "
            + " / ".join(f"{m:+.1f}" for m in per_seed)
        )
    if means:
        out.append(
            f"- mean over the tasks and the generation seeds: {statistics.mean(means):+.1f} "
            f"({len(means)} tasks with every seed)"
        )
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="bench/quality.py result files")
    ap.add_argument("--tasks", required=True, help="task names, comma-separated")
    ap.add_argument("--out", type=Path, required=True, help="OUT.md is written")
    args = ap.parse_args()
    seeds, by_task = collect(args.files, args.tasks.split(","))
    text = table(args.files, seeds, by_task)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
