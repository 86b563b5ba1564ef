"""The self-consistency vote over sampled outputs (SELF_GUIDE.md section 3.3)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from .filters import first_failure, rouge_l


@dataclass
class VoteResult:
    winner: str | None
    count: int
    survivors: int
    votes: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # filter name -> candidates dropped
    reason: str = ""
    agreement: float | None = None  # consensus "mbr": the winner's mean ROUGE-L to the others
    # no candidate survived: the filter that dropped most of them (None: all empty)
    dropped_by: str | None = None

    @property
    def share(self) -> float:
        return self.count / self.survivors if self.survivors else 0.0


def _survivors(
    candidates: Sequence[str | None], filters: Sequence
) -> tuple[list[str], dict[str, int]]:
    """The stripped, non-empty candidates that pass the filters, and how many each filter
    dropped."""
    survivors: list[str] = []
    dropped: dict[str, int] = {}
    for c in candidates:
        if c is None or not c.strip():
            dropped["empty"] = dropped.get("empty", 0) + 1
            continue
        c = c.strip()
        fail = first_failure(c, filters)
        if fail:
            dropped[fail[0]] = dropped.get(fail[0], 0) + 1
            continue
        survivors.append(c)
    return survivors, dropped


def _nothing_left(dropped: dict[str, int]) -> VoteResult:
    """No candidate is left. `dropped_by` names the filter that dropped most of them; empty
    answers were judged by none, so where every one was empty it stays None."""
    real = {k: v for k, v in dropped.items() if k != "empty"}
    top = max(real, key=real.get) if real else None
    counts = ", ".join(f"{v} {k}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
    reason = f"no candidate survived the filters ({counts or 'none drawn'})"
    return VoteResult(None, 0, 0, {}, dropped, reason, dropped_by=top)


def self_consistency_vote(
    candidates: Sequence[str | None], filters: Sequence = (), min_frequency: float = 0.3
) -> VoteResult:
    """Drop empty candidates, strip, run the output filters, then vote.

    The winner is the most frequent string; ties go to the shortest, then the first seen. The
    input is kept only if the winner's share of the surviving candidates is >= min_frequency."""
    survivors, dropped = _survivors(candidates, filters)
    if not survivors:
        return _nothing_left(dropped)
    counts = Counter(survivors)
    order = {s: i for i, s in reversed(list(enumerate(survivors)))}
    winner = min(counts, key=lambda s: (-counts[s], len(s), order[s]))
    result = VoteResult(winner, counts[winner], len(survivors), dict(counts.most_common()), dropped)
    if result.share < min_frequency:
        result.reason = (
            f"no consensus: the top answer has {counts[winner]} of {len(survivors)} "
            f"votes, below {min_frequency:.0%}"
        )
        result.winner = None
    return result


def mbr_vote(
    candidates: Sequence[str | None], filters: Sequence = (), min_agreement: float = 0.5
) -> VoteResult:
    """Consensus for free text: minimum-Bayes-risk selection under ROUGE-L.

    After the same filtering as the exact vote, the winner is the candidate with the highest
    mean word-level ROUGE-L to the other candidates (the one the others agree with most); ties
    go to the shortest, then the first seen. Sampled answers to an open task rarely repeat
    word for word, so exact-match counting keeps few inputs and prefers the short, generic
    answers that do repeat. The input is kept only if the winner's agreement is at least
    min_agreement. A lone survivor agrees with itself (agreement 1), as a lone vote is a
    share of 1 in the exact vote."""

    survivors, dropped = _survivors(candidates, filters)
    if not survivors:
        return _nothing_left(dropped)
    counts = Counter(survivors)
    distinct = list(dict.fromkeys(survivors))  # first-seen order
    n = len(survivors)
    if n == 1:
        agreement = {distinct[0]: 1.0}
    else:
        sim = {(a, b): rouge_l(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1 :]}
        agreement = {}
        for a in distinct:
            # the other copies of a agree with it fully; every other answer by its ROUGE-L
            total = (
                counts[a]
                - 1
                + sum(counts[b] * sim.get((a, b), sim.get((b, a), 0.0)) for b in distinct if b != a)
            )
            agreement[a] = total / (n - 1)
    order = {s: i for i, s in enumerate(distinct)}
    winner = min(distinct, key=lambda s: (-round(agreement[s], 9), len(s), order[s]))
    result = VoteResult(
        winner, counts[winner], n, dict(counts.most_common()), dropped, agreement=agreement[winner]
    )
    if agreement[winner] < min_agreement:
        result.reason = (
            f"no consensus: the most agreed-on answer has a mean ROUGE-L of "
            f"{agreement[winner]:.2f} to the other {n - 1}, below "
            f"{min_agreement:.2f}"
        )
        result.winner = None
    return result
