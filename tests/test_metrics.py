"""The evaluation metrics against values worked out by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgtui.metrics import (
    exact_match,
    extract_label,
    label_set,
    lcs_length,
    normalize_answer,
    rouge_l_char,
    rouge_l_word,
)


def test_normalize_answer_lowercases_strips_punctuation_and_whitespace():
    assert normalize_answer("  Hello,   World!\n") == "hello world"
    assert normalize_answer("B_entails_A") == "bentailsa"  # "_" is ASCII punctuation
    # NI keeps articles (SQuAD's normalisation would drop "the" and "a")
    assert normalize_answer("The answer is a cat.") == "the answer is a cat"
    assert normalize_answer("") == ""


def test_label_set_is_distinct_golds_in_first_appearance_order():
    assert label_set(["N", "C", "N", "", "C"]) == ["N", "C"]


def test_extract_label_takes_the_last_occurrence():
    labels = ["positive", "negative"]
    assert extract_label("not positive, rather negative", labels) == "negative"
    assert extract_label("negative? no: positive", labels) == "positive"
    assert extract_label("I cannot tell", labels) is None
    # case-sensitive, as in the reference code
    assert extract_label("Positive", labels) is None


def test_extract_label_alternation_follows_label_order():
    # at one position the first label in the alternation wins, so order matters when one label
    # is a prefix of another
    assert extract_label("not entailment", ["not", "not entailment"]) == "not"
    assert extract_label("not entailment", ["not entailment", "not"]) == "not entailment"
    # a label inside a longer one's match is not found again (matches do not overlap)
    assert extract_label("B_entails_A", ["B_entails_A", "A"]) == "B_entails_A"


def test_short_labels_match_any_occurrence_of_the_character():
    labels = ["A", "B"]
    assert extract_label("Answer: B", labels) == "B"
    assert extract_label("B is wrong, so A", labels) == "A"
    assert extract_label("Both seem fine", labels) == "B"
    assert extract_label("none", labels) is None
    assert extract_label("anything", []) is None
    assert extract_label("anything", [""]) is None


def test_exact_match_uses_extraction_and_normalisation():
    labels = ["positive", "negative"]
    assert exact_match("I think it is positive.", "positive", labels) == 1.0
    assert exact_match("positive, no wait, negative", "positive", labels) == 0.0
    assert exact_match("The answer is Positive", "positive", labels) == 0.0  # nothing extracted
    # the extracted label and the gold are compared after normalisation
    assert exact_match("label: Yes.", "Yes.", ["Yes.", "No."]) == 1.0
    assert exact_match("B", "B", ["A", "B"]) == 1.0


@pytest.mark.parametrize(
    "a, b, n",
    [
        ("ABCBDAB", "BDCABA", 4),  # the textbook example: BCBA
        ("abc", "abc", 3),
        ("abc", "cba", 1),
        ("abc", "", 0),
        ("", "abc", 0),
        ("abc", "xyz", 0),
        ("aaaa", "aa", 2),
    ],
)
def test_lcs_length_by_hand(a, b, n):
    assert lcs_length(a, b) == n
    assert lcs_length(b, a) == n


def _lcs_table(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


@given(st.text(alphabet="abcd ", max_size=40), st.text(alphabet="abcd ", max_size=40))
def test_lcs_length_matches_the_dynamic_programme(a, b):
    assert lcs_length(a, b) == _lcs_table(a, b)


def test_rouge_l_char_by_hand():
    assert rouge_l_char("abcd", "abxd") == pytest.approx(0.75)  # LCS 3, P = R = 3/4
    assert rouge_l_char("ab", "abcd") == pytest.approx(2 / 3)  # LCS 2, P 1, R 1/2
    assert rouge_l_char("ABC", "abc") == 0.0  # raw strings: no lower-casing
    assert rouge_l_char("", "abc") == 0.0
    assert rouge_l_char("abc", "") == 0.0
    assert rouge_l_char("same", "same") == 1.0


def test_rouge_l_word_by_hand():
    # LCS "the cat on the mat" = 5 of 6 words each side
    assert rouge_l_word("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l_word("The Cat!", "the cat") == 1.0  # tokenizer lower-cases, drops punctuation
    assert rouge_l_word("cats running", "cat run") == 1.0  # Porter stemming, as NI scores it
    assert rouge_l_word("", "cat") == 0.0
    assert rouge_l_word("dog", "cat") == 0.0
