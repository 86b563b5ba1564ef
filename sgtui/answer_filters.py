"""Answer-side quality control for generation tasks: filters that look at an annotated answer
and its input together (docs/METHOD.md, "Answer filters").

The paper's filters look at inputs, and at an answer's length alone. A small model's most
frequent answer is often a generic one ("I'm sorry, but I'm unable to assist with that."), and
the vote then elects it. These filters drop such candidates before the vote, so it chooses
among answers that look like the task's own seed answers:

- degenerate_answer: repetition, a sentence said again and again, a word said twice in a row,
  runs of symbols;
- assistant_talk: refusals, apologies and chat-assistant boilerplate;
- answer_relation: an answer that keeps far more, or far less, of its input than the seed
  answers keep of theirs (the answer/input length ratio and their ROUGE-L, each in a window
  of mean +- 2 sigma over the seed pairs, with a floor on sigma as the length windows have),
  and the share of the answer's words found in its input, bounded below only: an extractive
  task's answer ("the overlapping word") that names a word its input does not have.

Each filter is built from the task's seed pairs and turns itself off where the seed answers
themselves would fail it (a task whose answers are apologies keeps its apologies). Each
returns None to keep a candidate, or the reason it drops it, stored with the sample.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from .filters import DegenerateFilter, _tokens, rouge_l

ASSISTANT_TALK = re.compile(
    r"\b(?:i (?:cannot|can ?not|can't|won't|am unable|'m unable|am not able|'m not able)"
    r" (?:assist|help|provide|answer|comply|fulfill|do that|rewrite|complete)"
    r"|(?:unable|not able) to (?:assist|help|provide|answer|comply|fulfill)"
    r"|as an ai\b|as a (?:large )?language model|i'?m (?:just )?an ai\b"
    r"|i don'?t have (?:access|the ability|personal|real-time)"
    r"|i'?d be happy to help|how can i (?:help|assist)|is there anything else"
    r"|i hope this helps|feel free to ask)",
    re.IGNORECASE,
)
# an apology is assistant talk unless the input apologises too (a formal rewrite of "sry cant
# make it" rightly says "I am sorry")
APOLOGY = re.compile(
    r"\b(?:(?:i'?m|i am) (?:so |very |really |truly )?sorry|sorry,? but"
    r"|sorry (?:to hear|for your loss)|i apologi[sz]e|my apologies"
    r"|sorry (?:for|about) (?:any|the) (?:confusion|inconvenience|misunderstanding|trouble))",
    re.IGNORECASE,
)
APOLOGETIC_INPUT = re.compile(r"\b(?:sorry|sry|apolog\w*|my bad|excuse me)\b", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


@dataclass
class DegenerateAnswerFilter:
    """The input-side degenerate-text rules, plus a sentence that comes back ("I'm sorry for
    your loss. I'm sorry for your loss." has enough distinct words to pass those rules), a
    word said twice in a row ("heat heat.", "the the"), a small model's stutter, and a pair
    of words said three times or more that makes up half the answer ("I'm sorry, I'm sorry.
    I'm sorry.")."""

    name: str = "degenerate_answer"

    def __call__(self, answer: str, _input: str = "") -> str | None:
        reason = DegenerateFilter()(answer)
        if reason:
            return reason
        sentences = [s for s in _sentences(answer) if len(s.split()) >= 3]
        if len(sentences) >= 2 and len(set(sentences)) < len(sentences):
            return "a sentence repeats"
        words = _tokens(answer)
        again = next((a for a, b in zip(words, words[1:]) if a == b), None)
        if again:
            return f"a word said twice in a row: {again!r}"
        pairs = Counter(zip(words, words[1:]))
        if pairs:
            pair, times = pairs.most_common(1)[0]
            if times >= 3 and 2 * times >= len(words) / 2:  # its words: half the answer
                return f"a phrase said {times} times: {' '.join(pair)!r}"
        return None


@dataclass
class AssistantTalkFilter:
    """Refusals, apologies and chat-assistant boilerplate."""

    name: str = "assistant_talk"

    def __call__(self, answer: str, text: str = "") -> str | None:
        m = ASSISTANT_TALK.search(answer)
        if m is None and not APOLOGETIC_INPUT.search(text):
            m = APOLOGY.search(answer)
        return f"assistant talk: {m.group(0)!r}" if m else None


@dataclass
class Window:
    """[lo, hi]; None on a side means no bound there."""

    lo: float | None
    hi: float | None

    @classmethod
    def from_values(
        cls,
        values: Sequence[float],
        sigma_floor: float,
        lo_limit: float | None = None,
        hi_limit: float | None = None,
    ) -> "Window":
        mu = statistics.fmean(values)
        sigma = max(statistics.pstdev(values), sigma_floor)
        lo, hi = mu - 2 * sigma, mu + 2 * sigma
        return cls(
            None if lo_limit is not None and lo <= lo_limit else lo,
            None if hi_limit is not None and hi >= hi_limit else hi,
        )

    def outside(self, x: float) -> str | None:
        if self.lo is not None and x < self.lo:
            return f"{x:.2f} < {self.lo:.2f}"
        if self.hi is not None and x > self.hi:
            return f"{x:.2f} > {self.hi:.2f}"
        return None


# floors on sigma: three seeds are too few to estimate a spread, so a window never gets
# narrower than this (log length ratio: 2 sigma = a factor of about 2.7 either way; ROUGE-L:
# 2 sigma = 0.4)
RATIO_SIGMA_FLOOR = 0.5
ROUGE_SIGMA_FLOOR = 0.2


# an input is stemmed once for its n candidate answers, not once per answer
@lru_cache(maxsize=256)
def _stems(text: str) -> tuple[str, ...]:
    from nltk.stem import porter  # rouge-score's own stemmer (its use_stemmer=True)
    from rouge_score import tokenize

    return tuple(tokenize.tokenize(text, porter.PorterStemmer()))


def grounding(answer: str, text: str) -> float:
    """The share of the answer's words (stemmed) that its input has."""
    words, have = _stems(answer), set(_stems(text))
    return sum(w in have for w in words) / len(words) if words else 0.0


def log_ratio(answer: str, text: str) -> float:
    return math.log((len(_tokens(answer)) + 1) / (len(_tokens(text)) + 1))


@dataclass
class AnswerRelationFilter:
    """An answer whose length relative to its input, or whose overlap with its input, is far
    from what the seed pairs show: a rewrite that drops the input for a stock sentence ("whats
    going on" -> "The meeting has been postponed."), or a summary that copies its input."""

    ratio: Window
    overlap: Window
    grounded: Window
    name: str = "answer_relation"

    @classmethod
    def from_seeds(cls, pairs: Sequence[tuple[str, str]]) -> "AnswerRelationFilter":
        ratios = [log_ratio(y, x) for x, y in pairs]
        overlaps = [rouge_l(y, x) for x, y in pairs]
        # lower bound only: an answer may copy more of its input than the seed answers do
        # (the overlap window bounds a copy), but not invent where they extract
        grounded = Window.from_values(
            [grounding(y, x) for x, y in pairs], ROUGE_SIGMA_FLOOR, lo_limit=0.0
        )
        return cls(
            Window.from_values(ratios, RATIO_SIGMA_FLOOR),
            Window.from_values(overlaps, ROUGE_SIGMA_FLOOR, lo_limit=0.0, hi_limit=1.0),
            Window(grounded.lo, None),
        )

    def __call__(self, answer: str, text: str) -> str | None:
        why = self.ratio.outside(log_ratio(answer, text))
        if why:
            return f"answer/input length (log ratio {why})"
        why = self.overlap.outside(rouge_l(answer, text))
        if why:
            return f"answer/input overlap (ROUGE-L {why})"
        why = self.grounded.outside(grounding(answer, text))
        if why:
            return f"answer words found in the input ({why})"
        return None


def answer_filters(seed_pairs: Sequence[tuple[str, str]]) -> list:
    """The answer filters for a generation task, each kept only where every seed answer
    passes it."""
    candidates = [
        DegenerateAnswerFilter(),
        AssistantTalkFilter(),
        AnswerRelationFilter.from_seeds(seed_pairs),
    ]
    return [f for f in candidates if not any(f(y, x) for x, y in seed_pairs)]


def first_answer_failure(answer: str, text: str, filters: Sequence) -> tuple[str, str] | None:
    for f in filters:
        reason = f(answer, text)
        if reason:
            return f.name, reason
    return None
