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
from .filters import DuplicateFilter, EmptyFilter, LengthFilter, NoiseFilter, first_failure
from .prompts import input_generation_prompt
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
            self.filters.append(LengthFilter.from_seeds(task.seed_inputs, "length"))
        if params.noise_filter:
            self.filters.append(NoiseFilter.for_task(task.extra_noise_terms))

    def build_prompt(self, round_no: int, slot: int, pool: Sequence[str]) -> InputPrompt:
        p, task = self.params, self.task
        rng = slot_rng(p.seed, "input", round_no, slot)
        high = list(task.seed_inputs)
        rng.shuffle(high)
        label = rng.choice(task.labels) if task.is_classification else None
        k = rng.randint(1, min(len(pool), p.max_low_quality)) if pool else 0
        low = rng.sample(list(pool), k) if k else []
        # The reference code re-samples forever when a prompt is too long; shrink instead.
        while True:
            text = input_generation_prompt(task, high, low, label)
            if self.count_tokens(text) < p.context_cutoff:
                break
            if not low:
                raise SgtuiError(
                    f"the instruction and seed inputs alone take {self.count_tokens(text)} tokens, "
                    f"more than the prompt limit of {p.context_cutoff}",
                    path=task.source, fix="shorten the instruction or the examples")
            low = low[:-1]
        return InputPrompt(round_no, slot, text, label, rng.randrange(2**31))

    def check(self, raw: str | None, dedup: DuplicateFilter) -> tuple[str, str | None, str | None]:
        """Return (stored text, filter name, reason); filter None means kept."""
        text = (raw or "").strip()
        fail = first_failure(raw or "", self.filters[:1]) or first_failure(text, self.filters[1:])
        if fail is None:
            reason = dedup(text)
            if reason:
                fail = (dedup.name, reason)
        if fail:
            return text, fail[0], fail[1]
        dedup.add(text)
        return text, None, None
