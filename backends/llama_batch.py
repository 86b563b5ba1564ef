"""Batched llama.cpp generation: many sequences decoded together in one context.

The sequential backend (backends/llama_cpp.py) evaluates one sequence at a time. Here one
llama_decode call carries the next token of every running sequence; a new prompt is evaluated
in calls of its own, before its draws join. A sequence that ends (end-of-generation token, stop string, max_tokens) hands its slot to the
next waiting one at once (continuous batching). Each draw samples with its own llama.cpp
sampler chain, seeded per prompt and per draw. docs/PERFORMANCE.md has the measurements.

The draws of a prompt are the same numbers, bit for bit, alone or beside any other prompts,
with any n_parallel: a resumed run, which annotates only the inputs left, samples what an
uninterrupted run would have. Two things make it so:
- every sequence has its own KV stream (llama.cpp's non-unified cache), so a token attends
  only to the cells of its own history, which lie at the same cell indices whatever else is
  in the batch (a shared cell pool, used before, interleaved the sequences' cells; the
  attention sums then grouped their terms differently, the logits moved by up to ~0.5, and
  11 of 12 annotations changed with the batch around them);
- each kind of row always goes through the same llama.cpp kernel (see "why the batches look
  the way they do" below), and those kernels compute a row on its own.

How the work is shared:
- The token prefix common to all prompts is computed once in sequence 0 (kept between calls)
  and its stream copied to the holder sequence, which then takes the prompt's own tokens.
  Every draw of a prompt takes its first token from the prompt's last logits.
- Draws of one prompt that have produced the same tokens so far form a branch and share one
  sequence: its token is decoded once and each draw samples from that row with its own
  sampler. Draws that take different tokens go on in copies of the stream (on a branch, the
  first set of them keeps it). Copying a stream copies its cells in place, so the copy
  computes exactly what the original would have.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sgtui import interrupts
from sgtui.errors import SgtuiError

from .base import Completion, SamplingParams, TokenScore
from .chat import with_turn_stops
from .llama_cpp import LlamaCppGenerator

MAX_PARALLEL = 32  # the per-token cost fell little beyond this on a 2-core CPU
MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a sequence of their own
CELL_ALIGN = 256  # llama.cpp pads the cells attention looks at to this many
STREAM_ALIGN = 512  # one-draw streams grow in steps, so that rounds of prompts reuse a
# context; several-draw calls (one per annotation) take CELL_ALIGN
_LLAMA_LOG = logging.getLogger("llama-cpp-python")  # prints llama.cpp's log


@dataclass(frozen=True)
class BatchPlan:
    """Parallel draws, KV cells in all, and sequence ids (one KV stream each)."""

    n_parallel: int
    kv_cells: int
    n_seq_max: int

    @property
    def seq_cells(self) -> int:
        """Cells one sequence can use."""
        return self.kv_cells // self.n_seq_max

    def holds(self, other: BatchPlan) -> bool:
        return self.n_seq_max >= other.n_seq_max and self.seq_cells >= other.seq_cells


def plan_batch(
    prompt_lens: Sequence[int],
    k: int,
    max_new: int,
    n_prefix: int,
    n_parallel: int | None,
    cell_bytes: int,
    budget_bytes: int,
    n_ctx: int = 1 << 30,
) -> BatchPlan:
    """The batch-size rule.

    Parallel count: n_parallel when given; otherwise the number of draws in the call (k =
    max(n, best_of) per prompt), at most MAX_PARALLEL, rounded down to a multiple of k so
    that whole prompts fit; then lowered until the KV cache fits the memory budget (one draw
    is always allowed).
    Sequences: one per parallel draw (the most branches of identical draws there can be),
    one for the common prefix, one for the prompt being evaluated, one spare.
    Each sequence's stream is as long as the longest prompt plus max_new (at most n_ctx),
    rounded up to 512 cells with one draw per prompt, 256 with several. (n_prefix no longer
    matters: every stream holds its own copy of the prefix.)"""
    total = len(prompt_lens) * k
    if n_parallel:
        b = n_parallel
    else:
        b = min(total, MAX_PARALLEL)
        if k < b:
            b -= b % k
    b = max(1, min(b, 250))  # n_seq_max = b + 3 must stay within llama.cpp's 256
    longest = max(prompt_lens, default=1)
    per = min(longest + max_new + 1, n_ctx)
    align = STREAM_ALIGN if k == 1 else CELL_ALIGN
    per = -(-per // align) * align

    def plan(b: int) -> BatchPlan:
        n_seq = b + 3  # the prefix, b branches, a spare, the holder
        return BatchPlan(b, per * n_seq, n_seq)

    while b > 1 and not n_parallel and plan(b).kv_cells * cell_bytes > budget_bytes:
        b -= 1
    return plan(b)


def default_kv_budget() -> int:
    """A quarter of the memory available now, at least 256 MiB."""
    try:
        import psutil

        avail = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(avail // 4, 256 << 20)


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


class _StopAsked(Exception):
    """The stop event was set during a decode, which llama.cpp gave up."""


@dataclass
class _Candidate:
    """One draw from one prompt."""

    group: _Group
    number: int
    sampler: object
    max_new: int
    seq: int = -1  # its branch's sequence, shared with the identical draws
    ready: bool = False  # its prompt is in its cache; `pending` can be decoded
    over: bool = False  # finished (retired at the end of the step)
    pending: int = 0  # the token to decode next
    pos: int = 0  # and its position
    tokens: list[int] = field(default_factory=list)
    buf: bytearray = field(default_factory=bytearray)
    scanned: int = 0  # characters already searched for stop strings
    logprob: float = 0.0
    text: str | None = None
    finish: str = "length"


@dataclass
class _Group:
    """One prompt and the k draws from it."""

    index: int
    tokens: list[int]
    seed: int
    k: int
    holder: int = -1  # the sequence holding the prompt (-1 once handed on)
    filled: int = 0  # prompt tokens in the holder so far
    started: int = 0  # draws admitted so far
    live: int = 0  # draws admitted and not finished
    done: list[_Candidate] = field(default_factory=list)

    @property
    def prefilled(self) -> bool:
        return self.filled >= len(self.tokens)


@dataclass
class _Call:
    """The state of one generate() call."""

    params: SamplingParams
    plan: BatchPlan
    prefix_len: int
    stops: tuple[str, ...]
    want_logprob: bool
    waiting: deque[_Group]
    active: list[_Group] = field(default_factory=list)
    running: list[_Candidate] = field(default_factory=list)
    holder_seq: int = 0  # the sequence a prompt is evaluated in
    n_branches: int = 0  # branch sequences in use: ids 1..n_branches
    users: dict[int, int] = field(default_factory=dict)  # branch sequence -> its draws


class BatchedLlamaCppGenerator(LlamaCppGenerator):
    """LlamaCppGenerator whose generate() decodes many sequences at once.

    n_parallel: sequences decoded together (default: the batch-size rule in plan_batch);
    share_prefix: compute the prompts' common token prefix once; kv_budget_mib: the most
    memory the KV cache may take (default: a quarter of the memory available); flash_attn:
    llama.cpp's flash attention (off: on CPU it was slower here, and the batch-independence
    argued in the module docstring holds for the plain attention kernels only)."""

    name = "llama-cpp"
    supports_batch = True
    supports_stop = True  # generate() takes a stop event
    supports_score = True

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        lora_path: str | None = None,
        verbose: bool = False,
        n_parallel: int | None = None,
        share_prefix: bool = True,
        kv_budget_mib: int | None = None,
        flash_attn: bool = False,
    ):
        # The parent's high-level Llama is kept for loading, tokenizing and chat rendering;
        # its own context stays small because decoding happens in the context made below.
        super().__init__(
            model_path, n_ctx=256, n_threads=n_threads, lora_path=lora_path, verbose=verbose
        )
        import llama_cpp as L

        self._L = L
        self.verbose = verbose
        self._ctx = None
        self._ctx_plan: BatchPlan | None = None
        self._batch = None
        self._batch_size = 0
        self._prefix: list[int] = []  # tokens held by sequence 0
        self._stream: Iterator[Completion] | None = None
        self._n_decodes = 0
        # llama.cpp asks between two graph nodes whether to give a decode up: on SIGINT or
        # SIGTERM (sgtui/interrupts.py) or the stop event of the call; ctypes needs the
        # callback object kept alive
        self._stop = None
        self._abort_cb = L.ggml_abort_callback(self._should_abort)
        self._pieces: dict[int, bytes] = {}
        self._model = self.llm._model.model
        self._vocab = self.llm._model.vocab
        self.n_ctx = n_ctx if n_ctx > 0 else self.llm._model.n_ctx_train()
        problem = None
        if not hasattr(L, "llama_memory_seq_cp"):
            problem = "this llama-cpp-python is too old for batched decoding"
        elif L.llama_model_is_recurrent(self._model) or L.llama_model_is_hybrid(self._model):
            problem = "batched decoding needs an attention-only model (this one is recurrent)"
        elif n_parallel is not None and n_parallel < 1:
            problem = "n_parallel must be at least 1"
        if problem:
            self.close()
            raise SgtuiError(
                problem, path=self.model_path, fix="use --backend llama-cpp-sequential"
            )
        self.n_parallel = n_parallel
        self.share_prefix = share_prefix
        self.kv_budget = (kv_budget_mib << 20) if kv_budget_mib else default_kv_budget()
        self.flash_attn = flash_attn
        self.n_vocab = L.llama_vocab_n_tokens(self._vocab)
        n_layer, n_head = L.llama_model_n_layer(self._model), L.llama_model_n_head(self._model)
        n_embd, n_head_kv = L.llama_model_n_embd(self._model), L.llama_model_n_head_kv(self._model)
        self.cell_bytes = 2 * 2 * n_layer * (n_embd // max(n_head, 1)) * n_head_kv  # K+V, f16
        # Free our context before the model: the Llama's exit stack runs its callbacks last
        # in, first out, so this one runs before the model it was built on is freed.
        self.llm._stack.callback(self._free_context)

    # -- context --------------------------------------------------------------------------
    def _free_context(self) -> None:
        L = self._L
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            L.llama_free(self._ctx)
            self._ctx = None
        self._ctx_plan, self._prefix = None, []

    def _ensure_context(self, plan: BatchPlan) -> None:
        if self._ctx_plan and self._ctx_plan.holds(plan):
            return
        self._free_context()
        L = self._L
        p = L.llama_context_default_params()
        p.n_ctx = plan.kv_cells
        p.n_seq_max = plan.n_seq_max
        p.n_batch = p.n_ubatch = 512
        # The parent's thread count (llama_cpp.llama_threads: SGTUI_THREADS, else the count
        # asked for, else one per core) applies to prompt chunks too (llama-cpp-python would
        # use every core for them); on a shared machine more threads than free cores collapse.
        p.n_threads = p.n_threads_batch = self.llm.context_params.n_threads
        p.kv_unified = False  # a KV stream per sequence: see the module docstring
        p.flash_attn_type = (
            L.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        p.no_perf = True
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=self.verbose):
            ctx = L.llama_init_from_model(self._model, p)
        if not ctx:
            raise SgtuiError(
                f"llama.cpp could not create a context of {plan.kv_cells} cells "
                f"for {plan.n_parallel} sequences",
                path=self.model_path,
                fix="pass a smaller n_parallel or kv_budget_mib",
            )
        adapter = getattr(self.llm, "_lora_adapter", None)
        if adapter is not None:
            adapters = (L.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(self.llm.lora_scale)
            if L.llama_set_adapters_lora(ctx, adapters, 1, scales):
                L.llama_free(ctx)
                raise SgtuiError(
                    "llama.cpp could not apply the LoRA adapter to the batched context",
                    path=self.model_path,
                )
        L.llama_set_abort_callback(ctx, self._abort_cb, None)
        self._ctx, self._ctx_plan = ctx, plan
        self._batch_size = L.llama_n_batch(ctx)
        self._batch = L.llama_batch_init(self._batch_size, 0, plan.n_seq_max)

    # -- tokens ---------------------------------------------------------------------------
    def _piece(self, tok: int) -> bytes:
        piece = self._pieces.get(tok)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._L.llama_token_to_piece(self._vocab, tok, buf, 64, 0, False)
            piece = self._pieces[tok] = buf.raw[: max(n, 0)]
        return piece

    def _sampler(self, params: SamplingParams, seed: int):
        L = self._L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if params.top_k > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        return chain

    # -- generation -----------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        stop=None,
    ) -> Iterator[Completion]:
        """Yield completions as they finish (with best_of > n, a prompt's n best once all its
        draws are done). Prompts are checked here, before any decoding. `stop`: an object with
        is_set() (a threading.Event), looked at before every decode step; once it is set the
        stream ends, without the completions not yet finished."""
        if self.llm is None:
            raise SgtuiError("the model is closed", path=self.model_path)
        params = with_turn_stops(params, self.chat_template)
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError("seeds must give one seed per prompt")
        k = max(params.n, params.best_of or params.n)
        if k < 1:
            return iter(())
        groups = []
        for i, prompt in enumerate(prompts):
            self._check_fits(prompt, params)
            toks = self._tokenize(prompt)
            if len(toks) + 1 >= self.n_ctx:  # only the BOS token can push it over
                raise SgtuiError(
                    f"a prompt of {len(toks)} tokens does not fit the model's "
                    f"context of {self.n_ctx} tokens",
                    path=self.model_path,
                    fix="shorten the instruction or examples",
                )
            base = seeds[i] if seeds is not None else (params.seed or 0) * 1000003 + i
            groups.append(_Group(i, toks, base, k))
        if not groups:
            return iter(())
        if self._stream is not None:
            self._stream.close()  # one call at a time owns the context's sequences
        self._stream = self._run(groups, params, stop)
        return self._stream

    def _run(self, groups: list[_Group], params: SamplingParams, stop=None) -> Iterator[Completion]:
        L = self._L
        prefix: list[int] = []
        if self.share_prefix:
            # one prompt alone keeps what it has in common with the last call's prefix
            heads = [g.tokens[:-1] for g in groups] + ([self._prefix] if len(groups) == 1 else [])
            n = common_prefix(heads) if len(heads) > 1 else 0
            # every prompt keeps at least two tokens of its own (see _chunks)
            n = min(n, min(len(g.tokens) for g in groups) - 2)
            if n >= MIN_SHARED_PREFIX:
                prefix = groups[0].tokens[:n]
        shortest = min(len(g.tokens) for g in groups)
        max_new = max(1, min(params.max_tokens, self.n_ctx - shortest - 1))
        plan = plan_batch(
            [len(g.tokens) for g in groups],
            groups[0].k,
            max_new,
            len(prefix),
            self.n_parallel,
            self.cell_bytes,
            self.kv_budget,
            self.n_ctx,
        )
        self._ensure_context(plan)
        # a context kept from an earlier call may be larger than this call needs
        kept = self._ctx_plan
        plan = BatchPlan(plan.n_parallel, kept.kv_cells, kept.n_seq_max)
        mem = L.llama_get_memory(self._ctx)
        call = _Call(
            params,
            plan,
            len(prefix),
            tuple(s for s in params.stop if s),
            params.best_of is not None and params.best_of > params.n,
            deque(groups),
            holder_seq=plan.n_parallel + 2,
        )
        self._stop = stop
        try:
            self._clear(mem)
            self._load_prefix(prefix, mem)
            while call.waiting or call.active:
                if stop is not None and stop.is_set():
                    return
                decodes = self._n_decodes
                # draws that end on their first token are retired before the branches are
                # decoded, so that the branches in use are exactly 1..m
                started = self._admit_and_prefill(call, mem) + self._start_late(call, mem)
                yield from self._retire(call, started, mem)
                finished = self._decode_branches(call, mem)
                if not (started or finished) and self._n_decodes == decodes:
                    raise RuntimeError("batched decoding stalled with nothing to decode")
                yield from self._retire(call, finished, mem)
        except _StopAsked:
            return
        finally:
            self._stop = None
            for c in call.running:
                if c.sampler is not None:
                    L.llama_sampler_free(c.sampler)
                    c.sampler = None
            if self._ctx is not None:
                self._clear(L.llama_get_memory(self._ctx))

    # -- scoring --------------------------------------------------------------------------
    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], stop=None
    ) -> list[TokenScore]:
        """log P(continuation | prompt) per pair (backends.base.Generator.score), many pairs per
        decode in this context (backends/llama_score.py). `stop`: as for generate(); once it
        is set, scoring gives up with backends.base.ScoreStopped."""
        from .llama_score import score_batched  # llama_score builds on this module

        return score_batched(self, prompts, continuations, stop)

    def _clear(self, mem) -> None:
        """Drop every sequence but the prefix (sequence 0)."""
        for s in range(1, self._ctx_plan.n_seq_max):
            self._L.llama_memory_seq_rm(mem, s, -1, -1)

    # -- why the batches look the way they do ----------------------------------------------
    # llama.cpp's CPU matrix products take one of two kernels: for a single row (one token of
    # a sequence in an attention product, one logits row in the output product) a dot
    # product per element, for two rows or more a tiled one (llamafile's sgemm), and the two
    # may add in a different order. Every row of a kind therefore always goes the same way
    # here, however many other prompts share the call:
    # - a prompt's tokens are evaluated in calls of their own, in chunks of two tokens or
    #   more (tiled attention), with only the last token's logits (one row: dot products);
    # - the branches' next tokens (one per sequence: dot-product attention) go in one call,
    #   on consecutive sequence ids 1..m so that llama.cpp keeps them in one micro-batch,
    #   with a throwaway token on sequence m + 1 when m is 1 (so logits are always tiled).
    # Sequence ids: 0 the prefix, 1..n_parallel the branches, n_parallel + 2 the holder.

    def _chunks(self, start: int, end: int) -> list[tuple[int, int]]:
        """[start, end) in chunks of at most one batch, none of them a single token (unless
        the whole range is one token)."""
        n = end - start
        if n <= 0:
            return []
        parts = -(-n // self._batch_size)
        bounds = [start + n * i // parts for i in range(parts + 1)]
        return list(zip(bounds, bounds[1:]))

    def _should_abort(self, _data) -> bool:
        abort = interrupts.pending() or (self._stop is not None and self._stop.is_set())
        if abort:  # llama.cpp logs the decode it gives up as an error: expected here
            _LLAMA_LOG.setLevel(logging.CRITICAL)
        return abort

    def _decode(self, n: int, what: str) -> None:
        self._batch.n_tokens = n
        self._n_decodes += 1
        level = _LLAMA_LOG.level
        try:
            with interrupts.native_call():  # a signal meanwhile is raised when it ends
                rc = self._L.llama_decode(self._ctx, self._batch)
                if rc != 0:  # llama.cpp took back what the batch added, maybe to the prefix
                    self._L.llama_memory_seq_rm(self._L.llama_get_memory(self._ctx), 0, -1, -1)
                    self._prefix = []
                if rc == 2 and self._stop is not None and self._stop.is_set():
                    raise _StopAsked()
                if rc != 0:
                    raise SgtuiError(
                        f"llama.cpp could not decode {what} (code {rc})",
                        path=self.model_path,
                        fix="pass a smaller n_parallel, or use --backend llama-cpp-sequential",
                    )
        finally:
            _LLAMA_LOG.setLevel(level)

    def _eval_tokens(self, seq: int, tokens: list[int], start: int, end: int) -> None:
        """Evaluate tokens[start:end] (at those positions) into `seq`, logits for the last."""
        for a, b in self._chunks(start, end):
            for i in range(a, b):
                self._put(i - a, tokens[i], i, [seq], i == end - 1)
            self._decode(b - a, "a prompt")

    # -- sequences --------------------------------------------------------------------------
    def _new_branch(self, call: _Call, src: int, mem) -> int:
        """Sequence m + 1, holding a copy of `src`'s stream (copied at the next decode)."""
        if call.n_branches >= call.plan.n_parallel:
            raise RuntimeError("batched decoding ran out of sequences")
        call.n_branches += 1
        seq = call.n_branches
        self._L.llama_memory_seq_cp(mem, src, seq, -1, -1)
        return seq

    def _free_branch(self, call: _Call, seq: int, mem) -> None:
        """Free a branch's sequence, moving the last branch into it so that the branches keep
        the ids 1..m (the copy keeps every cell where it was, so nothing changes numerically)."""
        L, top = self._L, call.n_branches
        if seq != top:
            L.llama_memory_seq_cp(mem, top, seq, -1, -1)
            for c in call.running:
                if c.seq == top:
                    c.seq = seq
            call.users[seq] = call.users.pop(top)
        L.llama_memory_seq_rm(mem, top, -1, -1)
        call.n_branches -= 1

    def _leave(self, call: _Call, c: _Candidate, mem) -> None:
        """Take draw `c` off its branch, freeing the branch's sequence when it was the last."""
        seq, c.seq = c.seq, -1
        if seq < 0:
            return
        call.users[seq] -= 1
        if call.users[seq] == 0:
            del call.users[seq]
            self._free_branch(call, seq, mem)

    def _release_holder(self, call: _Call, g: _Group, mem) -> None:
        """Free the holder once every draw of its prompt has started from it."""
        if (
            g.holder >= 0
            and g.started == g.k
            and not any(c.group is g and not c.ready for c in call.running)
        ):
            self._L.llama_memory_seq_rm(mem, g.holder, -1, -1)
            g.holder = -1

    # -- scheduling -------------------------------------------------------------------------
    def _admit(self, call: _Call, mem) -> None:
        """Give free slots to draws: the rest of the prompt in flight first, one slot at a
        time; a new prompt only when a block of slots is free (so that its draws start
        together and all take their first token from the prompt's own logits) and the holder
        is free. A draw gets a sequence when it has its first token."""
        L, plan = self._L, call.plan
        block = min(call.waiting[0].k if call.waiting else 1, plan.n_parallel)
        while len(call.running) < plan.n_parallel:
            g = next((a for a in call.active if a.started < a.k), None)
            if g is None:
                free = plan.n_parallel - len(call.running)
                holder_busy = any(a.holder >= 0 for a in call.active)
                if not call.waiting or holder_busy or (call.running and free < block):
                    return
                g = call.waiting.popleft()
                g.holder = call.holder_seq
                L.llama_memory_seq_rm(mem, g.holder, -1, -1)
                if call.prefix_len:
                    L.llama_memory_seq_cp(mem, 0, g.holder, -1, -1)
                g.filled = call.prefix_len
                call.active.append(g)
            g_max = max(1, min(call.params.max_tokens, self.n_ctx - len(g.tokens) - 1))
            seed = (g.seed + g.started) % (2**31)
            call.running.append(_Candidate(g, g.started, self._sampler(call.params, seed), g_max))
            g.started += 1
            g.live += 1

    def _admit_and_prefill(self, call: _Call, mem) -> list[_Candidate]:
        """Admit draws, and evaluate each new prompt in its holder; its draws take their first
        tokens from its last logits. Returns the draws already finished."""
        finished: list[_Candidate] = []
        while True:
            self._admit(call, mem)
            g = next((a for a in call.active if a.holder >= 0 and not a.prefilled), None)
            if g is None:
                return finished
            self._eval_tokens(g.holder, g.tokens, g.filled, len(g.tokens))
            g.filled = len(g.tokens)
            draws = [c for c in call.running if c.group is g and not c.ready]
            for c in draws:
                c.ready, c.pos = True, len(g.tokens) - 1
            finished += self._sample_row(call, -1, 0, draws, g.holder, None, mem)
            self._release_holder(call, g, mem)

    def _start_late(self, call: _Call, mem) -> list[_Candidate]:
        """A draw admitted after its prompt's logits are gone (n_parallel < k) evaluates the
        prompt's last two tokens again, in a copy of the holder without them."""
        finished: list[_Candidate] = []
        for c in [c for c in call.running if not c.ready and c.group.prefilled]:
            g = c.group
            seq = self._new_branch(call, g.holder, mem)
            back = max(0, len(g.tokens) - 2)
            self._L.llama_memory_seq_rm(mem, seq, back, -1)
            self._eval_tokens(seq, g.tokens, back, len(g.tokens))
            c.ready, c.pos, c.seq = True, len(g.tokens) - 1, seq
            call.users[seq] = 1
            finished += self._sample_row(call, -1, 0, [c], seq, seq, mem)
            self._release_holder(call, g, mem)
        return finished

    def _decode_branches(self, call: _Call, mem) -> list[_Candidate]:
        """Decode one token per branch (its draws have the same cache and logits) and let
        each draw sample from its branch's row with its own sampler."""
        by_seq: dict[int, list[_Candidate]] = {}
        for c in call.running:
            if c.ready and not c.over:
                by_seq.setdefault(c.seq, []).append(c)
        if not by_seq:
            return []
        entries = [by_seq[seq] for seq in sorted(by_seq)]
        for n, cs in enumerate(entries):
            self._put(n, cs[0].pending, cs[0].pos, [cs[0].seq], True)
        n = len(entries)
        pad = n == 1
        if pad:  # a second logits row: see "why the batches look the way they do"
            self._put(1, entries[0][0].pending, 0, [call.n_branches + 1], True)
        self._decode(n + pad, "a batch")
        if pad:
            self._L.llama_memory_seq_rm(mem, call.n_branches + 1, -1, -1)
        scores = self._logsumexp(n + pad) if call.want_logprob else None
        finished: list[_Candidate] = []
        for row, cs in enumerate(entries):
            finished += self._sample_row(call, row, row, cs, cs[0].seq, cs[0].seq, mem, scores)
        return finished

    def _sample_row(
        self,
        call: _Call,
        idx: int,
        row: int,
        draws: list[_Candidate],
        src: int,
        branch: int | None,
        mem,
        scores=None,
    ) -> list[_Candidate]:
        """Each draw samples its next token from the logits of batch index `idx` (output row
        `row`) of the last decode. Draws that go on with the same token share a sequence
        holding `src`'s stream: the first set stays on `branch` (the sequence they decoded
        in; None for a prompt's holder), the others get new branches. Returns the draws that
        finished; they stay on their sequence until retired. `scores`: _logsumexp's (log-sum-
        exp, logits) of the decode, when log-probabilities are wanted."""
        L, ctx = self._L, self._ctx
        if scores is None and call.want_logprob:
            scores = self._logsumexp(row + 1)
        going: dict[int, list[_Candidate]] = {}  # next token -> the draws that took it
        finished: list[_Candidate] = []
        for c in draws:
            tok = L.llama_sampler_sample(c.sampler, ctx, idx)
            lp = float(scores[1][row, tok] - scores[0][row]) if scores is not None else 0.0
            c.pos += 1
            if self._accept(c, tok, lp, call.stops):
                c.over = True
                finished.append(c)
            else:
                going.setdefault(tok, []).append(c)
        for n, cs in enumerate(going.values()):
            if n == 0 and branch is not None:
                continue  # they stay where they are
            seq = self._new_branch(call, src, mem)
            call.users[seq] = len(cs)
            for c in cs:
                if c.seq > 0:
                    call.users[c.seq] -= 1
                c.seq = seq
        return finished

    def _retire(self, call: _Call, finished: list[_Candidate], mem) -> list[Completion]:
        L, params = self._L, call.params
        out: list[Completion] = []
        for c in finished:
            g = c.group
            call.running.remove(c)
            L.llama_sampler_free(c.sampler)
            c.sampler = None
            self._leave(call, c, mem)
            g.live -= 1
            g.done.append(c)
            if g.k == params.n:
                out.append(self._completion(c, c.number))
            if g.live == 0 and g.started == g.k:
                if g.k > params.n:
                    best = sorted(g.done, key=lambda d: (-d.logprob, d.number))
                    out.extend(self._completion(d, i) for i, d in enumerate(best[: params.n]))
                self._release_holder(call, g, mem)
                call.active.remove(g)
        return out

    def _accept(self, c: _Candidate, tok: int, logprob: float, stops: tuple[str, ...]) -> bool:
        """Take a sampled token; True when the draw is finished."""
        c.logprob += logprob
        if self._L.llama_vocab_is_eog(self._vocab, tok):
            c.finish = "stop"
            return True
        c.tokens.append(tok)
        c.buf += self._piece(tok)
        if stops and self._hit_stop(c, stops):
            return True
        if len(c.tokens) >= c.max_new:
            return True
        c.pending = tok
        return False

    def _load_prefix(self, prefix: list[int], mem) -> None:
        """Make sequence 0 hold exactly `prefix`, reusing what an earlier call left there."""
        keep = common_prefix([self._prefix, prefix]) if self._prefix else 0
        if len(prefix) - keep == 1:
            keep -= 1  # no single-token chunk: see "why the batches look the way they do"
        if keep < len(self._prefix):
            self._L.llama_memory_seq_rm(mem, 0, keep, -1)
        self._prefix = prefix[:keep]
        for a, b in self._chunks(keep, len(prefix)):
            for i in range(a, b):
                self._put(i - a, prefix[i], i, [0], False)
            self._decode(b - a, "the shared prompt")
            self._prefix = prefix[:b]

    def _put(self, i: int, tok: int, pos: int, seqs: list[int], logits: bool) -> None:
        b = self._batch
        b.token[i] = tok
        b.pos[i] = pos
        b.n_seq_id[i] = len(seqs)
        ids = b.seq_id[i]
        for j, s in enumerate(seqs):
            ids[j] = s
        b.logits[i] = logits

    def _logsumexp(self, rows: int):
        """(log-sum-exp per row, the logits) of the first `rows` outputs of the last decode."""
        import numpy as np

        ptr = self._L.llama_get_logits(self._ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab))
        m = logits.max(axis=1)
        return m + np.log(np.exp(logits - m[:, None]).sum(axis=1)), logits

    @staticmethod
    def _hit_stop(c: _Candidate, stops: tuple[str, ...]) -> bool:
        """Cut the text at the first stop string. Only the new text, plus enough of the old
        to hold a stop string that straddles the boundary, is searched."""
        text = c.buf.decode("utf-8", "ignore")
        start = max(0, c.scanned - max(len(s) for s in stops) + 1)
        cut = min((p for p in (text.find(s, start) for s in stops) if p >= 0), default=-1)
        c.scanned = len(text)
        if cut < 0:
            return False
        c.text, c.finish = text[:cut], "stop"
        return True

    @staticmethod
    def _completion(c: _Candidate, sample: int) -> Completion:
        text = c.text if c.text is not None else c.buf.decode("utf-8", "ignore")
        return Completion(
            index=c.group.index,
            sample=sample,
            text=text,
            n_tokens=len(c.tokens),
            logprob=c.logprob,
            finish_reason=c.finish,
        )

    def close(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.close()
            self._stream = None
        if getattr(self, "llm", None) is not None:
            self._free_context()
        super().close()
