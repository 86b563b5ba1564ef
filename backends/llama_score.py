"""Log-probability scoring of continuations through llama.cpp: log P(continuation | prompt).

It serves the input-dependence answer filter (log P(y|x) - log P(y|x'): an answer after its
own input against after another input) and label scoring (log P(label | prompt) per label,
and the channel direction log P(input | label)).

A pair is its prompt's tokens as generate() evaluates them (BOS first where the model wants
one) followed by the continuation tokenised on its own (no BOS, no special tokens), so the
boundary between the two is exact. Each pair is evaluated in a sequence of its own, with
logits asked only at the positions that predict a continuation token; each such row is
log-softmaxed in float64 and the continuation tokens' terms are summed in position order.

Batching (BatchedLlamaCppGenerator: sequence ids 1..g of its context, one KV stream each;
LlamaCppGenerator: sequence 0 of its own context, one pair at a time):
- the token prefix common to all the prompts of a call (the whole prompt when one prompt is
  scored against several continuations, as labels are; the instruction when only the inputs
  differ) is evaluated once, in the batched generator's prefix sequence 0, and its stream
  copied to each pair's sequence (a copy keeps every cell where it was, so the pair computes
  exactly what it would have from scratch);
- pairs go longest first, in waves of as many as fill a batch of 512 tokens (at most one
  sequence each), so that the sequences still running in a wave are always the first ones,
  on consecutive ids;
- each decode gives every running sequence of the wave the same number of tokens t >= 2; a
  sequence whose tokens run out is padded at its end, where no kept row can see the padding.
  llama.cpp cuts a batch over several KV streams into micro-batches that take as many tokens
  from each sequence: equal shares keep a decode one micro-batch. With t >= 2, and never a
  single logits row in a decode, every row goes through the same (tiled) kernels whatever
  shares the wave (see "why the batches look the way they do" in backends/llama_batch.py), so
  a pair scores the same numbers alone or beside any others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from sgtui import interrupts
from sgtui.errors import SgtuiError

from .base import ScoreStopped, TokenScore, check_score_pair
from .llama_batch import (
    MAX_PARALLEL,
    MIN_SHARED_PREFIX,
    BatchedLlamaCppGenerator,
    _StopAsked,
    common_prefix,
    plan_batch,
)
from .llama_cpp import LlamaCppGenerator

BATCH = 512  # tokens per decode: the n_batch (= n_ubatch) of llama_batch.py's contexts


@dataclass
class Pair:
    """One prompt and continuation, as tokens, and the log-probability found so far."""

    index: int
    tokens: list[int]  # the prompt's, then the continuation's
    n_prompt: int
    logprob: float = 0.0

    @property
    def n_eval(self) -> int:
        """Tokens to evaluate: all but the last, whose logits are not needed."""
        return len(self.tokens) - 1

    def target(self, pos: int) -> int | None:
        """The continuation token that the logits at `pos` predict, if any."""
        return self.tokens[pos + 1] if self.n_prompt - 1 <= pos < self.n_eval else None


@dataclass
class Evaluator:
    """Where pairs are evaluated: a llama.cpp context, a batch for it, the sequence ids
    scoring may use (consecutive, one pair each), the call that decodes `n` batch tokens, and
    the sequence holding the first `prefix_len` tokens of every pair, if any."""

    L: object  # the llama_cpp module
    ctx: object
    batch: object
    batch_size: int
    n_vocab: int
    seqs: range
    decode: Callable[[int], None]
    prefix_len: int = 0
    prefix_seq: int = 0

    def put(self, i: int, tok: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
        b.seq_id[i][0] = seq

    def logprob(self, i: int, tok: int) -> float:
        """log P(tok) under the logits of batch index `i` of the last decode."""
        ptr = self.L.llama_get_logits_ith(self.ctx, i)
        row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        top = row.max()
        return float(row[tok] - top - np.log(np.exp(row - top).sum()))

    def begin(self, seq: int) -> None:
        """Give `seq` the shared prefix (copied at the next decode)."""
        if self.prefix_len:
            self.L.llama_memory_seq_cp(
                self.L.llama_get_memory(self.ctx), self.prefix_seq, seq, -1, -1
            )

    def forget(self, seq: int) -> None:
        self.L.llama_memory_seq_rm(self.L.llama_get_memory(self.ctx), seq, -1, -1)


def make_pairs(
    gen: LlamaCppGenerator, prompts: Sequence[str], continuations: Sequence[str]
) -> list[Pair]:
    """The pairs with a non-empty continuation, checked against the model's context."""
    if gen.llm is None:
        raise SgtuiError("the model is closed", path=gen.model_path)
    if len(prompts) != len(continuations):
        raise ValueError("score() takes one continuation per prompt")
    pairs = []
    for i, (prompt, text) in enumerate(zip(prompts, continuations)):
        cont = gen.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if not cont:
            continue
        toks = gen._tokenize(prompt)
        check_score_pair(len(toks), len(cont), gen.n_ctx, gen.model_path)
        pairs.append(Pair(i, toks + cont, len(toks)))
    return pairs


def results(n: int, pairs: list[Pair]) -> list[TokenScore]:
    out = [TokenScore(0.0, 0)] * n
    for p in pairs:
        out[p.index] = TokenScore(p.logprob, len(p.tokens) - p.n_prompt)
    return out


def shared_prefix(pairs: list[Pair]) -> list[int]:
    """The prompts' common tokens, when worth a sequence of their own; every pair keeps the
    last token of its prompt, whose logits predict its first continuation token."""
    n = common_prefix([p.tokens[: p.n_prompt - 1] for p in pairs])
    return pairs[0].tokens[:n] if n >= MIN_SHARED_PREFIX else []


