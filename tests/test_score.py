"""Log-probability scoring of continuations, log P(continuation | prompt) (Generator.score).

The llama.cpp backends are checked on the real bundled model against log-probabilities
computed independently from a plain llama.cpp context that keeps every position's logits; a
pair must score the same alone or beside other pairs, and scoring must leave generation as
it was. The transformers backend is checked on a tiny random model against one forward pass
per continuation token.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from backends.base import SamplingParams, ScoreStopped, TokenScore
from sgtui.errors import SgtuiError

slow = pytest.mark.slow

REPEAT = "Repeat: the cat sat on the mat\nAnswer:"
PAIRS = [
    (REPEAT, " the cat sat on the mat"),
    (
        "Translate into French, keeping the tone of the English sentence.\nEnglish: good "
        "morning, my friend\nFrench:",
        " bonjour, mon ami",
    ),
    ("Q: What is two plus two?\nA:", " 4"),
    (
        "Write a sentence about the sea.\n",
        "The sea is calm and blue tonight, and the boats rest in the harbour until morning.",
    ),
    ("x", " y"),
]
# about 560 tokens of prompt: more than one 512-token batch
LONG_PROMPT = "The quick brown fox jumps over the lazy dog near the river bank. " * 40 + "\nGist:"
LONG_CONT = " A fox jumps over a dog again and again by the river."
REVIEW = (
    "Is the review positive or negative?\nReview: The soup was cold and the waiter never "
    "came back.\nAnswer:"
)
LABELS = [" positive", " negative", " neutral"]


@pytest.fixture(scope="module")
def llama(bundled_model):
    """The batched backend on one thread (the machine running the tests may be shared, and
    llama.cpp's threads spin: more of them than free cores collapse)."""
    from backends.llama_batch import BatchedLlamaCppGenerator

    gen = BatchedLlamaCppGenerator(bundled_model, n_threads=1)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def reference(bundled_model):
    """The bundled model in a plain high-level llama.cpp context keeping all logits rows."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=bundled_model,
        logits_all=True,
        n_ctx=768,
        n_threads=1,
        n_threads_batch=1,
        verbose=False,
    )
    yield llm
    llm.close()


def reference_score(ref, prompt: str, cont: str) -> TokenScore:
    """Sum of log-softmax(logits row)[next token] over the continuation, from ref.scores."""
    p = ref.tokenize(prompt.encode(), add_bos=True, special=True)  # as create_completion does
    c = ref.tokenize(cont.encode(), add_bos=False, special=False)
    ref.reset()
    ref.eval(p + c)
    rows = np.asarray(ref.scores[len(p) - 1 : len(p) + len(c) - 1], dtype=np.float64)
    top = rows.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    return TokenScore(float(sum(rows[i, t] - lse[i] for i, t in enumerate(c))), len(c))


def assert_close(got: TokenScore, want: TokenScore, per_token: float = 1e-3) -> None:
    assert got.n_tokens == want.n_tokens
    assert abs(got.logprob - want.logprob) <= per_token * want.n_tokens, (got, want)


@slow
def test_scores_are_the_models_log_probabilities(llama, reference):
    prompts, conts = zip(*PAIRS)
    for (prompt, cont), got in zip(PAIRS, llama.score(prompts, conts)):
        assert got.logprob < 0
        assert_close(got, reference_score(reference, prompt, cont))


@slow
def test_labels_scored_against_one_prompt_are_the_models_log_probabilities(llama, reference):
    """One prompt, several continuations (label scoring): the prompt is evaluated once."""
    got = llama.score([REVIEW] * 3, LABELS)
    for label, score in zip(LABELS, got):
        assert_close(score, reference_score(reference, REVIEW, label))
    assert got[1].logprob > got[0].logprob


@slow
def test_a_pair_scores_the_same_alone_or_beside_others(llama):
    target = PAIRS[1]
    alone = llama.score([target[0]], [target[1]])[0]
    # a longer pair among the others makes the decodes take chunks of another size
    story = ("Story: " + "Once upon a time there was a small village by the sea. " * 9, " The end.")
    others = [p for p in PAIRS if p != target] + [story]
    for at in (0, 2, 5):  # first, among, last: other sequence ids, neighbours and padding
        prompts, conts = zip(*others[:at], target, *others[at:])
        beside = llama.score(prompts, conts)[at]
        assert beside.n_tokens == alone.n_tokens
        assert abs(beside.logprob - alone.logprob) <= 1e-4


@slow
def test_the_repeated_text_is_far_likelier_than_an_unrelated_one(llama):
    same, other = llama.score(
        [REPEAT, REPEAT], [" the cat sat on the mat", " quantum chromodynamics lattice"]
    )
    assert same.mean > other.mean + 4.0  # nats per token: about -1.6 against -9.9
    assert same.mean > -3.0


@slow
def test_pairs_longer_than_a_batch_are_scored(llama, reference):
    assert llama.count_tokens(LONG_PROMPT + LONG_CONT) > 512
    got = llama.score([LONG_PROMPT, REPEAT], [LONG_CONT, " the cat"])
    assert_close(got[0], reference_score(reference, LONG_PROMPT, LONG_CONT))
    assert_close(got[1], reference_score(reference, REPEAT, " the cat"))


@slow
def test_scoring_leaves_generation_as_it_was(llama):
    greedy = SamplingParams(temperature=0.0, max_tokens=24)

    def texts():
        both = sorted(llama.generate([REPEAT, PAIRS[1][0]], greedy), key=lambda c: c.index)
        alone = llama.generate([REVIEW], greedy)  # starts from the prefix sequence 0 keeps
        return [c.text for c in both] + [next(alone).text]

    before = texts()
    llama.score([LONG_PROMPT, REPEAT], [LONG_CONT, " the cat"])  # a context of longer streams
    assert texts() == before
    llama.score([REVIEW] * 3, LABELS)  # the prompt goes into sequence 0
    assert texts() == before
    llama.score(*zip(*PAIRS))
    assert texts() == before


@slow
def test_empty_continuations_score_zero(llama):
    got = llama.score([REPEAT, REPEAT, "anything"], ["", " the cat", ""])
    assert got[0] == TokenScore(0.0, 0) == got[2]
    assert got[0].mean == 0.0
    assert got[1].n_tokens == 2 and got[1].logprob < 0
    assert llama.score([], []) == []


@slow
def test_bad_calls_fail_clearly(llama):
    with pytest.raises(ValueError):
        llama.score([REPEAT], [" a", " b"])
    with pytest.raises(SgtuiError, match="do not fit the model's context"):
        llama.score(["word " * 5000], [" more"])
    stop = threading.Event()
    stop.set()
    with pytest.raises(ScoreStopped):
        llama.score([REPEAT], [" the cat"], stop=stop)
    assert llama.score([REPEAT], [" the cat"])[0].n_tokens == 2  # still usable


@slow
def test_the_sequential_backend_gives_the_same_scores(bundled_model, llama):
    from backends.llama_cpp import LlamaCppGenerator

    seq = LlamaCppGenerator(bundled_model, n_ctx=1024, n_threads=1)
    try:
        pairs = PAIRS + [(LONG_PROMPT, LONG_CONT)]
        prompts, conts = zip(*pairs)
        for got, want in zip(seq.score(prompts, conts), llama.score(prompts, conts)):
            assert_close(got, want)
        greedy = SamplingParams(temperature=0.0, max_tokens=12)
        assert (
            next(seq.generate([REPEAT], greedy)).text == next(llama.generate([REPEAT], greedy)).text
        )
    finally:
        seq.close()


def test_the_transformers_backend_scores_each_token_given_the_ones_before(tmp_path):
    pytest.importorskip("transformers")
    import torch
    from test_security import _tiny_hf_model

    from backends.transformers_gen import TransformersGenerator

    _tiny_hf_model(tmp_path)
    gen = TransformersGenerator(str(tmp_path))
    prompt, cont = "could you send the file", " please move the meeting"
    got = gen.score([prompt, prompt], [cont, ""])
    p = gen.tok(prompt, add_special_tokens=False)["input_ids"]
    c = gen.tok(cont, add_special_tokens=False)["input_ids"]
    want = 0.0
    for k, tok in enumerate(c):  # one forward pass per token, over what comes before it
        with torch.no_grad():
            logits = gen.model(input_ids=torch.tensor([p + c[:k]])).logits[0, -1]
        want += float(torch.log_softmax(logits.double(), dim=-1)[tok])
    assert got[0].n_tokens == len(c) == 4
    assert abs(got[0].logprob - want) <= 1e-6 * len(c)
    assert got[1] == TokenScore(0.0, 0)
    with pytest.raises(SgtuiError, match="do not fit"):
        gen.score([prompt * 20], [cont])
