"""Stage 2: annotate each kept input by sampling n answers and voting (SELF_GUIDE.md section 4),
then, for classification, validate labels and balance the classes (section 3.4)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Sequence

from .answer_filters import answer_filters, first_answer_failure
from .config import RunParams
from .filters import LengthFilter, NoiseFilter
from .input_generation import slot_rng
from .task import Task
from .vote import VoteResult, mbr_vote, self_consistency_vote


def map_to_label(answer: str, labels: Sequence[str]) -> str | None:
    """What the reference code meant to do: an answer that is a label, or that contains exactly
    one of the labels as a whole word, becomes that label; anything else is not a label."""
    answer = answer.strip()
    if answer in labels:
        return answer
    found = {lab for lab in labels if re.search(r"(?<!\w)" + re.escape(lab) + r"(?!\w)", answer)}
    return found.pop() if len(found) == 1 else None


class OutputAnnotator:
    def __init__(self, task: Task, params: RunParams):
        self.task = task
        self.params = params
        self.filters: list = []
        if params.output_length_filter and not task.is_classification:
            self.filters.append(
                LengthFilter.from_seeds(
                    task.seed_outputs, "output_length", params.length_sigma_floor
                )
            )
        if params.noise_filter:
            self.filters.append(NoiseFilter.for_task(task.extra_noise_terms))
        # answer-side filters see each answer with its input (sgtui/answer_filters.py)
        self.answer_filters: list = []
        if params.answer_filters and not task.is_classification:
            self.answer_filters = answer_filters([(e.input, e.output) for e in task.examples])

    def vote(
        self, candidates: Sequence[str], text: str | None = None
    ) -> tuple[VoteResult, str | None, str | None]:
        """Return the vote, and (filter, reason) if the input is dropped. `text` is the input
        the candidates answer; the answer filters need it."""
        dropped: dict[str, int] = {}
        reasons: dict[str, str] = {}
        if self.answer_filters and text is not None:
            kept = []
            for c in candidates:
                fail = (
                    first_answer_failure(c.strip(), text, self.answer_filters)
                    if c and c.strip()
                    else None
                )
                if fail:
                    dropped[fail[0]] = dropped.get(fail[0], 0) + 1
                    reasons.setdefault(fail[0], fail[1])
                else:
                    kept.append(c)
            if dropped and not any(c and c.strip() for c in kept):
                # every answer failed an answer filter: the sample is dropped by that filter
                name = max(dropped, key=dropped.get)
                result = VoteResult(
                    None,
                    0,
                    0,
                    {},
                    dropped,
                    f"{dropped[name]} of {len(candidates)} answers: {reasons[name]}",
                )
                return result, name, result.reason
            candidates = kept
        result, filt, reason = self._vote(candidates)
        for name, n in dropped.items():
            result.dropped[name] = result.dropped.get(name, 0) + n
        return result, filt, reason

    def sample_fields(self, candidates: Sequence[str], text: str) -> dict:
        """The vote on an input's answers as the fields of its sample row."""
        result, filt, reason = self.vote(candidates, text)
        return dict(
            votes=result.votes,
            output=result.winner,
            label=result.winner if self.task.is_classification and not filt else None,
            status="filtered" if filt else "kept",
            filter=filt,
            reason=reason,
        )

    def _vote(self, candidates: Sequence[str]) -> tuple[VoteResult, str | None, str | None]:
        if self.task.is_classification:
            mapped = []
            for c in candidates:
                lab = map_to_label(c or "", self.task.labels)
                mapped.append(lab if lab is not None else c)
            candidates = mapped
        if self.task.is_classification or self.params.consensus == "exact":
            result = self_consistency_vote(candidates, self.filters, self.params.min_frequency)
        else:
            result = mbr_vote(candidates, self.filters, self.params.min_agreement)
        if result.winner is None:
            # every answer failed a filter of the answers (the output length window, the noise
            # terms): the sample is dropped by the one that dropped most, as when every answer
            # fails an answer filter, so the counts name what did the dropping
            return result, result.dropped_by or "vote", result.reason
        if self.task.is_classification and result.winner not in self.task.labels:
            return result, "label", f"answer {result.winner[:40]!r} is not a label"
        return result, None, None


def balance(
    samples: Sequence[dict], seed: int, min_labels: int = 1
) -> tuple[set[int], dict[str, int]]:
    """Down-sample to equal counts per label that occurs. Returns (ids to keep, counts per label).
    Labels that never occur are absent; an empty input gives an empty set, and so do fewer than
    `min_labels` distinct labels (the paper's rule is 1: one label alone is kept whole)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for s in samples:
        by_label[s["label"]].append(s["id"])
    if not by_label:
        return set(), {}
    if len(by_label) < min_labels:
        return set(), dict(Counter(s["label"] for s in samples))
    m = min(len(v) for v in by_label.values())
    rng = slot_rng(seed, "balance")
    keep: set[int] = set()
    for label in sorted(by_label):
        keep.update(rng.sample(sorted(by_label[label]), m))
    return keep, dict(Counter(s["label"] for s in samples))
