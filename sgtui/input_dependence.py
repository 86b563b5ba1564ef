"""Answer-side filter: input dependence (issue 12; docs/METHOD.md, the small mode).

A generic answer ("The meeting has been postponed.", "Thank you for your message.") is about
as likely after any input as after its own: it answers the task's style, not the input. The
filter scores the kept answer y twice with the annotation prompt, once after its own input x
and once after another input x' of the same run, and keeps it only when

    (log P(y | x) - log P(y | x')) / tokens(y)  >=  min_dependence x the seeds' dependence

The seeds' dependence is the median of the same quantity for the task's own examples, each
scored with the other examples as the demonstrations (leave one out) against the next
example's input: how much a right answer of this task depends on its input. A rewrite copies
most of its input (about 3 nats per token for formal-rewrite's seeds); a long free answer
depends on it less; a threshold relative to the task's own answers holds for both. With fewer
than two examples, or seeds that do not depend on their inputs, the filter is off.

The other input is the next input of the run in (round, slot) order that passed the input
filters (the first for the last), so a resumed run compares every answer with the same input
an uninterrupted run would have used. Both prompts are scored in one batched llama.cpp pass.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace

NAME = "input_dependence"


def other_inputs(inputs: Sequence[dict]) -> dict[int, str]:
    """Sample id -> the input each sample's answer is compared after: the next one in
    (round, slot) order with different text, wrapping round."""
    order = sorted(inputs, key=lambda s: (s["round"], s["slot"]))
    out: dict[int, str] = {}
    for i, s in enumerate(order):
        for j in range(1, len(order)):
            other = order[(i + j) % len(order)]["input"]
            if other.strip() != s["input"].strip():
                out[s["id"]] = other
                break
    return out


def dependence(
    gen, own_prompts: Sequence[str], other_prompts: Sequence[str], answers: Sequence[str], stop=None
) -> list[float]:
    """Per answer: log-probability per token after its own prompt minus after the other."""
    n = len(answers)
    kw = {"stop": stop} if stop is not None and getattr(gen, "supports_stop", False) else {}
    scores = gen.score([*own_prompts, *other_prompts], [*answers, *answers], **kw)
    return [
        (scores[i].logprob - scores[n + i].logprob) / max(scores[i].n_tokens, 1) for i in range(n)
    ]


def seed_dependence(gen, task, prompt: Callable[[object, str], str], stop=None) -> float | None:
    """The median dependence of the task's seed answers on their inputs (leave one out), or
    None when there are fewer than two examples."""
    ex = task.examples
    if len(ex) < 2:
        return None
    own, other, answers = [], [], []
    for i, e in enumerate(ex):
        rest = replace(task, examples=[x for j, x in enumerate(ex) if j != i])
        own.append(prompt(rest, e.input))
        other.append(prompt(rest, ex[(i + 1) % len(ex)].input))
        answers.append(e.output)
    return statistics.median(dependence(gen, own, other, answers, stop))


def reason(value: float, threshold: float) -> str:
    return (
        f"the answer is about as likely after another input as after its own "
        f"({value:+.2f} nats per token; the seed answers' share gives at least "
        f"{threshold:+.2f}): it does not depend on its input"
    )
