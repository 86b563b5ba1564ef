"""A change measured against the defaults on the same sample sets and the same training seeds.

`bench/quality.py` result files of the defaults (one per generation seed) and of a variant
trained or filtered on copies of the same synthesis runs: for every task and sample set, the
two fine-tunes of one training seed are scored on the same rows, so their difference is the
change's effect plus training noise only, without the sample set's own spread
(bench/results/synth-seeds.md). Renders OUT.md.

    python bench/paired.py --defaults bench/results/quality.json bench/results/synth-seed-2.json \
        --variant bench/results/epochs-4-s0.json bench/results/epochs-4-s2.json \
        --seed 42 --title "4 epochs" --out bench/results/epochs-4

--seed takes several training seeds (42,1): a table for each, then the differences over all.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import generation_seed  # noqa: E402  (bench/quality.py)


def scores(paths: list[str], seed: str) -> dict[tuple[str, int], tuple[float, float]]:
    """(task, generation seed) -> (base, tuned with this training seed), where it was trained."""
    out = {}
    for path in paths:
        for task, entry in json.loads(Path(path).read_text())["tasks"].items():
            tuned = (entry.get("by_seed") or {}).get(seed)
            if tuned is not None:
                out[(task, generation_seed(entry))] = (entry["base"], tuned["score"])
    return out


def table(defaults: dict, variant: dict, pairs: list) -> list[str]:
    """One training seed's pairs: a row per task, a column per sample set."""
    sets = sorted({g for _, g in pairs})
    tasks = list(dict.fromkeys(t for t, _ in pairs))
    lines = [
        "| task | " + " | ".join(f"seed {g}" for g in sets) + " | mean difference |",
        "|---|" + "---|" * (len(sets) + 1),
    ]
    for task in tasks:
        cells, mine = [], []
        for g in sets:
            p = (task, g)
            if p not in pairs:
                cells.append("")
                continue
            base, d, v = defaults[p][0], defaults[p][1], variant[p][1]
            mine.append(v - d)
            cells.append(f"{d - base:+.1f} -> {v - base:+.1f} ({v - d:+.1f})")
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {statistics.mean(mine):+.1f} |")
    return lines


def summary(values: list[float], what: str) -> str:
    # the standard error treats the pairs as independent; pairs of one sample set or one
    # training seed share it, so it is a lower bound on the real uncertainty
    se = (
        f" (standard error {statistics.stdev(values) / len(values) ** 0.5:.2f})"
        if len(values) > 1
        else ""
    )
    return (
        f"- {what}: {len(values)} pairs, mean difference {statistics.mean(values):+.2f}{se}, "
        f"{sum(v > 0 for v in values)} higher, {sum(v < 0 for v in values)} lower, "
        f"{sum(v == 0 for v in values)} equal"
    )


def render(
    defaults: dict, variant: dict, title: str, files: list[str], seeds: list[str], command: str
) -> str:
    """defaults and variant: training seed -> scores(); a table per training seed, and the
    per-task and overall differences over all of them."""
    lines = [
        f"# {title} against the defaults, paired (bundled SmolLM2-135M-Instruct)",
        "",
        f"- command: `{command}`",
        "- from: " + ", ".join(f"`{f}`" for f in files),
        "- each cell: the same sample set (generation seed in the column), the same training "
        f"seed, scored on the same rows; tuned minus base with the defaults -> with {title} "
        "(difference), x100",
    ]
    every: dict[str, list[float]] = {}
    shown = 0  # training seeds with a pair
    for seed in seeds:
        pairs = sorted(set(defaults[seed]) & set(variant[seed]))
        if not pairs:
            continue
        lines += ["", f"## Training seed {seed}", ""]
        lines += table(defaults[seed], variant[seed], pairs)
        diff = [variant[seed][p][1] - defaults[seed][p][1] for p in pairs]
        lines += ["", summary(diff, f"training seed {seed}")]
        shown += 1
        for (task, _), d in zip(pairs, diff):
            every.setdefault(task, []).append(d)
    if not every:
        sys.exit("no task and sample set is in both the defaults and the variant")
    if shown > 1:
        lines += ["", "## Every training seed", ""]
        lines += [summary(v, task) for task, v in every.items()]
        lines.append(summary([d for v in every.values() for d in v], "all"))
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--defaults", nargs="+", required=True)
    ap.add_argument("--variant", nargs="+", required=True)
    ap.add_argument("--seed", default="42", help="the training seeds to compare, comma-separated")
    ap.add_argument("--title", required=True, help="what the variant changed, in words")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    seeds = args.seed.split(",")
    text = render(
        {s: scores(args.defaults, s) for s in seeds},
        {s: scores(args.variant, s) for s in seeds},
        args.title,
        args.defaults + args.variant,
        seeds,
        "python bench/paired.py " + shlex.join(sys.argv[1:]),
    )
    Path(args.out).with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
