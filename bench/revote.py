"""Decide the annotation of a run's stored samples again with the current code.

The input filters that judge one input alone (`InputGenerator.filters`, such as
--form-filter) see only the stored input, and the consensus and the answer filters only the
answers a run stored for each input (`candidates`). So a change to any of them can be
measured on the same generated inputs and the same drawn answers, without decoding again:
copy a benchmark's work database and its JSON without the scores (bench/variant.py), run
this on the copy with the parameters to change, and train on it (bench/quality.py with the
variant's name as --out). It rewrites the samples of the database it is given, so give it a copy. (A filter
of the inputs acts here after the fact: in a real run, a dropped input would also have stayed
out of later prompts.)

With --redraw ADAPTER (one run) the answers are first drawn again, as the run drew them (the
same prompts, sampling parameters and per-sample seeds), by the bundled model with that GGUF
adapter, a fine-tune of the run: the samples a second round of SELF-GUIDE would train on,
where the fine-tune annotates the same inputs.

    python bench/revote.py bench/.work/NEW.db --runs 1,2,3 --set min_agreement=0.3
    python bench/revote.py bench/.work/NEW.db --runs 2 --set form_filter=true
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def redraw(store, rid: int, task, params, adapter: str) -> None:
    """Draw every annotated sample's answers again with the adapter and store them."""
    import backends
    from sgtui.paths import bundled_model
    from sgtui.pipeline import annotation_prompt, annotation_sampling, annotation_seed

    samples = store.annotated(rid)
    gen = backends.load_generator("llama-cpp", str(bundled_model()), lora_path=adapter)
    try:
        sp = annotation_sampling(gen, task, params)
        prompts = [annotation_prompt(gen, task, s["input"]) for s in samples]
        seeds = [annotation_seed(params, s) for s in samples]
        got: dict[int, list] = {}
        for c in gen.generate(prompts, sp, seeds=seeds):
            got.setdefault(c.index, []).append(c)
    finally:
        gen.close()
    store.update_samples(
        (s["id"], {"candidates": [c.text for c in sorted(got.get(i, []), key=lambda c: c.sample)]})
        for i, s in enumerate(samples)
    )


def main() -> int:
    from quality import parse_set

    from sgtui.annotation import OutputAnnotator
    from sgtui.config import RunParams
    from sgtui.filters import first_failure
    from sgtui.input_generation import InputGenerator
    from sgtui.store import Store, task_of

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db")
    ap.add_argument("--runs", required=True, help="run ids, comma-separated")
    ap.add_argument("--set", default="", help="run parameters to override, key=value,...")
    ap.add_argument("--redraw", help="GGUF adapter: draw the run's answers again with it")
    args = ap.parse_args()
    if args.redraw and "," in args.runs:
        sys.exit("--redraw: one run at a time, the run the adapter was trained on")
    store = Store(Path(args.db))
    for rid in (int(r) for r in args.runs.split(",")):
        run = store.run(rid)
        task = task_of(run)
        if task.is_classification:
            sys.exit(f"run {rid}: classification runs are balanced after the vote; not here")
        params = RunParams.from_dict(run["params"]).override(**parse_set(args.set))
        ann = OutputAnnotator(task, params)
        inputs = InputGenerator(task, params).filters

        def fields(s: dict) -> dict:
            # an input the input filters drop now is dropped as generation would have dropped
            # it; in a real run it would also have stayed out of later prompts' pool
            fail = first_failure(s["input"], inputs)
            if fail:
                return dict(status="filtered", filter=fail[0], reason=fail[1])
            return ann.sample_fields(s["candidates"], s["input"])

        before = len(store.annotated(rid, kept_only=True))
        if args.redraw:
            redraw(store, rid, task, params, args.redraw)
        store.update_samples((s["id"], fields(s)) for s in store.annotated(rid))
        # the run's summary is what bench/quality.py reports as kept and filtered
        counts = store.counts(rid)
        summary = dict(
            run["summary"],
            kept=counts["kept"],
            training_pairs=len(store.training_pairs(rid)),
            filtered=counts["filtered"],
        )
        store.update_run(rid, params=params.to_dict(), summary=summary)
        after = len(store.annotated(rid, kept_only=True))
        print(f"run {rid} ({task.name}): {before} kept before, {after} now")
    return 0


if __name__ == "__main__":
    sys.exit(main())
