"""Rule-based filters (SELF_GUIDE.md section 3).

Each filter has a name and returns None to keep a candidate or a short reason to drop it. The
name and the reason are stored with the sample, so a person can see why it was dropped.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from .paths import REPO_DATA


@lru_cache(maxsize=1)
def canned_noise_terms() -> tuple[str, ...]:
    data = json.loads((REPO_DATA / "noise_terms.json").read_text(encoding="utf-8"))
    return tuple(data["terms"])


def length_window(texts: Sequence[str]) -> tuple[int | None, int]:
    """[int(mu-2sigma), int(mu+2sigma)) over character lengths, population sigma.

    A lower bound of 0 or below means no lower bound (the reference code's pre-fix bug
    rejected everything in that case)."""
    lengths = [len(t) for t in texts]
    mu = statistics.fmean(lengths)
    sigma = statistics.pstdev(lengths)
    lo, hi = int(mu - 2 * sigma), int(mu + 2 * sigma)
    return (lo if lo > 0 else None), hi


@dataclass
class EmptyFilter:
    name: str = "empty"

    def __call__(self, text: str | None) -> str | None:
        return "empty" if text is None or not text.strip() else None


@dataclass
class LengthFilter:
    """Keeps lo <= len(text) < hi (characters). Measured on the stripped text."""

    lo: int | None
    hi: int
    name: str = "length"

    @classmethod
    def from_seeds(cls, texts: Sequence[str], name: str = "length") -> "LengthFilter":
        lo, hi = length_window(texts)
        return cls(lo, hi, name)

    def __call__(self, text: str) -> str | None:
        n = len(text)
        if self.lo is not None and n < self.lo:
            return f"{n} chars, shorter than {self.lo}"
        if n >= self.hi:
            return f"{n} chars, not under {self.hi}"
        return None


@dataclass
class NoiseFilter:
    """Drops text containing any noise term as a case-sensitive substring."""

    terms: tuple[str, ...]
    name: str = "noise"

    @classmethod
    def for_task(cls, extra_terms: Iterable[str]) -> "NoiseFilter":
        return cls(tuple(dict.fromkeys([*canned_noise_terms(), *extra_terms])))

    def __call__(self, text: str) -> str | None:
        for term in self.terms:
            if term in text:
                return f"contains {term!r}"
        return None


class DuplicateFilter:
    """Exact match against everything seen so far (the pool and this round's survivors)."""

    name = "duplicate"

    def __init__(self, seen: Iterable[str] = ()):
        self.seen = {s.strip() for s in seen}

    def __call__(self, text: str) -> str | None:
        return "exact duplicate" if text.strip() in self.seen else None

    def add(self, text: str) -> None:
        self.seen.add(text.strip())


def first_failure(text: str, filters: Sequence) -> tuple[str, str] | None:
    """Run filters in order; return (filter name, reason) of the first that drops the text."""
    for f in filters:
        reason = f(text)
        if reason:
            return f.name, reason
    return None
