"""Answer-side filters: what the README's first command trained on (half of its kept answers
were apologies), and the rule that a filter stays off where the seed answers would fail it."""

from __future__ import annotations

import pytest

from sgtui.annotation import OutputAnnotator
from sgtui.answer_filters import (
    AnswerRelationFilter,
    AssistantTalkFilter,
    DegenerateAnswerFilter,
    answer_filters,
)
from sgtui.config import RunParams
from sgtui.paths import REPO_DATA
from sgtui.task import load_task, parse_task

FORMAL = load_task(REPO_DATA / "tasks" / "formal-rewrite.toml")
PAIRS = [(e.input, e.output) for e in FORMAL.examples]

# kept answers of a real run of formal-rewrite before these filters (issue text)
APOLOGIES = [
    "I'm sorry, but I'm unable to assist with that.",
    "I'm sorry for your loss. I'm sorry for your loss. I'm sorry for your loss.",
    "I cannot help with that request.",
    "As an AI language model, I do not have feelings.",
    "I apologize, but I can't rewrite this message.",
    "I'm so sorry to hear that. Please make sure to remember that.",
    "Thanks, sorry for any confusion.",  # kept by a run before this rule ("thanks" its input)
]
GOOD = [
    ("can u send me the file", "Could you please send me the file?"),
    ("hey whats up w the report", "Hello, may I ask about the status of the report?"),
    ("cant make it today sry", "I am sorry, but I will not be able to attend today."),
]


@pytest.mark.parametrize("answer", APOLOGIES)
def test_assistant_talk_is_dropped(answer):
    names = {f.name for f in answer_filters(PAIRS) if f(answer, "gonna be late, traffic")}
    assert "assistant_talk" in names or "degenerate_answer" in names, answer


def test_repeated_sentence_is_degenerate():
    assert DegenerateAnswerFilter()("Thank you for the update. Thank you for the update.")
    assert DegenerateAnswerFilter()("Thank you for the update. See you on Friday.") is None


@pytest.mark.parametrize("answer", ["heat heat.", "How does do the the to be a?", "No, no, no."])
def test_a_word_said_twice_in_a_row_is_degenerate(answer):
    assert "twice in a row" in DegenerateAnswerFilter()(answer)


def test_a_word_used_twice_apart_is_not_degenerate():
    assert DegenerateAnswerFilter()("The dog chased the cat.") is None


def test_a_phrase_said_over_and_over_is_degenerate():
    # kept by a full run of formal-rewrite ("I'm sorry, I can't do that" its input, so the
    # apology itself was allowed)
    assert "3 times" in DegenerateAnswerFilter()("I'm sorry, I'm sorry. I'm sorry.")
    # a pair that comes back in a longer answer is ordinary text
    long = "I will send the report today, I will call you, and I will see you on Friday."
    assert DegenerateAnswerFilter()(long) is None


def test_an_answer_unrelated_to_its_input_is_dropped():
    rel = AnswerRelationFilter.from_seeds(PAIRS)
    assert "overlap" in rel("The meeting has been postponed.", "whats going on")


# an extractive task: every seed answer is a word of its input (NI task039's kind)
OVERLAP = [
    (
        "Sentence1: a bulb needs electrical energy. Sentence2: electrical energy makes light.",
        "electrical",
    ),
    ("Sentence1: wings attach to the thorax. Sentence2: spiracles are on the thorax.", "thorax"),
    ("Sentence1: plants need sunlight to survive. Sentence2: survival needs water.", "survival"),
]


def test_an_extractive_tasks_answer_must_come_from_its_input():
    rel = AnswerRelationFilter.from_seeds(OVERLAP)
    text = "Sentence1: a plant has a heart. Sentence2: a heart is a symbol of love."
    assert "found in the input" in rel("water.", text)
    assert rel("heart.", text) is None
    assert rel("hearts", text) is None  # stemmed, as ROUGE with its stemmer


def test_a_rewrite_may_use_words_its_input_lacks():
    rel = AnswerRelationFilter.from_seeds(PAIRS)
    assert rel.grounded.lo is None or rel.grounded.lo < 0.2  # the seeds invent words too
    assert rel.grounded.hi is None  # copying more is the overlap window's business


@pytest.mark.parametrize("text,answer", GOOD)
def test_formal_rewrites_pass_every_filter(text, answer):
    assert [f.name for f in answer_filters(PAIRS) if f(answer, text)] == []


def test_a_filter_stays_off_where_the_seed_answers_talk_that_way():
    task = parse_task(
        {
            "name": "apologise",
            "type": "generation",
            "instruction": "Write a polite apology for the situation.",
            "examples": [
                {"input": "late for dinner", "output": "I'm sorry I was late."},
                {"input": "broke a cup", "output": "I apologize for the cup."},
                {"input": "forgot a call", "output": "Sorry, but I forgot."},
            ],
        }
    )
    names = [f.name for f in answer_filters([(e.input, e.output) for e in task.examples])]
    assert "assistant_talk" not in names and "degenerate_answer" in names
    assert AssistantTalkFilter()("I'm sorry I was late.")  # it would have dropped them
    assert AssistantTalkFilter()("I'm sorry I was late.", "sry, late for dinner") is None


