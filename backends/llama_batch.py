"""Batched llama.cpp generation: many sequences decoded together in one context.

The sequential backend (backends/llama_cpp.py) evaluates one sequence at a time. Here each
llama_decode call carries one token for every running sequence plus chunks of prompt tokens.
A sequence that ends (end-of-generation token, stop string, max_tokens) hands its slot to the
next waiting one at once (continuous batching). Each sequence samples with its own llama.cpp
sampler chain, seeded per prompt and per draw. docs/PERFORMANCE.md has the measurements.

Two cache layouts, chosen per call (see plan_batch):
- shared (n or best_of > 1, e.g. annotation): one KV cell pool (kv_unified). Copying a
  sequence only tags the same cells with another id, so sequence 0 holds the token prefix
  common to all prompts (kept between calls), a holder sequence per prompt holds its prompt,
  and each draw starts from a copy of it; all draws of a prompt take their first token from
  the prompt's own logits. Draws that have produced the same tokens so far have the same
  cache, so they are decoded once (one batch token tagged with all their ids) until they part.
- streams (one draw per prompt, e.g. input generation): one KV stream per sequence, so a
  token attends only to its own sequence, not to every cell in use (the CPU attention kernel
  pays for every cell of a shared pool). The common prefix is computed once in sequence 0
  and its stream copied to each new sequence.
"""
from __future__ import annotations

import ctypes
import itertools
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sgtui.errors import SgtuiError

from .base import Completion, SamplingParams
from .llama_cpp import LlamaCppGenerator

MAX_PARALLEL = 32       # the per-token cost fell little beyond this on a 2-core CPU
MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a sequence of their own
CELL_ALIGN = 256        # llama.cpp pads the KV cache to this many cells
STREAM_ALIGN = 512      # streams grow in steps, so that rounds of prompts reuse a context


@dataclass(frozen=True)
class BatchPlan:
    """Parallel sequences, KV cells in all, sequence ids, and the cache layout."""

    n_parallel: int
    kv_cells: int
    n_seq_max: int
    unified: bool = True

    @property
    def seq_cells(self) -> int:
        """Cells one sequence can use."""
        return self.kv_cells if self.unified else self.kv_cells // self.n_seq_max

    def holds(self, other: BatchPlan) -> bool:
        return (self.unified == other.unified and self.n_seq_max >= other.n_seq_max
                and self.kv_cells >= other.kv_cells and self.seq_cells >= other.seq_cells)


