"""The paper's evaluation metrics (SELF_GUIDE.md section 6).

Classification: exact match after label extraction and Natural-Instructions normalisation.
Generation: ROUGE-L, both the standard word-level one (rouge-score, as the NI benchmark scores
it) and the reference code's character-level LCS F1.

Every function here returns a fraction in [0, 1]; the evaluation layer multiplies by 100 when it
reports and stores scores.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from functools import lru_cache

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """Natural-Instructions normalisation: lower-case, remove ASCII punctuation, collapse
    whitespace. Unlike SQuAD's version, articles are kept: the NI evaluation script (and the
    SELF-GUIDE reference code that cites it) leaves them in, and SELF_GUIDE.md section 6 names
    only lower-casing, punctuation and whitespace."""
    return " ".join(s.lower().translate(_PUNCT).split())


def label_set(golds: Sequence[str]) -> list[str]:
    """The labels of an evaluated split: its distinct gold outputs in first-appearance order
    (not the task's declared labels, as in the paper). Empty strings are not labels."""
    return [g for g in dict.fromkeys(golds) if g]


def extract_label(prediction: str, labels: Sequence[str]) -> str | None:
    """The paper's label extraction: find every case-sensitive occurrence of any label (one
    regex alternation, labels in the order given) and return the last one; None if none occurs.
    Short labels such as "A" or "1" match that character anywhere in the output."""
    pattern = _alternation(tuple(lab for lab in labels if lab))
    if pattern is None:
        return None
    last = None
    for m in pattern.finditer(prediction):
        last = m.group()
    return last


@lru_cache(maxsize=64)
def _alternation(labels: tuple[str, ...]) -> re.Pattern[str] | None:
    if not labels:
        return None
    return re.compile("|".join(re.escape(lab) for lab in labels))


def exact_match(prediction: str, gold: str, labels: Sequence[str]) -> float:
    """1.0 if the label extracted from the prediction equals the gold after normalisation."""
    found = extract_label(prediction, labels)
    if found is None:
        return 0.0
    return float(normalize_answer(found) == normalize_answer(gold))


@lru_cache(maxsize=1)
def _word_scorer():
    from rouge_score import rouge_scorer

    # use_stemmer=True as in the NI benchmark's own scorer (eval/automatic/evaluation.py).
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_word(prediction: str, gold: str) -> float:
    """Standard word-level ROUGE-L F-measure (rouge-score, Porter stemming, its own
    lower-casing tokenizer that keeps only ASCII letters and digits)."""
    return _word_scorer().score(target=gold, prediction=prediction)["rougeL"].fmeasure


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of two strings, character by character.

    Bit-parallel (Allison and Dix 1986; Hyyro 2004): one big-integer step per character of b,
    so long generations score quickly. Bit i of `v` is 0 once a[i] is matched by the LCS."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l_char(prediction: str, gold: str) -> float:
    """The reference code's "ROUGE-L": F1 of the character-level LCS of the raw strings (no
    lower-casing, tokenising or stemming); 0 when the LCS is empty."""
    lcs = lcs_length(gold, prediction)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(gold)
    return 2 * precision * recall / (precision + recall)
