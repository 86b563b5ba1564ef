"""The batched llama.cpp backend against the real bundled model.

Greedy output is checked token for token against the sequential backend, and every draw of a
prompt is checked to be the same, bit for bit, whatever other prompts share the call and
however many sequences run in parallel (what makes a resumed annotation equal an
uninterrupted one). The generators use one thread: the machine running the tests may be
shared.
"""

from __future__ import annotations

import pytest

from backends.base import ChatMessage, SamplingParams
from backends.llama_batch import BatchedLlamaCppGenerator, BatchPlan, common_prefix, plan_batch
from backends.llama_cpp import LlamaCppGenerator
from sgtui.errors import SgtuiError

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Write a haiku about rain.", "List three colors."]
GREEDY = SamplingParams(temperature=0.0, max_tokens=16)


@pytest.fixture(scope="module")
def batched(bundled_model):
    gen = BatchedLlamaCppGenerator(bundled_model, n_threads=1)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def prompts(batched):
    return [batched.render_chat([ChatMessage("user", q)]) for q in QUESTIONS]


def by_prompt(completions):
    return sorted(completions, key=lambda c: (c.index, c.sample))


def test_greedy_matches_the_sequential_backend(bundled_model, batched, prompts):
    seq = LlamaCppGenerator(bundled_model, n_threads=1)
    try:
        want = by_prompt(seq.generate(prompts, GREEDY))
    finally:
        seq.close()
    got = by_prompt(batched.generate(prompts, GREEDY))
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.n_tokens for c in got] == [c.n_tokens for c in want]
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]


def test_shared_draws_follow_the_model(bundled_model, batched, prompts):
    from llama_cpp import Llama

    tokens: dict[int, list[int]] = {}
    done = batched._completion

    def record(c, sample):
        tokens.setdefault(c.group.index, list(c.tokens))
        return done(c, sample)

    batched._completion = record
    try:
        got = by_prompt(
            batched.generate(prompts, SamplingParams(temperature=0.0, max_tokens=16, n=2))
        )
    finally:
        del batched._completion
    assert [(c.index, c.sample) for c in got] == [(i, j) for i in range(3) for j in range(2)]
    assert all(got[2 * i].text == got[2 * i + 1].text for i in range(3))
    ref = Llama(
        bundled_model, n_ctx=512, n_threads=1, n_threads_batch=1, logits_all=True, verbose=False
    )
    try:
        for i, prompt in enumerate(prompts):
            toks = batched._tokenize(prompt)
            ref.reset()
            ref.eval(toks + tokens[i])
            for step, tok in enumerate(tokens[i]):
                row = ref.scores[len(toks) - 1 + step]
                assert row.max() - row[tok] < 1.0, (i, step)
    finally:
        ref.close()


ANSWER = [
    "The cat sat on the mat.",
    "Rain fell on the old town all night.",
    "She opened the door and smiled.",
    "Prices rose again this spring.",
    "We will meet at noon.",
    "The river was high after the storm.",
]


def _draws(gen, prompts, sp, order):
    """{(prompt, draw): (text, tokens, logprob, finish)} for the prompts in `order`, each
    with its own seed."""
    got = {}
    for c in gen.generate([prompts[i] for i in order], sp, seeds=[100 + 7 * i for i in order]):
        got[(order[c.index], c.sample)] = (c.text, c.n_tokens, c.logprob, c.finish_reason)
    return got


