"""The batched llama.cpp backend against the real bundled model.

Exact agreement with the sequential backend is checked one sequence at a time (n_parallel=1),
which still runs every part of the batched path: the shared prefix, prompt holders, copied
caches, candidates drawing from the prompt's logits, slots handed on. With several sequences
in one decode llama.cpp's CPU kernels may round a row differently (logits differ by up to
~0.5), so there the test checks that every token was a top choice of the model instead.
The generators use one thread: the machine running the tests may be shared, and the results
do not depend on the thread count.
"""
from __future__ import annotations

import pytest

from backends.base import ChatMessage, SamplingParams
from backends.llama_batch import BatchPlan, BatchedLlamaCppGenerator, common_prefix, plan_batch
from backends.llama_cpp import LlamaCppGenerator
from sgtui.errors import SgtuiError

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Write a haiku about rain.",
             "List three colors.", "Explain gravity briefly."]
GREEDY = SamplingParams(temperature=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def batched(bundled_model):
    gen = BatchedLlamaCppGenerator(bundled_model, n_threads=1, n_parallel=8)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def prompts(batched):
    return [batched.render_chat([ChatMessage("user", q)]) for q in QUESTIONS]


def by_prompt(completions):
    return sorted(completions, key=lambda c: (c.index, c.sample))


def test_one_at_a_time_matches_sequential_exactly(bundled_model, prompts):
    seq = LlamaCppGenerator(bundled_model, n_threads=1)
    try:
        want = [c.text for c in by_prompt(seq.generate(prompts, GREEDY))]
    finally:
        seq.close()
    one = BatchedLlamaCppGenerator(bundled_model, n_threads=1, n_parallel=1, flash_attn=False)
    try:
        got = by_prompt(one.generate(prompts, GREEDY))
    finally:
        one.close()
    assert [c.text for c in got] == want
    assert all(c.n_tokens > 0 for c in got)


def test_batched_greedy_tokens_are_the_models_top_choices(bundled_model, batched, prompts):
    from llama_cpp import Llama

    recorded: dict[int, list[int]] = {}
    done = batched._completion

    def record(c, sample):
        recorded[c.group.index] = list(c.tokens)
        return done(c, sample)

    batched._completion = record
    try:
        got = by_prompt(batched.generate(prompts, GREEDY))
    finally:
        del batched._completion
    assert [c.index for c in got] == [0, 1, 2, 3]
    ref = Llama(bundled_model, n_ctx=512, n_threads=1, n_threads_batch=1, logits_all=True,
                verbose=False)
    try:
        for i, prompt in enumerate(prompts):
            toks = batched._tokenize(prompt)
            ref.reset()
            ref.eval(toks + recorded[i])
            for step, tok in enumerate(recorded[i]):
                row = ref.scores[len(toks) - 1 + step]
                assert row.max() - row[tok] < 1.0, (i, step)
    finally:
        ref.close()


def test_seeded_sampling_is_reproducible(batched, prompts):
    sp = SamplingParams(temperature=0.9, top_k=40, max_tokens=16, n=3, seed=7)
    first = [(c.index, c.sample, c.text) for c in by_prompt(batched.generate(prompts[:3], sp))]
    again = [(c.index, c.sample, c.text) for c in by_prompt(batched.generate(prompts[:3], sp))]
    assert first == again
    seeded = list(batched.generate(prompts[:3], SamplingParams(temperature=0.9, max_tokens=16),
                                   seeds=[11, 12, 13]))
    assert len(seeded) == 3


def test_n_and_best_of_give_exactly_n_per_prompt(batched, prompts):
    sp = SamplingParams(temperature=1.0, top_k=40, max_tokens=8, n=3, best_of=6, seed=1)
    got = by_prompt(batched.generate(prompts[:2], sp))
    assert [(c.index, c.sample) for c in got] == [(i, j) for i in range(2) for j in range(3)]
    for i in range(2):
        lps = [c.logprob for c in got if c.index == i]
        assert all(lp < 0 for lp in lps)
        assert lps == sorted(lps, reverse=True)  # best first
    plain = by_prompt(batched.generate(prompts[:2], SamplingParams(
        temperature=1.0, max_tokens=8, n=4, seed=1)))
    assert [(c.index, c.sample) for c in plain] == [(i, j) for i in range(2) for j in range(4)]
    assert all(c.finish_reason in ("stop", "length") for c in plain)


def test_stop_strings_truncate(batched, prompts):
    full = list(batched.generate(prompts[2:3], GREEDY))[0]
    assert len(full.text) > 10
    stop = full.text[4:8]
    cut = list(batched.generate(prompts[2:3], SamplingParams(temperature=0.0, max_tokens=24,
                                                             stop=(stop, "never here"))))[0]
    assert cut.text == full.text[:full.text.index(stop)]
    assert cut.finish_reason == "stop" and cut.n_tokens < full.n_tokens


def test_closing_early_leaves_the_generator_usable(batched, prompts):
    stream = batched.generate(prompts, SamplingParams(temperature=0.0, max_tokens=24, n=2))
    next(stream)
    stream.close()
    again = by_prompt(batched.generate(prompts[:1], GREEDY))
    assert len(again) == 1 and again[0].text


def test_prompt_too_long_fails_with_a_fix(batched):
    with pytest.raises(SgtuiError) as e:
        batched.generate(["word " * 5000], GREEDY)
    assert "does not fit" in str(e.value) and e.value.fix


def test_batch_plan_rule():
    # 8 prompts x best_of 20: whole prompts per batch, a multiple of 20
    plan = plan_batch([400] * 8, 20, 500, 350, None, 23_040, 8 << 30)
    assert plan.n_parallel == 20 and plan.kv_cells % 256 == 0
    assert plan.kv_cells >= 350 + 2 * 50 + 20 * 501
    # a small memory budget lowers the parallel count, never below one
    small = plan_batch([400] * 8, 1, 500, 0, None, 23_040, 50 << 20)
    assert 1 <= small.n_parallel < 8
    assert small.kv_cells * 23_040 <= 50 << 20 or small.n_parallel == 1
    assert plan_batch([10], 1, 5, 0, 3, 1, 1) == BatchPlan(3, 256, 8)
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