def plan_batch(prompt_lens: Sequence[int], k: int, max_new: int, n_prefix: int,
               n_parallel: int | None, cell_bytes: int, budget_bytes: int,
               n_ctx: int = 1 << 30) -> BatchPlan:
    """The batch-size rule.

    Layout: one draw per prompt (k == 1) gets a KV stream per sequence; several draws per
    prompt (k = max(n, best_of) > 1) share one cell pool.
    Parallel count: n_parallel when given; otherwise the number of draws in the call, at most
    MAX_PARALLEL, rounded down to a multiple of k so that whole prompts fit; then lowered until
    the KV cache fits the memory budget (one sequence is always allowed).
    KV cells, shared pool: each draw in flight reserves 1 + max_new cells, each prompt in
    flight its own prompt tokens, the common prefix counts once; rounded up to 256.
    Streams: 1 + parallel streams (the first holds the prefix), each as long as the longest
    prompt plus max_new (at most n_ctx), rounded up to 512."""
    total = len(prompt_lens) * k
    if n_parallel:
        b = n_parallel
    else:
        b = min(total, MAX_PARALLEL)
        if k < b:
            b -= b % k
    b = max(1, min(b, 126))  # n_seq_max = 2b + 2 must stay within llama.cpp's 256
    longest = max(prompt_lens, default=1)
    unique = max((p - n_prefix for p in prompt_lens), default=0)

    def plan(b: int) -> BatchPlan:
        if k == 1:
            per = min(longest + max_new + 1, n_ctx)
            per = -(-per // STREAM_ALIGN) * STREAM_ALIGN
            return BatchPlan(b, per * (b + 1), b + 1, unified=False)
        groups = min(len(prompt_lens), -(-b // k) + 1)
        raw = n_prefix + groups * unique + b * (1 + max_new)
        return BatchPlan(b, -(-raw // CELL_ALIGN) * CELL_ALIGN, 2 * b + 2)

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


@dataclass
class _Candidate:
    """One draw from one prompt."""

    group: _Group
    number: int
    seq: int
    sampler: object
    max_new: int
    ready: bool = False          # its prompt is in its cache; `pending` can be decoded
    pending: int = 0             # the token to decode next
    pos: int = 0                 # and its position
    branch: int = -1             # draws with the same branch have the same tokens so far
    tokens: list[int] = field(default_factory=list)
    buf: bytearray = field(default_factory=bytearray)
    scanned: int = 0             # characters already searched for stop strings
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
    n_prefix: int = 0
    holder: int = -1             # the sequence holding the prompt
    filled: int = 0              # prompt tokens in the holder so far
    started: int = 0             # draws admitted so far
    live: int = 0                # draws admitted and not finished
    done: list[_Candidate] = field(default_factory=list)

    @property
    def prompt_cells(self) -> int:
        return len(self.tokens) - self.n_prefix

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
    free_seqs: list[int] = field(default_factory=list)
    reserved: int = 0
    branches: Iterator[int] = field(default_factory=itertools.count)


class BatchedLlamaCppGenerator(LlamaCppGenerator):
    """LlamaCppGenerator whose generate() decodes many sequences at once.

    n_parallel: sequences decoded together (default: the batch-size rule in plan_batch);
    share_prefix: compute the prompts' common token prefix once; kv_budget_mib: the most
    memory the KV cache may take (default: a quarter of the memory available); flash_attn:
    llama.cpp's flash attention (off: on CPU it was slower here, and with it off greedy
    output with one draw per prompt is token for token that of the sequential backend)."""

    name = "llama-cpp"
    supports_batch = True

    def __init__(self, model_path: str | Path, n_ctx: int = 4096, n_threads: int | None = None,
                 lora_path: str | None = None, verbose: bool = False,
                 n_parallel: int | None = None, share_prefix: bool = True,
                 kv_budget_mib: int | None = None, flash_attn: bool = False):
        # The parent's high-level Llama is kept for loading, tokenizing and chat rendering;
        # its own context stays small because decoding happens in the context made below.
        super().__init__(model_path, n_ctx=256, n_threads=n_threads, lora_path=lora_path,
                         verbose=verbose)
        import llama_cpp as L
        self._L = L
        self.verbose = verbose
        self._ctx = None
        self._ctx_plan: BatchPlan | None = None
        self._batch = None
        self._batch_size = 0
        self._prefix: list[int] = []  # tokens held by sequence 0
        self._stream: Iterator[Completion] | None = None
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
            raise SgtuiError(problem, path=self.model_path,
                             fix="use --backend llama-cpp-sequential")
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
        # The thread count asked for applies to prompt chunks too (llama-cpp-python would use
        # every core for them); on a shared machine more threads than free cores collapse.
        p.n_threads = p.n_threads_batch = self.llm.context_params.n_threads
        p.kv_unified = plan.unified
        p.flash_attn_type = (L.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn
                             else L.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        p.no_perf = True
        from llama_cpp._utils import suppress_stdout_stderr
        with suppress_stdout_stderr(disable=self.verbose):
            ctx = L.llama_init_from_model(self._model, p)
        if not ctx:
            raise SgtuiError(f"llama.cpp could not create a context of {plan.kv_cells} cells "
                             f"for {plan.n_parallel} sequences", path=self.model_path,
                             fix="pass a smaller n_parallel or kv_budget_mib")
        adapter = getattr(self.llm, "_lora_adapter", None)
        if adapter is not None:
            adapters = (L.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(self.llm.lora_scale)
            if L.llama_set_adapters_lora(ctx, adapters, 1, scales):
                L.llama_free(ctx)
                raise SgtuiError("llama.cpp could not apply the LoRA adapter to the batched "
                                 "context", path=self.model_path)
        self._ctx, self._ctx_plan = ctx, plan
        self._batch_size = L.llama_n_batch(ctx)
        self._batch = L.llama_batch_init(self._batch_size, 0, plan.n_seq_max)

    # -- tokens ---------------------------------------------------------------------------
    def _tokenize(self, prompt: str) -> list[int]:
        """The tokens create_completion would evaluate for this prompt."""
        toks = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        bos = self.llm.token_bos()
        if bos >= 0 and (self.llm._model.add_bos_token() or not toks):
            toks = [bos] + toks
        return toks

    def _piece(self, tok: int) -> bytes:
        piece = self._pieces.get(tok)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._L.llama_token_to_piece(self._vocab, tok, buf, 64, 0, False)
            piece = self._pieces[tok] = buf.raw[:max(n, 0)]
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
    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 seeds: Sequence[int] | None = None) -> Iterator[Completion]:
        """Yield completions as they finish (with best_of > n, a prompt's n best once all its
        draws are done). Prompts are checked here, before any decoding."""
        if self.llm is None:
            raise SgtuiError("the model is closed", path=self.model_path)
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
                raise SgtuiError(f"a prompt of {len(toks)} tokens does not fit the model's "
                                 f"context of {self.n_ctx} tokens", path=self.model_path,
                                 fix="shorten the instruction or examples")
            base = seeds[i] if seeds is not None else (params.seed or 0) * 1000003 + i
            groups.append(_Group(i, toks, base, k))
        if not groups:
            return iter(())
        if self._stream is not None:
            self._stream.close()  # one call at a time owns the context's sequences
        self._stream = self._run(groups, params)
        return self._stream

    def _run(self, groups: list[_Group], params: SamplingParams) -> Iterator[Completion]:
        L = self._L
        prefix: list[int] = []
        if self.share_prefix:
            # one prompt alone keeps what it has in common with the last call's prefix
            heads = [g.tokens[:-1] for g in groups] + ([self._prefix] if len(groups) == 1 else [])
            n = common_prefix(heads) if len(heads) > 1 else 0
            if n >= MIN_SHARED_PREFIX:
                prefix = groups[0].tokens[:n]
        shortest = min(len(g.tokens) for g in groups)
        max_new = max(1, min(params.max_tokens, self.n_ctx - shortest - 1))
        plan = plan_batch([len(g.tokens) for g in groups], groups[0].k, max_new, len(prefix),
                          self.n_parallel, self.cell_bytes, self.kv_budget, self.n_ctx)
        self._ensure_context(plan)
        # a context kept from an earlier call may be larger than this call needs
        kept = self._ctx_plan
        plan = BatchPlan(plan.n_parallel, kept.kv_cells, kept.n_seq_max, kept.unified)
        mem = L.llama_get_memory(self._ctx)
        call = _Call(params, plan, len(prefix), tuple(s for s in params.stop if s),
                     params.best_of is not None and params.best_of > params.n,
                     deque(groups), free_seqs=list(range(plan.n_seq_max - 1, 0, -1)),
                     reserved=len(prefix))
        try:
            self._clear(mem)
            self._load_prefix(prefix, mem)
            while call.waiting or call.active:
                self._admit(call, mem)
                self._start_late(call, mem)
                entries, primed = self._fill_batch(call)
                rc = L.llama_decode(self._ctx, self._batch)
                if rc != 0:
                    raise SgtuiError(f"llama.cpp could not decode a batch (code {rc})",
                                     path=self.model_path,
                                     fix="pass a smaller n_parallel, or use --backend "
                                         "llama-cpp-sequential")
                finished = self._sample(call, entries, primed, mem)
                yield from self._retire(call, finished, mem)
        finally:
            for c in call.running:
                if c.sampler is not None:
                    L.llama_sampler_free(c.sampler)
                    c.sampler = None
            if self._ctx is not None:
                self._clear(L.llama_get_memory(self._ctx))

    def _clear(self, mem) -> None:
        """Drop every sequence but the prefix (sequence 0)."""
        if self._ctx_plan.unified:
            self._L.llama_memory_seq_keep(mem, 0)
        else:
            for s in range(1, self._ctx_plan.n_seq_max):
                self._L.llama_memory_seq_rm(mem, s, -1, -1)

    def _admit(self, call: _Call, mem) -> None:
        """Give free slots to draws: the rest of the prompts in flight first, one slot at a
        time; a new prompt only when a block of slots is free, so that its draws start
        together and all take their first token from the prompt's own logits."""
        L, plan = self._L, call.plan
        block = min(call.waiting[0].k if call.waiting else 1, plan.n_parallel)
        while len(call.running) < plan.n_parallel and call.free_seqs:
            g = next((a for a in call.active if a.started < a.k), None)
            new = g is None
            if new:
                free = plan.n_parallel - len(call.running)
                need_seqs = 2 if plan.unified else 1
                if (not call.waiting or len(call.free_seqs) < need_seqs
                        or (call.running and free < block)):
                    return
                g = call.waiting[0]
                g.n_prefix = call.prefix_len
            g_max = max(1, min(call.params.max_tokens, self.n_ctx - len(g.tokens) - 1))
            cells = 1 + g_max + (g.prompt_cells if new else 0)
            if plan.unified and call.running and call.reserved + cells > plan.kv_cells:
                return
            call.reserved += cells
            seq = call.free_seqs.pop()
            if new:
                call.waiting.popleft()
                # with streams the draw's own sequence holds the prompt (k is 1 there)
                g.holder = call.free_seqs.pop() if plan.unified else seq
                if call.prefix_len:
                    L.llama_memory_seq_cp(mem, 0, g.holder, -1, -1)
                g.filled = g.n_prefix
                call.active.append(g)
            seed = (g.seed + g.started) % (2**31)
            call.running.append(_Candidate(g, g.started, seq, self._sampler(call.params, seed),
                                           g_max))
            g.started += 1
            g.live += 1

    def _start_late(self, call: _Call, mem) -> None:
        """A draw admitted after its prompt's logits are gone decodes the prompt's last token
        again in its own sequence."""
        L = self._L
        for c in call.running:
            g = c.group
            if not c.ready and g.prefilled:
                L.llama_memory_seq_cp(mem, g.holder, c.seq, -1, -1)
                L.llama_memory_seq_rm(mem, c.seq, len(g.tokens) - 1, -1)
                c.ready, c.pending, c.pos = True, g.tokens[-1], len(g.tokens) - 1
                c.branch = next(call.branches)

    def _fill_batch(self, call: _Call) -> tuple[list[list[_Candidate]], list[tuple[_Group, int]]]:
        """Draws with the same history (same prompt, same tokens so far) have the same cache
        and logits: they share one batch token tagged with all their sequence ids, and each
        draws from that row with its own sampler. Then prompt chunks fill the batch."""
        by_key: dict[tuple[int, int], list[_Candidate]] = {}
        for c in call.running:
            if c.ready:
                by_key.setdefault((c.branch, c.pending), []).append(c)
        entries = list(by_key.values())
        if not call.plan.unified:
            # llama.cpp puts consecutive sequence ids of streams into one micro-batch
            entries.sort(key=lambda cs: cs[0].seq)
        for n, cs in enumerate(entries):
            self._put(n, cs[0].pending, cs[0].pos, [c.seq for c in cs], True)
        n = len(entries)
        primed: list[tuple[_Group, int]] = []  # prompts whose last token is in this batch
        for g in call.active:
            end = len(g.tokens)
            while g.filled < end and n < self._batch_size:
                last = g.filled == end - 1
                self._put(n, g.tokens[g.filled], g.filled, [g.holder], last)
                if last:
                    primed.append((g, n))
                g.filled += 1
                n += 1
        if n == 0:
            raise RuntimeError("batched decoding stalled with nothing to decode")
        self._batch.n_tokens = n
        return entries, primed

    def _sample(self, call: _Call, entries: list[list[_Candidate]],
                primed: list[tuple[_Group, int]], mem) -> list[_Candidate]:
        L, ctx = self._L, self._ctx
        lse, logits = self._logsumexp(len(entries) + len(primed)) if call.want_logprob \
            else (None, None)
        rows: list[tuple[int, int, list[_Candidate]]] = [
            (r, r, cs) for r, cs in enumerate(entries)]
        for j, (g, idx) in enumerate(primed):
            cs = [c for c in call.running if c.group is g and not c.ready]
            for c in cs:
                if c.seq != g.holder:
                    L.llama_memory_seq_cp(mem, g.holder, c.seq, -1, -1)
                c.ready, c.pos = True, len(g.tokens) - 1
            rows.append((idx, len(entries) + j, cs))
        finished: list[_Candidate] = []
        for idx, row, cs in rows:
            forks: dict[int, int] = {}
            for c in cs:
                tok = L.llama_sampler_sample(c.sampler, ctx, idx)
                lp = float(logits[row, tok] - lse[row]) if lse is not None else 0.0
                c.pos += 1
                # draws that took the same token still share a history
                if tok not in forks:
                    forks[tok] = next(call.branches)
                c.branch = forks[tok]
                if self._accept(c, tok, lp, call.stops):
                    finished.append(c)
        return finished

    def _retire(self, call: _Call, finished: list[_Candidate], mem) -> list[Completion]:
        L, params = self._L, call.params
        out: list[Completion] = []
        for c in finished:
            g = c.group
            call.running.remove(c)
            L.llama_sampler_free(c.sampler)
            c.sampler = None
            if c.seq != g.holder:
                L.llama_memory_seq_rm(mem, c.seq, -1, -1)
                call.free_seqs.append(c.seq)
            call.reserved -= 1 + c.max_new
            g.live -= 1
            g.done.append(c)
            if g.k == params.n:
                out.append(self._completion(c, c.number))
            if g.live == 0 and g.started == g.k:
                if g.k > params.n:
                    best = sorted(g.done, key=lambda d: (-d.logprob, d.number))
                    out.extend(self._completion(d, i) for i, d in enumerate(best[:params.n]))
                L.llama_memory_seq_rm(mem, g.holder, -1, -1)
                call.free_seqs.append(g.holder)
                call.reserved -= g.prompt_cells
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
        if keep < len(self._prefix):
            self._L.llama_memory_seq_rm(mem, 0, keep, -1)
        self._prefix = prefix[:keep]
        for start in range(keep, len(prefix), self._batch_size):
            chunk = prefix[start:start + self._batch_size]
            for i, tok in enumerate(chunk):
                self._put(i, tok, start + i, [0], False)
            self._batch.n_tokens = len(chunk)
            rc = self._L.llama_decode(self._ctx, self._batch)
            if rc != 0:
                self._L.llama_memory_seq_rm(mem, 0, -1, -1)
                self._prefix = []
                raise SgtuiError(f"llama.cpp could not decode the shared prompt (code {rc})",
                                 path=self.model_path)
            self._prefix = prefix[:start + len(chunk)]

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
        return Completion(index=c.group.index, sample=sample, text=text, n_tokens=len(c.tokens),
                          logprob=c.logprob, finish_reason=c.finish)

    def close(self) -> None:
        if getattr(self, "_stream", None) is not None:
            self._stream.close()
            self._stream = None
        if getattr(self, "llm", None) is not None:
            self._free_context()
        super().close()
