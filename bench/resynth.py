"""Rebuild a benchmark's work database from its committed JSON, on a new machine.

bench/.work/ is not committed, so a new checkout has bench/results/NAME.json but not the
samples its seeds were trained on, and cannot train more seeds on them or decide them again
(bench/revote.py). This runs each task's synthesis run again into bench/.work/NAME.db, with the
generation parameters and under the run id the JSON records, and compares what it drew and
kept with the JSON. Synthesis is seeded (each slot's random stream and each draw's sampler
seed), so on the same llama.cpp build it should give the same samples; where the candidates
or the kept count differ it did not, and new trainings cannot be paired with the stored ones.
(The JSON's `filtered` counts are compared as a total: earlier code named some filters
differently.)

    python bench/resynth.py bench/results/synth-seed-1.json
    python bench/resynth.py bench/results/answer-filters-2.json --tasks task039,task036
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="a bench/quality.py result (bench/results/NAME.json)")
    ap.add_argument("--tasks", default="", help="only these tasks (default: every task run)")
    ap.add_argument(
        "--set",
        default="",
        help="run parameters, key=value,...: the defaults of the code that made the JSON where "
        "they differ from today's",
    )
    args = ap.parse_args()
    source = Path(args.json)
    results = json.loads(source.read_text())
    from quality import parse_set, synthesize, task_and_rows, work_dir

    work = work_dir()

    from sgtui.config import RunParams
    from sgtui.errors import SgtuiError
    from sgtui.paths import bundled_model
    from sgtui.store import Store, task_of
    from sgtui.synthesis import create_run

    if results.get("model"):
        sys.exit(f"{source}: made with {results['model']}; this rebuilds bundled-model runs only")
    wanted = set(filter(None, args.tasks.split(",")))
    entries = sorted(
        (
            (r["run"], name, r)
            for name, r in results["tasks"].items()
            if "run" in r and (not wanted or name in wanted)
        ),
    )
    store = Store(work / f"{source.stem}.db")
    model = str(bundled_model())
    differ = 0
    for run_id, name, recorded in entries:
        task, _, _ = task_and_rows(name, 1)
        changed = recorded.get("params")
        generation = {
            k: v
            for k, v in (changed if isinstance(changed, dict) else {}).items()
            if not k.startswith("train ")
        }
        params = RunParams.defaults_for(task.type, "small").override(
            **generation, **parse_set(args.set)
        )
        res: dict = {}
        try:
            there = store.run(run_id)
        except SgtuiError:
            there = None
        if there is not None and (
            task_of(there).name,
            RunParams.from_dict(there["params"]).to_dict(),
        ) != (
            task.name,
            params.to_dict(),
        ):
            sys.exit(
                f"{store.path}: its run {run_id} is not {name} with these parameters; "
                "move the database away"
            )
        if there is None:
            new = create_run(store, task, params, model, "llama-cpp")
            if new != run_id:
                # the JSON names its run by id (and bench/revote.py's --runs with it); no
                # sample refers to the new run yet, so it can take that id
                store.update_run(new, id=run_id)
        # made before, or stopped half-way, the run is resumed by synthesize
        res["run"] = run_id
        synthesize(store, task, params, model, res, lambda: None)
        same = (res["candidates"], res["kept"], sum(res["filtered"].values())) == (
            recorded.get("candidates"),
            recorded.get("kept"),
            sum((recorded.get("filtered") or {}).values()),
        )
        differ += not same
        print(
            f"run {run_id} ({name}): {res['candidates']} candidates, {res['kept']} kept, "
            f"{sum(res['filtered'].values())} filtered; the JSON has "
            f"{recorded.get('candidates')}, {recorded.get('kept')}, "
            f"{sum((recorded.get('filtered') or {}).values())}: "
            + ("the same" if same else "DIFFERENT"),
            flush=True,
        )
    print(f"{store.path}: {len(entries) - differ} of {len(entries)} runs as recorded")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