def test_the_annotator_drops_the_sample_by_the_filter_that_failed_every_answer():
    ann = OutputAnnotator(FORMAL, RunParams.defaults_for("generation", "small"))
    assert ann.answer_filters, "the small mode turns the answer filters on"
    result, filt, reason = ann.vote([APOLOGIES[0]] * 6 + [APOLOGIES[2]] * 4, "gonna be late")
    assert (filt, result.winner) == ("assistant_talk", None) and "10 of 10" in reason
    # with good answers among them, the vote runs on those alone
    good = "I will be late because of the traffic."
    result, filt, _ = ann.vote([APOLOGIES[0]] * 6 + [good] * 4, "gonna be late, traffic")
    assert (filt, result.winner) == (None, good)
    assert result.dropped["assistant_talk"] == 6


def test_a_sample_whose_every_answer_fails_the_length_window_is_dropped_by_that_window():
    """Not by "vote": the run's counts must say that the output length window dropped it."""
    params = RunParams.defaults_for("generation", "small").override(
        answer_filters=False, output_length_filter=True
    )
    ann = OutputAnnotator(FORMAL, params)
    long = "I would like to let you know that I will be late. " * 4
    result, filt, reason = ann.vote([long] * 10, "gonna be late")
    assert (filt, result.winner, result.survivors) == ("output_length", None, 0)
    assert "10 output_length" in reason
    # empty answers beside them: the filter is still the one that judged answers, and the
    # reason counts both, so the two never name different things
    result, filt, reason = ann.vote([""] * 7 + [long] * 3, "gonna be late")
    assert (filt, result.winner) == ("output_length", None)
    assert "7 empty, 3 output_length" in reason
    # answers that are all empty were judged by no filter: that is still the vote's drop
    result, filt, _ = ann.vote([""] * 10, "gonna be late")
    assert (filt, result.winner) == ("vote", None)


def test_the_paper_mode_has_no_answer_filters():
    ann = OutputAnnotator(FORMAL, RunParams.defaults_for("generation", "paper"))
    assert ann.answer_filters == []
    result, filt, _ = ann.vote([APOLOGIES[0]] * 10, "gonna be late")
    assert filt != "assistant_talk" and "assistant_talk" not in result.dropped


@pytest.mark.slow
def test_a_real_run_of_formal_rewrite_keeps_no_apology_refusal_or_repetition(tmp_path, llama):
    """The README's demo task with its default (small-mode) parameters, 2 rounds: no kept
    answer is an apology, a refusal, assistant talk or a repetition, and the filters that
    threw such answers out are named on the samples they dropped."""
    import re

    from sgtui.pipeline import SynthesisRun
    from sgtui.store import Store
    from sgtui.synthesis import create_run

    params = RunParams.defaults_for("generation", "small").override(rounds=2)
    store = Store(tmp_path / "f.db")
    rid = create_run(store, FORMAL, params, llama.model_path, "llama-cpp")
    SynthesisRun(store, rid, llama).run()
    kept = [s for s in store.training_pairs(rid)]
    assert len(kept) >= 5, "too little kept to judge"
    talk = re.compile(r"sorry|apolog|unable to|i cannot|i can't|as an ai|language model", re.I)
    for s in kept:
        answer = s["output"]
        assert not (talk.search(answer) and not talk.search(s["input"])), (s["input"], answer)
        assert DegenerateAnswerFilter()(answer) is None, answer
    dropped = {s["filter"] for s in store.samples(rid) if s["status"] == "filtered"}
    assert dropped & {"assistant_talk", "degenerate_answer", "answer_relation"}, dropped


@pytest.mark.slow
def test_input_dependence_drops_answers_that_do_not_depend_on_their_input(tmp_path, llama):
    """A real run with the input-dependence filter: each kept answer is scored after its own
    input and after another (backends' score()); with the threshold at the seed answers' own
    dependence (share 1), answers that depend on their input less than a right answer does are
    dropped, with the figures in the reason; at share 0 only answers likelier after another
    input go. The scores are deterministic: a second check of the same run drops nothing more."""
    from sgtui.pipeline import SynthesisRun
    from sgtui.store import Store
    from sgtui.synthesis import create_run

    def run(share: float):
        params = RunParams.defaults_for("generation", "small").override(
            rounds=1, per_round=6, n=3, input_dependence=True, min_dependence=share
        )
        store = Store(tmp_path / f"d{share}.db")
        rid = create_run(store, FORMAL, params, llama.model_path, "llama-cpp")
        synthesis = SynthesisRun(store, rid, llama)
        synthesis.run()
        return store, rid, synthesis

    store, rid, synthesis = run(1.0)
    dropped = [s for s in store.samples(rid) if s["filter"] == "input_dependence"]
    for s in dropped:
        assert "does not depend on its input" in s["reason"] and "nats per token" in s["reason"]
    strict_kept = {s["input"] for s in store.training_pairs(rid)}
    store0, rid0, synthesis0 = run(0.0)
    lenient_kept = {s["input"] for s in store0.training_pairs(rid0)}
    # the same inputs and answers (same seeds): the strict threshold keeps a subset
    assert strict_kept <= lenient_kept
    assert dropped or strict_kept == lenient_kept
    before = [(s["id"], s["status"]) for s in store.samples(rid)]
    synthesis.check_input_dependence()
    assert [(s["id"], s["status"]) for s in store.samples(rid)] == before
