"""Rule-based filters (SELF_GUIDE.md section 3).

Each filter has a name and returns None to keep a candidate or a short reason to drop it. The
name and the reason are stored with the sample, so a person can see why it was dropped.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

from .paths import REPO_DATA


@lru_cache(maxsize=1)
def canned_noise_terms() -> tuple[str, ...]:
    data = json.loads((REPO_DATA / "noise_terms.json").read_text(encoding="utf-8"))
    return tuple(data["terms"])


def length_window(texts: Sequence[str], sigma_floor: float = 0.0) -> tuple[int | None, int]:
    """[int(mu-2sigma), int(mu+2sigma)) over character lengths, population sigma.

    `sigma_floor` makes sigma at least that fraction of mu: three seeds of nearly equal length
    give a window a few characters wide (0 is the paper's rule; the small mode uses 0.25).
    A lower bound of 0 or below means no lower bound (the reference code's pre-fix bug
    rejected everything in that case)."""
    lengths = [len(t) for t in texts]
    mu = statistics.fmean(lengths)
    sigma = max(statistics.pstdev(lengths), sigma_floor * mu)
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
    def from_seeds(
        cls, texts: Sequence[str], name: str = "length", sigma_floor: float = 0.0
    ) -> "LengthFilter":
        lo, hi = length_window(texts, sigma_floor)
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


# -- filters for small-model failure modes (docs/METHOD.md, "small" mode) ---------------------

ECHO_TERMS = (
    "[input]",
    "[output]",
    "[instruction]",
    "Input:",
    "Answer:",
    "###",
    "InputGenerator",
    "high-quality",
    "low-quality",
    "Example inputs",
    "Inputs whose answer",
)


@dataclass
class PromptEchoFilter:
    """Drops a candidate that repeats the prompt template's own words, or the instruction."""

    instruction: str = ""
    terms: tuple[str, ...] = ECHO_TERMS
    threshold: float = 0.6
    name: str = "prompt_echo"

    def __call__(self, text: str) -> str | None:
        for term in self.terms:
            if term in text:
                return f"repeats the template's {term!r}"
        if self.instruction and len(text) >= 20:
            score = rouge_l(text, self.instruction)
            if score >= self.threshold:
                return f"repeats the instruction (ROUGE-L {score:.2f})"
        return None


def _tokens(text: str) -> list[str]:
    from rouge_score import tokenize

    return tokenize.tokenize(text, None)


def rouge_l(a: str, b: str) -> float:
    """Word-level ROUGE-L F1 (rouge-score's tokenisation and LCS)."""
    from rouge_score.rouge_scorer import _score_lcs

    return _score_lcs(_tokens(b), _tokens(a)).fmeasure


class NearCopyFilter:
    """Drops a candidate whose ROUGE-L against a seed or pool input is above the threshold
    (self-instruct uses 0.7)."""

    name = "near_copy"

    def __init__(self, references: Iterable[str] = (), threshold: float = 0.7):
        self.threshold = threshold
        self.refs: list[tuple[str, list[str]]] = []
        for r in references:
            self.add(r)

    def add(self, text: str) -> None:
        self.refs.append((text, _tokens(text)))

    def __call__(self, text: str) -> str | None:
        from rouge_score.rouge_scorer import _score_lcs

        toks = _tokens(text)
        if not toks:
            return None
        for ref, ref_toks in self.refs:
            if not ref_toks:
                continue
            score = _score_lcs(ref_toks, toks).fmeasure
            if score > self.threshold:
                return f"ROUGE-L {score:.2f} with {ref[:40]!r}"
        return None


@dataclass
class DegenerateFilter:
    """Drops repetition, digit or symbol runs, and text with too few distinct characters."""

    name: str = "degenerate"

    def __call__(self, text: str) -> str | None:
        words = text.split()
        if len(words) >= 8:
            unique = len(set(words)) / len(words)
            if unique < 0.4:
                return f"repetitive: {unique:.0%} distinct words"
            grams = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
            top = max(grams.count(g) for g in set(grams))
            if top >= 3 and top * 3 >= len(words) * 0.5:
                return "a phrase repeats over and over"
        stripped = "".join(text.split())
        if len(stripped) >= 8:
            non_alpha = sum(not c.isalpha() for c in stripped) / len(stripped)
            if non_alpha > 0.5:
                return f"{non_alpha:.0%} digits or symbols"
        run = 0
        for c in stripped:
            run = run + 1 if not c.isalpha() else 0
            if run >= 12:
                return "a long run of digits or symbols"
        if len(text) >= 20 and len(set(text)) / len(text) < 0.08:
            return "too few distinct characters"
        return None


# a field label: a word, or a word and a number ("Sentence2", "Sentence 1"), then a colon and
# a space or the end of the text; it opens the text or follows a space or a sentence's end
FIELD_LABEL = re.compile(r"(?:^|(?<=[\s.!?]))([A-Za-z][a-z]*(?: ?\d+)?):(?=\s|$)")


def field_labels(text: str) -> list[str]:
    return FIELD_LABEL.findall(text)


@dataclass
class FormFilter:
    """Drops a candidate that lacks the fields every seed input has ("Sentence1:", "Sentence2:";
    "Premise:", "Hypothesis:"), has one of them twice, or has them out of order. A small model
    often writes half an item ("Sentence1: ..." and no second sentence). Passes everything when
    the seeds share no field. `--form-filter`, off by default: dropping the half items did not
    make the fine-tune better (docs/METHOD.md, "Form filter")."""

    fields: tuple[str, ...] = ()
    ordered: bool = True  # the seeds give the fields in one order
    name: str = "form"

    @classmethod
    def from_seeds(cls, texts: Sequence[str]) -> "FormFilter":
        """The labels found exactly once in every seed input, in the first seed's order. One
        seed cannot tell a field from a colon in its prose, so one seed gives no fields."""
        found = [field_labels(t) for t in texts]
        if len(found) < 2:
            return cls()
        fields = tuple(f for f in found[0] if all(ls.count(f) == 1 for ls in found))
        ordered = all([f for f in ls if f in fields] == list(fields) for ls in found)
        return cls(fields, ordered)

    def __call__(self, text: str) -> str | None:
        if not self.fields:
            return None
        labels = field_labels(text)
        for f in self.fields:
            if f not in labels:
                return f"has no {f + ':'!r}, which every example input has"
            if labels.count(f) > 1:
                return f"has {f + ':'!r} more than once"
        order = [labels.index(f) for f in self.fields]
        if self.ordered and order != sorted(order):
            return "has the example inputs' fields in another order"
        return None
