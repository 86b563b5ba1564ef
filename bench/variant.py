"""Start a variant of a benchmark: the same samples, to be decided or drawn again and trained.

A change to the consensus, the answer filters or the annotator is measured on the samples a
benchmark already made (bench/revote.py), so its figures pair with the benchmark's. This makes
the two things that takes: a copy of the benchmark's work database (bench/.work/SOURCE.db, made
with SQLite's backup, so a database in use copies whole) and bench/results/NAME.json, the
source's entries for the tasks asked for without their scores, counts and parameters, so
bench/quality.py trains them again and records what the variant kept.

    python bench/variant.py bench/results/quality.json agree-07 --tasks task036,task039 \\
        --note "consensus threshold 0.7"
    python bench/revote.py bench/.work/agree-07.db --runs 1,2 --set min_agreement=0.7
    python bench/quality.py --tasks task036,task039 --seeds 42 --out bench/results/agree-07 \\
        --set min_agreement=0.7
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# what a training or a synthesis run recorded; a variant records its own
RESULT_KEYS = (
    "by_seed",
    "tuned",
    "epochs",
    "kept",
    "candidates",
    "filtered",
    "warnings",
    "params",
    "note",
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="a bench/quality.py result, bench/results/SOURCE.json")
    ap.add_argument("name", help="the variant's name: bench/.work/NAME.db, bench/results/NAME.json")
    ap.add_argument("--tasks", help="comma-separated; default: every task of the source")
    ap.add_argument("--note", default="", help="what the variant changes")
    args = ap.parse_args()
    from quality import work_dir

    source = Path(args.source)
    results = json.loads(source.read_text())
    names = args.tasks.split(",") if args.tasks else list(results["tasks"])
    missing = [n for n in names if n not in results["tasks"]]
    if missing:
        sys.exit(f"{source}: no task {', '.join(missing)}; it has {', '.join(results['tasks'])}")
    work = work_dir()
    src_db, db = work / f"{source.stem}.db", work / f"{args.name}.db"
    out = ROOT / "bench" / "results" / f"{args.name}.json"
    if not src_db.is_file():
        sys.exit(f"{src_db}: not here; make it with `python bench/resynth.py {source}`")
    for path in (db, out):
        if path.exists():
            sys.exit(f"{path}: already there; choose another name or remove it")
    src, dst = sqlite3.connect(src_db), sqlite3.connect(db)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    runs = ", ".join(f"{n} run {results['tasks'][n].get('run')}" for n in names)
    variant = {
        "tasks": {
            n: {k: v for k, v in results["tasks"][n].items() if k not in RESULT_KEYS} for n in names
        },
        "note": f"{source.stem}'s samples ({runs})" + (f": {args.note}" if args.note else ""),
    }
    out.write_text(json.dumps(variant, indent=1) + "\n")
    print(f"{db} and {out}: {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
