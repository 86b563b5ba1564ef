"""Did the model train on the test? The kept inputs of a benchmark's runs against its test rows.

A fine-tune scored on rows whose inputs it was trained on would show a gain that says nothing
of the method. The inputs are written by the model from the task's seed examples, which come
from the task's own examples, not its test split; this checks that none came out as a copy of a
test input. For each task of a bench/quality.py result it takes the kept training inputs of its
synthesis run (bench/.work/NAME.db; bench/resynth.py makes it on a new checkout) and the rows
the result was scored on, and counts the inputs whose word-level ROUGE-L to the nearest test
input reaches 0.7 (the near-copy filter's threshold) and 1.0. The seed inputs get the same
count beside them: how close the task's own examples already are to its test rows. With
--answers, each kept input that is a test input word for word is listed with the answer it was
trained on and the test row's gold answer: what the fine-tune learned about that very row.

    python bench/overlap.py bench/results/quality.json bench/results/synth-seed-1.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NEAR = 0.7


def nearest(text: str, rows: list[tuple[str, set[str]]]) -> float:
    """The highest ROUGE-L of `text` to any row input. Rows sharing under a third of their
    words with it cannot reach NEAR, so only the others are scored."""
    from sgtui.filters import rouge_l

    words = set(re.findall(r"\w+", text.lower()))
    best = 0.0
    for row, row_words in rows:
        union = len(words | row_words) or 1
        if len(words & row_words) / union < 0.3:
            continue
        best = max(best, rouge_l(text, row))
    return best


def cell(text: str) -> str:
    """Text for one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="bench/quality.py results (bench/results/NAME.json)")
    ap.add_argument("--out", help="also write the table, with its command, to this markdown file")
    ap.add_argument(
        "--answers",
        action="store_true",
        help="list the kept inputs that are test inputs with their trained and gold answers",
    )
    args = ap.parse_args()
    from machine import describe
    from quality import task_and_rows, work_dir

    work = work_dir()

    from sgtui.metrics import rouge_l_word
    from sgtui.store import Store, task_of

    lines = [
        "# Kept inputs against the test rows they were scored on",
        "",
        f"- command: `python bench/overlap.py {' '.join(sys.argv[1:])}`",
        f"- machine: {describe()}",
        f"- each kept training input's word-level ROUGE-L to its nearest test input; >= {NEAR} "
        "is the near-copy filter's threshold; the seed inputs' count is the task's own; "
        "highest 0.00: no test input shares a third of a kept input's words",
        "",
        "| result | task | kept inputs | >= 0.7 | = 1.0 | seed inputs >= 0.7 | highest |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines[-2:]))
    copies: list[str] = []
    for path in map(Path, args.results):
        results = json.loads(path.read_text())
        db = work / f"{path.stem}.db"
        if not db.is_file():
            sys.exit(f"{db}: not here; make it with `python bench/resynth.py {path}`")
        store = Store(db)
        # a run id of this database holding this task (a result's tasks may come from several)
        runs = {(r["id"], task_of(r).name) for r in store.runs()}
        for name, entry in results["tasks"].items():
            if "run" not in entry or (entry["run"], name) not in runs:
                continue  # not rebuilt here (bench/resynth.py --tasks)
            task, rows, _ = task_and_rows(name, entry["n"])
            test = [(r["input"], set(re.findall(r"\w+", r["input"].lower()))) for r in rows]
            pairs = store.training_pairs(entry["run"])
            kept = [p["input"] for p in pairs]
            scores = [nearest(x, test) for x in kept]
            seeds = [nearest(x, test) for x in task.seed_inputs]
            lines.append(
                f"| {path.stem} | {name} | {len(kept)} | {sum(s >= NEAR for s in scores)} | "
                f"{sum(s >= 1.0 for s in scores)} | {sum(s >= NEAR for s in seeds)} of "
                f"{len(seeds)} | {max(scores, default=0):.2f} |"
            )
            print(lines[-1], flush=True)
            gold = {r["input"].strip(): r["output"] for r in rows}
            for p, score in zip(pairs, scores):
                if args.answers and score >= 1.0 and p["input"].strip() in gold:
                    g = gold[p["input"].strip()]
                    copies.append(
                        f"| {path.stem} | {name} | {cell(p['input'])} | {cell(p['output'])} "
                        f"| {cell(g)} | {100 * rouge_l_word(p['output'], g):.0f} |"
                    )
    if copies:
        lines += [
            "",
            "Kept inputs that are test inputs word for word: the answer trained on against the "
            "test row's gold answer (word-level ROUGE-L x100):",
            "",
            "| result | task | input | trained answer | gold answer | ROUGE-L |",
            "|---|---|---|---|---|---|",
            *copies,
        ]
        print("\n".join(lines[-len(copies) - 2 :]))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
