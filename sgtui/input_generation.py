"""Stage 1: the model writes new task inputs, round by round (SELF_GUIDE.md section 2).

Each prompt shows the seed inputs plus a random sample of the pool (inputs accepted in earlier
rounds). Every slot (round, prompt) draws from its own seeded random stream, so a run resumed
after a crash builds exactly the prompts it would have built.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from .config import RunParams
from .errors import SgtuiError
from .filters import (
    DegenerateFilter,
    DuplicateFilter,
    EmptyFilter,
    FormFilter,
    LengthFilter,
    NearCopyFilter,
    NoiseFilter,
    PromptEchoFilter,
    first_failure,
)
from .prompts import SMALL_STOPS, input_generation_prompt, small_input_prompt
from .task import Task


def slot_rng(seed: int, *parts: object) -> random.Random:
    return random.Random("/".join(str(p) for p in (seed, *parts)))


@dataclass
class InputPrompt:
    round: int
    slot: int
    text: str
    pseudo_label: str | None
    seed: int
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None


class InputGenerator:
    """Builds the input-generation prompts and filters what comes back."""

    def __init__(self, task: Task, params: RunParams, count_tokens=len):
        self.task = task
        self.params = params
        self.count_tokens = count_tokens
        self.filters: list = [EmptyFilter()]
        if params.input_length_filter:
            self.filters.append(
                LengthFilter.from_seeds(task.seed_inputs, "length", params.length_sigma_floor)
            )
        if params.small_filters:
            self.filters += [PromptEchoFilter(task.instruction), DegenerateFilter()]
        if params.form_filter:
            self.filters.append(FormFilter.from_seeds(task.seed_inputs))
        if params.noise_filter:
            self.filters.append(NoiseFilter.for_task(task.extra_noise_terms))
        self.max_tokens = params.gen_max_tokens
        self.stop: tuple[str, ...] = ()
        if params.mode == "small":
            # long enough for the longest seed input and then some, never more than the paper's
            longest = max(count_tokens(x) for x in task.seed_inputs)
            self.max_tokens = min(params.gen_max_tokens, int(longest * 1.5) + 8)
            self.stop = SMALL_STOPS

    def round_filters(self, pool: Sequence[str], accepted: Sequence[str]) -> list:
        """Filters that compare with what was seen before: rebuilt for each round."""
        dynamic: list = [DuplicateFilter([*pool, *accepted])]
        if self.params.small_filters:
            dynamic.append(
                NearCopyFilter(
                    [*self.task.seed_inputs, *pool, *accepted], self.params.near_copy_threshold
                )
            )
        return dynamic

    def build_prompt(
        self, round_no: int, slot: int, pool: Sequence[tuple[str, str | None]]
    ) -> InputPrompt:
        """pool: (input, pseudo-label it was generated under) of earlier rounds."""
        p, task = self.params, self.task
        rng = slot_rng(p.seed, "input", round_no, slot)
        high = list(task.seed_inputs)
        rng.shuffle(high)
        label = rng.choice(task.labels) if task.is_classification else None
        k = rng.randint(1, min(len(pool), p.max_low_quality)) if pool else 0
        low = rng.sample(list(pool), k) if k else []
        # The reference code re-samples forever when a prompt is too long; shrink instead.
        while True:
            if p.mode == "small":
                # The seeds in the task's order, then this prompt's pool items: the prompts of
                # a run share the instruction and seeds as one token prefix, which the batched
                # backend evaluates once (prompt evaluation is most of a small-mode round).
                seeds = [
                    (e.input, e.output.strip() if task.is_classification else None)
                    for e in task.examples
                ]
                text = small_input_prompt(task, seeds + list(low), label)
            else:
                text = input_generation_prompt(task, high, [x for x, _ in low], label)
            if self.count_tokens(text) < p.context_cutoff:
                break
            if not low:
                raise SgtuiError(
                    f"the instruction and seed inputs alone take {self.count_tokens(text)} tokens, "
                    f"more than the prompt limit of {p.context_cutoff}",
                    path=task.source,
                    fix="shorten the instruction or the examples",
                )
            low = low[:-1]
        return InputPrompt(
            round_no, slot, text, label, rng.randrange(2**31), self.stop, self.max_tokens
        )

    def check(self, raw: str | None, dynamic: Sequence) -> tuple[str, str | None, str | None]:
        """Return (stored text, filter name, reason); filter None means kept. `dynamic` are
        the round's filters from round_filters(); a kept text is added to them."""
        text = (raw or "").strip()
        fail = first_failure(text, [*self.filters, *dynamic])
        if fail:
            return text, fail[0], fail[1]
        for f in dynamic:
            f.add(text)
        return text, None, None