@pytest.mark.parametrize(
    "sp",
    [
        SamplingParams(temperature=0.2, top_k=10, max_tokens=16, n=6),  # annotation
        SamplingParams(temperature=0.9, top_k=40, max_tokens=8, n=2, best_of=4),
        SamplingParams(temperature=1.0, top_k=40, max_tokens=16, stop=(".", "\n")),
    ],
    ids=["n6", "best_of", "one_draw"],
)
def test_draws_do_not_depend_on_the_batch(bundled_model, batched, sp):
    """A resumed run annotates only the inputs left: each prompt's draws must be what they
    are beside all the others. Checked bit for bit (texts, token counts, log-probabilities)
    against the prompt alone, in subsets in another order, and with fewer parallel sequences
    (draws then start late, after their prompt's logits are gone). With a shared KV cell
    pool, as before, 11 of 12 annotations differed alone."""
    prompts = [batched.render_chat([ChatMessage("user", f"Rewrite formally: {a}")]) for a in ANSWER]
    everything = _draws(batched, prompts, sp, list(range(len(prompts))))
    assert len(everything) == len(prompts) * sp.n
    views = [_draws(batched, prompts, sp, [i]) for i in (0, 3)]
    views.append(_draws(batched, prompts, sp, [5, 1, 2]))
    narrow = BatchedLlamaCppGenerator(bundled_model, n_threads=1, n_parallel=max(1, sp.n // 2))
    try:
        views.append(_draws(narrow, prompts, sp, [4, 0]))
    finally:
        narrow.close()
    for view in views:
        assert view == {k: everything[k] for k in view}
    if sp.n > 1:  # some draws of a prompt parted, so the branches were split and copied
        assert any(
            len({everything[(i, j)][0] for j in range(sp.n)}) > 1 for i in range(len(prompts))
        )


def test_seeded_sampling_is_reproducible(batched, prompts):
    sp = SamplingParams(temperature=0.9, top_k=40, max_tokens=8, n=3, seed=7)
    first = [(c.index, c.sample, c.text) for c in by_prompt(batched.generate(prompts[:2], sp))]
    again = [(c.index, c.sample, c.text) for c in by_prompt(batched.generate(prompts[:2], sp))]
    assert first == again
    one = SamplingParams(temperature=0.9, max_tokens=8)
    a = [c.text for c in by_prompt(batched.generate(prompts, one, seeds=[11, 12, 13]))]
    b = [c.text for c in by_prompt(batched.generate(prompts, one, seeds=[11, 12, 13]))]
    assert a == b and len(a) == 3


def test_n_and_best_of_give_exactly_n_per_prompt(batched, prompts):
    sp = SamplingParams(temperature=1.0, top_k=40, max_tokens=6, n=3, best_of=6, seed=1)
    got = by_prompt(batched.generate(prompts[:2], sp))
    assert [(c.index, c.sample) for c in got] == [(i, j) for i in range(2) for j in range(3)]
    for i in range(2):
        lps = [c.logprob for c in got if c.index == i]
        assert all(lp < 0 for lp in lps)
        assert lps == sorted(lps, reverse=True)  # best first
    plain = by_prompt(
        batched.generate(prompts[:2], SamplingParams(temperature=1.0, max_tokens=6, n=4, seed=1))
    )
    assert [(c.index, c.sample) for c in plain] == [(i, j) for i in range(2) for j in range(4)]
    assert all(c.finish_reason in ("stop", "length") and c.n_tokens <= 6 for c in plain)


def test_stop_strings_truncate(batched, prompts):
    full = next(iter(batched.generate(prompts[2:3], GREEDY)))
    assert len(full.text) > 10
    stop = full.text[4:8]
    sp = SamplingParams(temperature=0.0, max_tokens=16, stop=("never here", stop))
    cut = next(iter(batched.generate(prompts[2:3], sp)))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop" and cut.n_tokens < full.n_tokens


def test_closing_early_leaves_the_generator_usable(batched, prompts):
    stream = batched.generate(prompts, SamplingParams(temperature=0.0, max_tokens=16, n=2))
    next(stream)
    stream.close()
    again = list(batched.generate(prompts[:1], GREEDY))
    assert len(again) == 1 and again[0].text


def test_prompt_too_long_fails_with_a_fix(batched):
    with pytest.raises(SgtuiError) as e:
        batched.generate(["word " * 5000], GREEDY)
    assert "does not fit" in str(e.value) and e.value.fix


def test_batch_plan_rule():
    cell = 23_040  # bytes per KV cell of the bundled model
    # annotation, 8 prompts x best_of 20: whole prompts per batch; a stream per draw, plus the
    # prefix, the prompt being evaluated and a spare; streams rounded up to 256 cells
    ann = plan_batch([400] * 8, 20, 500, 350, None, cell, 8 << 30)
    assert ann.n_parallel == 20 and ann.n_seq_max == 23
    assert ann.seq_cells == 1024 and ann.kv_cells == 23 * 1024
    # input generation, 10 prompts x 1: streams rounded up to 512 cells
    gen = plan_batch([1000] * 10, 1, 500, 200, None, cell, 8 << 30)
    assert gen.n_parallel == 10 and gen.n_seq_max == 13 and gen.seq_cells == 1536
    # a small memory budget lowers the parallel count, never below one
    assert plan_batch([1000] * 10, 1, 500, 200, None, cell, 100 << 20).n_parallel == 1
    assert plan_batch([1000] * 10, 1, 500, 200, None, cell, 1).n_parallel == 1
    assert plan_batch([10], 1, 5, 0, 3, 1, 1) == BatchPlan(3, 6 * 512, 6)
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2


def test_sgtui_threads_sets_the_thread_count_of_every_context(bundled_model, monkeypatch):
    """SGTUI_THREADS reaches the batched backend's own decoding context as well as the loading
    one, and wins over the count the caller asked for."""
    import llama_cpp as L

    monkeypatch.setenv("SGTUI_THREADS", "1")
    gen = BatchedLlamaCppGenerator(bundled_model, n_threads=2)
    try:
        assert gen.llm.context_params.n_threads == gen.llm.context_params.n_threads_batch == 1
        prompt = gen.render_chat([ChatMessage("user", QUESTIONS[0])])
        assert len(list(gen.generate([prompt], SamplingParams(temperature=0.0, max_tokens=2))))
        assert L.llama_n_threads(gen._ctx) == L.llama_n_threads_batch(gen._ctx) == 1
    finally:
        gen.close()


def test_sgtui_threads_is_read_as_a_count(monkeypatch):
    from backends.base import cpu_threads
    from backends.llama_cpp import llama_threads

    monkeypatch.delenv("SGTUI_THREADS", raising=False)
    assert llama_threads() == cpu_threads() and llama_threads(3) == 3
    for unset in ("", " ", "0"):  # sgtui's own choice
        monkeypatch.setenv("SGTUI_THREADS", unset)
        assert llama_threads(3) == 3
    monkeypatch.setenv("SGTUI_THREADS", " 5 ")
    assert llama_threads() == llama_threads(3) == 5
    for bad in ("two", "-1", "1.5"):
        monkeypatch.setenv("SGTUI_THREADS", bad)
        with pytest.raises(SgtuiError, match="SGTUI_THREADS must be a whole number") as e:
            llama_threads()
        assert "0 (or unset it)" in e.value.fix
