"""How much does the model know about each classification task, whatever the annotation?

SELF-GUIDE's labels come from the model itself, so a fine-tune can at best learn what the
model's own few-shot prompt already knows. This probe reads the model's probability of every
label after the few-shot meta prompt (the prompt annotation, training and evaluation use) on
labelled validation rows, and scores three ways of turning it into a label:

- label argmax: the most probable label; what a perfect vote with answers mapped to labels
  would give, without answers outside the labels;
- content-free calibration (Zhao et al. 2021): the probabilities divided by those the prompt
  gives to "N/A", "" and "[MASK]" as the input;
- batch calibration (Zhou et al. 2023): the mean log-probability of each label over the rows
  subtracted, which gives every label about the same share.

If none of them beats the majority label, no annotation rule can give the fine-tune a signal,
and a classification gain can only come from answering in the label set.

    .venv/bin/python bench/label_signal.py --rows 100
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402  (bench/machine.py)

from sgtui import evaluation as ev  # noqa: E402
from sgtui.paths import bundled_model, shared_ni  # noqa: E402
from sgtui.prompts import meta_messages  # noqa: E402
from sgtui.task import load_task  # noqa: E402

CONTENT_FREE = ("N/A", "", "[MASK]")


class LabelScorer:
    """log P(label | prompt) for every label, through llama.cpp, reusing the prompt's tokens
    already in the context (the few-shot prefix is the same for every row)."""

    def __init__(self, model: str):
        import backends

        self.gen = backends.load_generator("llama-cpp-sequential", model, n_threads=1)
        self.llm = self.gen.llm

    def _next_logprobs(self, toks: list[int]):
        import numpy as np

        llm = self.llm
        held = list(llm.input_ids[: llm.n_tokens])
        k = 0
        while k < min(len(held), len(toks) - 1) and held[k] == toks[k]:
            k += 1
        llm.n_tokens = k  # eval() drops the cache past this point
        llm.eval(toks[k:])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
        m = logits.max()
        return logits - m - math.log(np.exp(logits - m).sum())

    def score(self, task, text: str) -> list[float]:
        prompt = self.gen.render_chat(meta_messages(task, text))
        pt = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        out = []
        for label in task.labels:
            lt = self.llm.tokenize(label.encode("utf-8"), add_bos=False, special=False)
            total = 0.0
            for j, tok in enumerate(lt):
                total += float(self._next_logprobs(pt + lt[:j])[tok])
            out.append(total)
        return out


def probe(scorer: LabelScorer, name: str, n_rows: int) -> dict:
    import numpy as np

    task = load_task(shared_ni() / name)
    rows, split = ev.load_rows(f"{name}:validation", n_rows, seed=0)
    t = time.monotonic()
    labels = task.labels
    cf = np.array([scorer.score(task, x) for x in CONTENT_FREE])
    cf = np.exp(cf - np.logaddexp.reduce(cf, axis=1, keepdims=True)).mean(axis=0)
    s = np.array([scorer.score(task, r["input"]) for r in rows])
    logp = s - np.logaddexp.reduce(s, axis=1, keepdims=True)
    gold = [r["output"] for r in rows]
    picks = {
        "label argmax": logp.argmax(axis=1),
        "content-free calibration": (np.exp(logp) / cf).argmax(axis=1),
        "batch calibration": (logp - logp.mean(axis=0)).argmax(axis=1),
    }
    res = {
        "split": split,
        "labels": labels,
        "n": len(rows),
        "majority": 100 * Counter(gold).most_common(1)[0][1] / len(rows),
        "gold": dict(Counter(gold)),
        "minutes": 0.0,
    }
    for way, idx in picks.items():
        pred = [labels[i] for i in idx]
        res[way] = {
            "accuracy": 100 * sum(p == g for p, g in zip(pred, gold)) / len(rows),
            "predicted": dict(Counter(pred)),
        }
    res["minutes"] = (time.monotonic() - t) / 60
    return res


def table(results: dict, command: str) -> str:
    ways = ("label argmax", "content-free calibration", "batch calibration")
    lines = [
        "# Label signal: the bundled model's own label probabilities on validation rows",
        "",
        f"- machine: {results['_machine']}",
        "- model: SmolLM2-135M-Instruct Q4_1 (bundled), llama.cpp, one thread",
        "- prompt: the few-shot meta prompt (annotation, training and evaluation use it)",
        f"- rows: the first {results['_rows']} of a seeded shuffle (seed 0) of each "
        "validation split",
        f"- command: `{command}`",
        "- accuracy x100; predicted label counts in brackets",
        "",
        "| task | majority label | " + " | ".join(ways) + " |",
        "|---|---|" + "---|" * len(ways),
    ]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        cells = [
            f"{r[w]['accuracy']:.1f} ({', '.join(f'{k} {v}' for k, v in sorted(r[w]['predicted'].items()))})"
            for w in ways
        ]
        lines.append(f"| {name} | {r['majority']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="task937,task190,task199,task200,task738,task1385,task1386")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "label_signal"))
    args = ap.parse_args()
    if shared_ni() is None:
        print("the Natural-Instructions tasks (../shared/ni) are not beside the project")
        return 2
    scorer = LabelScorer(str(bundled_model()))
    results: dict = {"_machine": describe(), "_rows": args.rows}
    for name in args.tasks.split(","):
        results[name] = probe(scorer, name, args.rows)
        print(name, json.dumps(results[name]), flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    command = "python bench/label_signal.py " + " ".join(sys.argv[1:])
    out.with_suffix(".md").write_text(table(results, command))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