def wave_size(n_eval: int, batch_size: int = BATCH) -> int:
    """Pairs with n_eval tokens to evaluate that one batch holds whole (at least one)."""
    return max(1, batch_size // max(n_eval, 2))


def evaluate(ev: Evaluator, pairs: list[Pair], stop=None) -> None:
    """Add each pair's log-probability to it, wave by wave, longest pairs first."""
    todo = sorted(pairs, key=lambda p: -p.n_eval)
    while todo:
        g = min(len(ev.seqs), wave_size(todo[0].n_eval - ev.prefix_len, ev.batch_size))
        wave, todo = todo[:g], todo[g:]
        try:
            for seq in ev.seqs[:g]:
                ev.begin(seq)
            _evaluate_wave(ev, wave, stop)
        finally:
            for seq in ev.seqs[: len(wave)]:
                ev.forget(seq)


def _evaluate_wave(ev: Evaluator, wave: list[Pair], stop) -> None:
    """The pairs of `wave` (longest first) in sequences ev.seqs[0..], after the shared prefix,
    every running one taking the same number of tokens per decode (see the module docstring)."""
    pos = ev.prefix_len
    while True:
        live = wave[: sum(p.n_eval > pos for p in wave)]  # the first ones: sorted by length
        if not live:
            return
        t = max(2, min(ev.batch_size // len(live), live[0].n_eval - pos))
        rows: list[tuple[int, Pair, int]] = []  # batch index, its pair, the token it predicts
        n = 0
        for seq, p in zip(ev.seqs, live):
            for q in range(pos, pos + t):
                target = p.target(q)
                # past the pair's end: padding, after every row that is kept
                ev.put(n, p.tokens[min(q, len(p.tokens) - 1)], q, seq, target is not None)
                if target is not None:
                    rows.append((n, p, target))
                n += 1
        if len(rows) == 1:  # a second logits row keeps the output product on its tiled kernel
            ev.batch.logits[1 if rows[0][0] == 0 else 0] = True
        if stop is not None and stop.is_set():
            raise ScoreStopped()
        ev.decode(n)
        for i, p, target in rows:
            p.logprob += ev.logprob(i, target)
        pos += t


# -- the two llama.cpp backends -------------------------------------------------------------
def score_batched(
    gen: BatchedLlamaCppGenerator, prompts: Sequence[str], continuations: Sequence[str], stop=None
) -> list[TokenScore]:
    """Score in the batched generator's own context: the shared prefix in sequence 0 (where
    generation keeps its own; it reloads what differs), the pairs in sequences 1..n."""
    pairs = make_pairs(gen, prompts, continuations)
    if not pairs:
        return results(len(prompts), pairs)
    if gen._stream is not None:  # one call at a time owns the context's sequences
        gen._stream.close()
        gen._stream = None
    L = gen._L
    prefix = shared_prefix(pairs)
    longest = max(len(p.tokens) for p in pairs)
    slots = min(
        len(pairs),
        MAX_PARALLEL,
        wave_size(min(p.n_eval for p in pairs) - len(prefix)),
        gen.n_parallel or MAX_PARALLEL,
    )
    # streams as long as the longest pair (its padding included), lowered to the memory budget
    plan = plan_batch([longest] * slots, 1, 0, 0, None, gen.cell_bytes, gen.kv_budget, gen.n_ctx)
    gen._ensure_context(plan)
    ev = Evaluator(
        L,
        gen._ctx,
        gen._batch,
        gen._batch_size,
        gen.n_vocab,
        range(1, plan.n_parallel + 1),
        lambda n: gen._decode(n, "pairs to score"),
        prefix_len=len(prefix),
    )
    gen._stop = stop
    try:
        mem = L.llama_get_memory(gen._ctx)
        gen._clear(mem)
        if prefix:  # sequence 0 keeps what it has in common with generation's prefix
            gen._load_prefix(prefix, mem)
        evaluate(ev, pairs, stop)
    except _StopAsked:
        raise ScoreStopped() from None
    finally:
        gen._stop = None
        if gen._ctx is not None:
            gen._clear(L.llama_get_memory(gen._ctx))
    return results(len(prompts), pairs)


def score_sequential(
    gen: LlamaCppGenerator, prompts: Sequence[str], continuations: Sequence[str]
) -> list[TokenScore]:
    """Score in the high-level Llama's context, one pair at a time in sequence 0; the Llama is
    reset afterwards, so that its next completion evaluates its prompt afresh."""
    pairs = make_pairs(gen, prompts, continuations)
    if not pairs:
        return results(len(prompts), pairs)
    import llama_cpp as L

    llm = gen.llm
    ctx = llm._ctx.ctx
    batch = L.llama_batch_init(llm.n_batch, 0, 1)

    def decode(n: int) -> None:
        batch.n_tokens = n
        with interrupts.native_call():
            rc = L.llama_decode(ctx, batch)
        if rc != 0:
            raise SgtuiError(
                f"llama.cpp could not decode pairs to score (code {rc})",
                path=gen.model_path,
                fix="use --backend llama-cpp",
            )

    try:
        evaluate(Evaluator(L, ctx, batch, llm.n_batch, llm.n_vocab(), range(1), decode), pairs)
    finally:
        L.llama_batch_free(batch)
        L.llama_memory_seq_rm(L.llama_get_memory(ctx), -1, -1, -1)
        llm.reset()
    return results(len(prompts), pairs)
