"""How good are the answers the fine-tune is trained on? The annotator, scored on the test rows.

SELF-GUIDE trains the model on its own answers: n draws at the annotation temperature, then
the consensus (sgtui/annotation.py). Those answers cannot be scored on the synthesised inputs,
which have no gold answer, but the same annotation can be run on the test rows, which do. For
each task this takes the rows bench/quality.py scores, annotates every test input exactly as a
default `sgtui run` annotates a synthesised one (the small mode's parameters, the answer
filters, the consensus and its threshold), and scores with the evaluation's word-level ROUGE-L:

- base: the model's greedy few-shot answer (the base of bench/quality.py);
- consensus: the chosen answer where the consensus keeps the row, the greedy answer elsewhere;
- on kept rows: the consensus answer and the greedy answer on the rows the consensus keeps,
  the ones that would become training samples;
- best draw: the best of the n draws by ROUGE-L against the gold, an upper bound no rule that
  picks among the draws can pass;
- tuned: the fine-tunes' mean from a quality.py result (--tuned), for comparison.

With --lora TASK=ADAPTER the annotator is that fine-tune (a GGUF adapter of bench/.work/), and
"base" is its own greedy score: is a fine-tune a better annotator than the model it came from?

A fine-tune learns the annotator's answers. Where the tuned mean already reaches the consensus
score, it has taken what the annotation holds; a larger gain needs better answers than the
model's own few-shot draws, which no filter of those draws can give beyond the best draw.

    .venv/bin/python bench/annotator_quality.py --tasks task036,task039,task1195,task121
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402  (bench/machine.py)
from quality import parse_set, task_and_rows  # noqa: E402  (bench/quality.py)


def mean(xs) -> float:
    return round(statistics.fmean(xs), 1) if xs else float("nan")


def probe(name: str, args, model: str) -> dict:
    import backends
    from sgtui import evaluation as ev
    from sgtui import metrics
    from sgtui.annotation import OutputAnnotator
    from sgtui.config import RunParams
    from sgtui.pipeline import annotation_prompt, annotation_sampling

    task, rows, split = task_and_rows(name, args.eval_limit)
    if task.is_classification:
        raise SystemExit(f"{name}: a classification task; bench/label_signal.py probes those")
    params = RunParams.defaults_for(task.type, "small").override(**args.set)
    t = time.monotonic()
    lora = args.lora.get(name)
    gen = backends.load_generator("llama-cpp", model, **({"lora_path": lora} if lora else {}))
    try:
        base = ev.evaluate(gen, task, rows)
        rows = [{"input": it["input"], "output": it["gold"]} for it in base.items]
        sp = annotation_sampling(gen, task, params)
        prompts = [annotation_prompt(gen, task, r["input"]) for r in rows]
        seeds = [random.Random(f"{params.seed}-{i}").randrange(2**31) for i in range(len(rows))]
        draws: dict[int, list] = {}
        for c in gen.generate(prompts, sp, seeds=seeds):
            draws.setdefault(c.index, []).append(c)
    finally:
        gen.close()
    ann = OutputAnnotator(task, params)
    per_row = []
    for i, (r, it) in enumerate(zip(rows, base.items)):
        texts = [c.text for c in sorted(draws.get(i, []), key=lambda c: c.sample)]
        result, filt, _ = ann.vote(texts, r["input"])
        greedy = it["score"]
        chosen = 100 * metrics.rouge_l_word((result.winner or "").strip(), r["output"])
        best = max((100 * metrics.rouge_l_word(x.strip(), r["output"]) for x in texts), default=0)
        per_row.append({"kept": filt is None, "greedy": greedy, "chosen": chosen, "best": best})
    kept = [p for p in per_row if p["kept"]]
    res = {
        "annotator": f"fine-tune {lora}" if lora else "the bundled model",
        "split": split,
        "n": len(per_row),
        "draws": params.n,
        "base": round(base.score, 1),
        "consensus": mean([p["chosen"] if p["kept"] else p["greedy"] for p in per_row]),
        "kept": len(kept),
        "kept_consensus": mean([p["chosen"] for p in kept]),
        "kept_base": mean([p["greedy"] for p in kept]),
        "best_draw": mean([p["best"] for p in per_row]),
        "minutes": round((time.monotonic() - t) / 60, 1),
    }
    if args.tuned and not lora:
        stored = json.loads(Path(args.tuned).read_text())["tasks"]
        entry = stored.get(name) or stored.get(task.name) or {}
        if entry.get("tuned"):
            res["tuned"] = mean(entry["tuned"])
    return res


def table(results: dict) -> str:
    lines = [
        "# The annotator on the test rows: how good are the answers a fine-tune learns?",
        "",
        f"- machine: {results['machine']}",
        f"- command: `{results['command']}`",
        "- annotator: the bundled model, or the fine-tune named in its row; each test input "
        "annotated as a default `sgtui run` annotates a synthesised one (small mode: n draws at the annotation temperature, the answer filters, "
        "the consensus and its threshold); word-level ROUGE-L x100",
        "- consensus: the chosen answer where the consensus keeps the row, the greedy answer "
        "elsewhere; kept: rows the consensus keeps; best draw: the best of the draws against "
        "the gold; tuned: the fine-tunes' mean in the result named (its base scored the same "
        "rows greedily)",
        "",
        "| task | annotator | rows | greedy | consensus | kept | consensus on kept | greedy on kept "
        "| best draw | tuned | tuned - consensus |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["tasks"].items():
        tuned = r.get("tuned")
        gap = f"{tuned - r['consensus']:+.1f}" if tuned is not None else ""
        lines.append(
            f"| {name} | {r.get('annotator', 'the bundled model')} | {r['n']} | {r['base']} "
            f"| {r['consensus']} | {r['kept']} | {r['kept_consensus']} | {r['kept_base']} "
            f"| {r['best_draw']} "
            f"| {tuned if tuned is not None else ''} | {gap} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", required=True, help="comma-separated generation tasks")
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--set", action="append", default=[], help="run parameter k=v")
    ap.add_argument(
        "--lora", action="append", default=[], help="TASK=ADAPTER: annotate with a fine-tune"
    )
    ap.add_argument("--tuned", default=str(ROOT / "bench/results/quality.json"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/annotator-quality"))
    args = ap.parse_args()
    sets = {}
    for spec in args.set:
        sets.update(parse_set(spec))
    args.set = sets
    args.lora = dict(spec.split("=", 1) for spec in args.lora)
    from sgtui.paths import bundled_model

    out = Path(args.out)
    path = out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {"tasks": {}}
    results["machine"] = describe()
    results["command"] = "python bench/annotator_quality.py " + " ".join(sys.argv[1:])
    for name in args.tasks.split(","):
        if name in results["tasks"]:
            continue
        results["tasks"][name] = probe(name, args, str(bundled_model()))
        path.write_text(json.dumps(results, indent=1) + "\n")
        out.with_suffix(".md").write_text(table(results))
        print(name, results["tasks"][name], flush=True)
    out.with_suffix(".md").write_text(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
