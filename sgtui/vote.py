"""The self-consistency vote over sampled outputs (SELF_GUIDE.md section 3.3)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from .filters import first_failure


@dataclass
class VoteResult:
    winner: str | None
    count: int
    survivors: int
    votes: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # filter name -> candidates dropped
    reason: str = ""

    @property
    def share(self) -> float:
        return self.count / self.survivors if self.survivors else 0.0


def self_consistency_vote(candidates: Sequence[str | None], filters: Sequence = (),
                          min_frequency: float = 0.3) -> VoteResult:
    """Drop empty candidates, strip, run the output filters, then vote.

    The winner is the most frequent string; ties go to the shortest, then the first seen. The
    input is kept only if the winner's share of the surviving candidates is >= min_frequency."""
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
    if not survivors:
        top = max(dropped, key=dropped.get) if dropped else "empty"
        return VoteResult(None, 0, 0, {}, dropped, f"no candidate survived the filters (most: {top})")
    counts = Counter(survivors)
    order = {s: i for i, s in reversed(list(enumerate(survivors)))}
    winner = min(counts, key=lambda s: (-counts[s], len(s), order[s]))
    result = VoteResult(winner, counts[winner], len(survivors), dict(counts.most_common()), dropped)
    if result.share < min_frequency:
        result.reason = (f"no consensus: the top answer has {counts[winner]} of {len(survivors)} "
                         f"votes, below {min_frequency:.0%}")
        result.winner = None
    return result
