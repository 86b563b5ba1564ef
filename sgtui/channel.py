"""The noisy-channel label (Min et al., 2022, "Noisy Channel Language Model Prompting").

Instead of asking the model for the label of an input x (the direct direction, whose labels
carry no signal for the bundled model: bench/results/label_signal.md), ask how likely x is
as an input written for each label, log P(x | label), and take the label under which x is
likeliest. The prompt is the small mode's input-generation prompt itself, which groups the
seed inputs under their answers and ends in the group of one label: the channel reads the
input with the same distribution that wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .prompts import small_input_prompt
from .task import Task


def channel_prompts(task: Task) -> dict[str, str]:
    """One prompt per label: the seed inputs grouped by answer, ending in that label's group
    with an open item (the input follows after a space)."""
    seeds = [(e.input, e.output.strip()) for e in task.examples]
    return {lab: small_input_prompt(task, seeds, lab) for lab in task.labels}


def channel_labels(
    gen, task: Task, inputs: Sequence[str], stop=None
) -> list[tuple[str, dict[str, float]]]:
    """Per input: the label with the highest log P(input | label) per token, and every
    label's score (ties go to the label listed first)."""
    prompts = channel_prompts(task)
    labels = list(prompts)
    pairs_p, pairs_c = [], []
    for x in inputs:
        for lab in labels:
            pairs_p.append(prompts[lab])
            pairs_c.append(" " + x.strip())
    kw = {"stop": stop} if stop is not None and getattr(gen, "supports_stop", False) else {}
    scores = gen.score(pairs_p, pairs_c, **kw)
    out = []
    for i in range(len(inputs)):
        row = {lab: scores[i * len(labels) + j].mean for j, lab in enumerate(labels)}
        best = max(labels, key=lambda lab: (row[lab], -labels.index(lab)))
        out.append((best, row))
    return out
