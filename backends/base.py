"""The small interfaces every backend implements.

A generator turns prompts into completions; a trainer (see backends/training.py) turns
samples into an adapter. Heavy libraries are imported only inside the concrete backends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence, runtime_checkable

from sgtui.errors import SgtuiError


@dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling settings. temperature 0 means greedy."""

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 1.0
    max_tokens: int = 500
    n: int = 1
    best_of: int | None = None  # sample best_of, keep the n with highest cumulative logprob
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    """One finished sequence. `index` is the prompt's position, `sample` the n-th draw."""

    index: int
    sample: int
    text: str
    n_tokens: int = 0
    logprob: float = 0.0
    finish_reason: str = "stop"  # "stop" | "length"


@dataclass(frozen=True)
class TokenScore:
    """How likely a continuation is after a prompt: `logprob` is log P(continuation | prompt),
    the sum of the natural-log probabilities of the continuation's tokens (each given the
    prompt and the continuation's tokens before it), `n_tokens` how many tokens it has."""

    logprob: float
    n_tokens: int

    @property
    def mean(self) -> float:
        """The log-probability per token (0.0 for an empty continuation)."""
        return self.logprob / max(self.n_tokens, 1)


class ScoreStopped(Exception):
    """score() gave up because the stop event it was given was set."""


@dataclass
class ChatMessage:
    role: str
    content: str


@runtime_checkable
class Generator(Protocol):
    """A loaded model that can complete prompts. Owned by one thread."""

    name: str
    model_path: str
    supports_batch: bool
    n_ctx: int

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> Iterator[Completion]:
        """Yield completions as they finish, in any order: n per prompt (best_of drawn, the n
        with the highest cumulative logprob kept). `seeds` gives each prompt its own seed."""
        ...

    def render_chat(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        """Render messages with the model's own chat template."""
        ...

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[TokenScore]:
        """log P(continuations[i] | prompts[i]) for each i, in order; for backends whose
        `supports_score` is True (read it with getattr(gen, "supports_score", False)).

        The prompt is tokenised as generate() tokenises it (BOS first where the model wants
        one), the continuation on its own (no BOS, no special tokens), and the two token lists
        are joined, so the boundary between them is exact. An empty continuation scores
        TokenScore(0.0, 0). Uses: an answer's dependence on its input, log P(y|x) - log P(y|x');
        label scoring, log P(label | prompt) and the channel direction log P(input | label)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def eos_text(self) -> str:
        """The end-of-turn text appended to training answers."""
        ...

    def close(self) -> None: ...


@dataclass
class BackendInfo:
    name: str
    available: bool
    reason: str = ""
    extras: dict = field(default_factory=dict)


def cpu_threads() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cgroup cpusets), not the
    machine's core count, so that a pinned process does not start more threads than cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def prompt_too_long(n: int, n_ctx: int, model_path) -> "Exception":
    """The error for a prompt of `n` tokens that leaves no room in a context of `n_ctx`."""
    return SgtuiError(
        f"a prompt of {n} tokens does not fit the model's context of {n_ctx} tokens",
        path=model_path,
        fix="shorten the instruction or examples, or use a model with a longer context",
    )


def check_score_pair(n_prompt: int, n_cont: int, n_ctx: int, model_path) -> None:
    """Refuse a pair score() cannot take: an empty prompt (no token to predict the first
    continuation token from) or one that does not fit the context with its continuation."""
    if not n_prompt:
        raise SgtuiError(
            "an empty prompt cannot be scored with this model (it has no BOS token to start from)",
            path=model_path,
            fix="give every continuation a non-empty prompt",
        )
    if n_prompt + n_cont > n_ctx:
        raise SgtuiError(
            f"a prompt and continuation of {n_prompt + n_cont} tokens do not fit "
            f"the model's context of {n_ctx} tokens",
            path=model_path,
            fix="shorten the prompt or the continuation",
        )
