"""Evaluation: score a model on held-out task rows, and the baselines it is compared with.

Follows SELF_GUIDE.md section 6: the few-shot meta prompt of section 5.1 for every row, greedy
decoding, stripped outputs; exact match with label extraction for classification, ROUGE-L for
generation. All scores here are reported and stored x100 (0-100), item scores included.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import SamplingParams

from . import metrics
from .errors import SgtuiError
from .paths import shared_ni
from .prompts import meta_messages
from .task import Task

# The paper decodes up to 500 tokens and drops rows whose gold output is longer.
MAX_ANSWER_TOKENS = 500
SELF_ICL_MAX = 8


@dataclass
class EvalResult:
    metric: str  # "exact_match" | "rouge"
    score: float  # primary score x100
    scores: dict[str, float]
    items: list[dict[str, Any]]
    dropped: int = 0  # rows left out because the prompt or the gold answer was too long
    max_tokens: int = 0
    extra_pairs: int = 0  # Self-ICL demonstrations added to every prompt
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.items)


# -- rows -----------------------------------------------------------------------------------
def load_rows(spec: str, limit: int | None = None, seed: int = 0) -> tuple[list[dict], str]:
    """Read evaluation rows ({"input", "output"}) and name the split.

    `spec` is a JSONL file, an NI split such as "task937:test" (looked up beside the project,
    see paths.shared_ni), or an NI task folder followed by ":test" / ":validation". Gold
    outputs are stripped, as in the reference code. `limit` keeps the first N rows after a
    shuffle seeded with `seed`, so a limited evaluation samples the whole split; the split name
    then records N, the split size and the seed."""
    path, name = _resolve_split(spec)
    rows = _read_jsonl(path)
    if limit is not None:
        if limit < 1:
            raise SgtuiError(
                f"--limit must be at least 1, got {limit}",
                fix="give a positive number of rows, or leave --limit out",
            )
        if limit < len(rows):
            total = len(rows)
            random.Random(seed).shuffle(rows)
            rows = rows[:limit]
            name = f"{name}[{limit} of {total}, seed {seed}]"
    return rows, name


def _resolve_split(spec: str) -> tuple[Path, str]:
    head, sep, split = spec.rpartition(":")
    if sep and head and split and split.replace("_", "").isalnum() and not Path(spec).is_file():
        folder = Path(head)
        if not folder.is_dir():
            ni = shared_ni()
            if ni is not None and "/" not in head and (ni / head).is_dir():
                folder = ni / head
            else:
                raise SgtuiError(
                    f"no task folder named {head!r}",
                    path=spec,
                    fix="give an NI task id such as task937:test (with the NI tasks "
                    "beside the project or $SGTUI_NI set), a task folder path "
                    "plus :test, or a JSONL file",
                )
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            have = sorted(p.stem for p in folder.glob("*.jsonl"))
            raise SgtuiError(
                f"the task folder has no {split!r} split",
                path=str(path),
                fix=f"use one of: {', '.join(have)}"
                if have
                else 'add a JSONL file of {"input", "output"} rows',
            )
        return path, f"{folder.name}:{split}"
    path = Path(spec)
    if path.is_dir():
        raise SgtuiError(
            "this is a folder, not a JSONL file of rows",
            path=spec,
            fix=f"name a split, e.g. {spec.rstrip('/')}:test",
        )
    if not path.is_file():
        raise SgtuiError(
            "evaluation file not found",
            path=spec,
            fix='give a JSONL file of {"input", "output"} rows, or an NI split '
            "such as task937:test",
        )
    return path, path.name


def _read_jsonl(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SgtuiError(
            "the evaluation file is not UTF-8 text", path=str(path), fix="save it as UTF-8"
        )
    except OSError as e:
        raise SgtuiError(
            f"cannot read the evaluation file: {e.strerror}",
            path=str(path),
            fix="check the path and its permissions",
        )
    rows = []
    # split on "\n" only: str.splitlines would also break inside strings at U+2028 and kin
    for no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SgtuiError(
                f"line {no} is not valid JSON ({e.msg})",
                path=str(path),
                fix="write one JSON object per line",
            )
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("input"), str)
            or not isinstance(obj.get("output"), str)
        ):
            raise SgtuiError(
                f'line {no} needs text fields "input" and "output"',
                path=str(path),
                fix='write each line as {"input": "...", "output": "..."}',
            )
        rows.append({"input": obj["input"], "output": obj["output"].strip()})
    if not rows:
        raise SgtuiError(
            "the evaluation file holds no rows",
            path=str(path),
            fix='add lines of {"input": "...", "output": "..."}',
        )
    return rows


# -- scoring --------------------------------------------------------------------------------
def _score_items(task: Task, items: list[dict]) -> tuple[str, float, dict[str, float]]:
    """Fill in each item's score (x100) and return (metric, primary, scores)."""
    if not items:
        return task.metric, 0.0, {}
    if task.is_classification:
        labels = metrics.label_set([it["gold"] for it in items])
        for it in items:
            it["score"] = 100.0 * metrics.exact_match(it["prediction"], it["gold"], labels)
        em = sum(it["score"] for it in items) / len(items)
        return "exact_match", em, {"exact_match": em}
    char = 0.0
    for it in items:
        it["score"] = 100.0 * metrics.rouge_l_word(it["prediction"], it["gold"])
        char += 100.0 * metrics.rouge_l_char(it["prediction"], it["gold"])
    word = sum(it["score"] for it in items) / len(items)
    return "rouge", word, {"rougeL_word": word, "rougeL_char": char / len(items)}


def default_max_tokens(generator, task: Task, rows: Sequence[dict]) -> int:
    """Twice the longest seed or gold output in tokens, plus 16, at most 500.

    The paper decodes up to 500 tokens for every row; on a CPU that mostly buys rambling after
    the answer, so the budget follows the answers' own lengths (the same budget for every system
    compared). Pass max_tokens=500 to reproduce the paper."""
    return min(
        MAX_ANSWER_TOKENS,
        answer_budget(generator, [*task.seed_outputs, *(r["output"] for r in rows)]),
    )


def answer_budget(generator, answers: Sequence[str]) -> int:
    """Twice the longest answer in tokens, plus 16 (annotation uses it too)."""
    return 2 * max(generator.count_tokens(t) for t in answers) + 16


def evaluate(
    generator,
    task: Task,
    rows: Sequence[dict],
    *,
    extra_pairs: Sequence[tuple[str, str]] = (),
    max_tokens: int | None = None,
    on_item: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Greedy-decode every row with the meta prompt and score it.

    Rows are dropped (and counted in `dropped`) when their gold answer is over 500 tokens, as in
    the paper, or when the prompt leaves no room for `max_tokens` of answer in the model's
    context. All prompts go to the generator in one call, so a batched backend can decode them
    together; completions are collected by index. `on_item(done, total)` reports progress."""
    t0 = time.monotonic()
    if max_tokens is None:
        max_tokens = default_max_tokens(generator, task, rows)
    kept: list[dict] = []
    prompts: list[str] = []
    for row in rows:
        if generator.count_tokens(row["output"]) > MAX_ANSWER_TOKENS:
            continue
        prompt = generator.render_chat(meta_messages(task, row["input"], extra_pairs))
        if generator.count_tokens(prompt) + max_tokens > generator.n_ctx:
            continue
        kept.append(row)
        prompts.append(prompt)
    dropped = len(rows) - len(kept)
    if rows and not kept:
        raise SgtuiError(
            f"none of the {len(rows)} rows fits the model's context of "
            f"{generator.n_ctx} tokens with {max_tokens} tokens of answer",
            path=getattr(generator, "model_path", None),
            fix="use fewer Self-ICL pairs, a smaller --max-tokens, or a model with a "
            "longer context",
        )
    predictions: list[str | None] = [None] * len(prompts)
    params = SamplingParams(temperature=0.0, top_k=1, max_tokens=max_tokens, n=1)
    done = 0
    for c in generator.generate(prompts, params):
        if c.sample != 0 or predictions[c.index] is not None:
            continue
        predictions[c.index] = c.text.strip()
        done += 1
        if on_item:
            on_item(done, len(prompts))
    items = [
        {"input": r["input"], "gold": r["output"], "prediction": p or "", "score": 0.0}
        for r, p in zip(kept, predictions)
    ]
    metric, score, scores = _score_items(task, items)
    return EvalResult(
        metric,
        score,
        scores,
        items,
        dropped=dropped,
        max_tokens=max_tokens,
        extra_pairs=len(extra_pairs),
        seconds=time.monotonic() - t0,
    )


def trivial_baseline(task: Task, rows: Sequence[dict]) -> EvalResult:
    """No model: copy the input (generation), or always answer the most frequent gold label of
    the evaluated rows (classification; ties go to the label seen first)."""
    if task.is_classification:
        counts = Counter(r["output"] for r in rows)
        majority = max(counts, key=lambda lab: counts[lab]) if counts else ""
        preds = [majority] * len(rows)
    else:
        preds = [r["input"] for r in rows]
    items = [
        {"input": r["input"], "gold": r["output"], "prediction": p, "score": 0.0}
        for r, p in zip(rows, preds)
    ]
    metric, score, scores = _score_items(task, items)
    return EvalResult(metric, score, scores, items)


def self_icl_pairs(
    pairs: Iterable[Any], k: int | None = None, seed: int = 0
) -> list[tuple[str, str]]:
    """The Self-ICL baseline's extra demonstrations: k synthetic (input, output) pairs, drawn
    with a seeded shuffle. The paper used a third of the synthetic set; the default here is a
    third (at least 1, at most 8), so the prompt stays within a small model's context. Accepts
    dicts with input/output (Store.training_pairs rows) or tuples."""
    items = [(p["input"], p["output"]) if isinstance(p, dict) else (p[0], p[1]) for p in pairs]
    if k is None:
        k = min(max(1, len(items) // 3), SELF_ICL_MAX)
    random.Random(seed).shuffle(items)
    return items[: max(0, k)]


def fit_pairs(
    generator, task: Task, pairs: Sequence[tuple[str, str]], rows: Sequence[dict], max_tokens: int
) -> list[tuple[str, str]]:
    """Drop trailing Self-ICL pairs until the longest row's prompt leaves room for the answer."""
    if not rows:
        return list(pairs)
    longest = max(rows, key=lambda r: len(r["input"]))["input"]
    pairs = list(pairs)
    while pairs:
        prompt = generator.render_chat(meta_messages(task, longest, pairs))
        if generator.count_tokens(prompt) + max_tokens <= generator.n_ctx:
            break
        pairs.pop()
    return pairs


# -- storing and reporting ------------------------------------------------------------------
def save(store, run_id: int | None, system: str, split: str, result: EvalResult, model: str) -> int:
    """Store one evaluation with its items. Scores are x100; `scores` also records how many rows
    were dropped, the answer budget and the number of Self-ICL pairs, so a stored number can be
    read in context."""
    scores = {
        **result.scores,
        "dropped": result.dropped,
        "max_tokens": result.max_tokens,
        "extra_pairs": result.extra_pairs,
    }
    return store.add_eval(
        run_id, system, split, result.metric, result.score, scores, model, result.items
    )


def which_model(base: float, tuned: float, adapter: str | None = None) -> str:
    """Which model to use, in plain words: `sgtui run`'s last line and the Evaluate page's
    verdict. A fine-tune that does no better than its base is not worth its adapter."""
    if tuned > base:
        where = f" (adapter: {adapter})" if adapter else ""
        return (
            f"use the fine-tune: it scored {tuned:.1f}, {tuned - base:+.1f} over the base "
            f"model's {base:.1f}{where}"
        )
    if tuned == base:
        return (
            f"the fine-tune is no better than the base model ({tuned:.1f} against "
            f"{base:.1f}): keep using the base model"
        )
    return (
        f"the fine-tune is worse than the base model ({tuned:.1f} against {base:.1f}): "
        "keep using the base model"
    )


METRIC_NAMES = {"rouge": "ROUGE-L", "exact_match": "exact match"}


def is_fine_tune(system: str) -> bool:
    """A stored system that is the run's fine-tune: `self-guide`, or one epoch's checkpoint."""
    return system == "self-guide" or system.startswith("epoch-")


def fine_tune_against_base(store, run_id: int) -> tuple[dict, dict] | None:
    """(fine-tune evaluation, base evaluation) of run `run_id`: its latest fine-tune evaluation
    that has a base evaluation on the same split and metric, and the latest such base. The base
    is looked for under the run (where `sgtui run` and `sgtui eval --run` store it), then among
    evaluations stored without a run of the run's own model (`sgtui eval` without --run).
    None when the run has no such pair."""
    own = store.evals(run_id)
    model = store.run(run_id)["model"] if own else None
    runless = [e for e in store.evals(None) if e["model"] == model] if model else []
    for tuned in reversed([e for e in own if is_fine_tune(e["system"])]):
        for pool in (own, runless):
            bases = [
                e
                for e in pool
                if e["system"] == "base"
                and e["split"] == tuned["split"]
                and e["metric"] == tuned["metric"]
            ]
            if bases:
                return tuned, bases[-1]
    return None


def comparison_table(rows: Sequence[tuple[str, EvalResult]]) -> str:
    """A plain-text table: system, metric, score (x100), delta against the "base" system, n."""
    base = next((r.score for s, r in rows if s == "base"), None)
    header = ("system", "metric", "score", "vs base", "n", "other")
    lines = []
    for system, r in rows:
        delta = "" if base is None or system == "base" else f"{r.score - base:+.1f}"
        other = ", ".join(
            f"{k} {v:.1f}" for k, v in r.scores.items() if k not in ("exact_match", "rougeL_word")
        )
        if r.dropped:
            other = ", ".join(x for x in (other, f"{r.dropped} dropped") if x)
        lines.append((system, r.metric, f"{r.score:.1f}", delta, str(r.n), other))
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]

    def fmt(cells: Sequence[str]) -> str:
        # text columns left-aligned, numbers right-aligned
        return "  ".join(
            c.ljust(w) if i in (0, 1, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)])
