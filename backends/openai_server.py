"""The server backend: generation and annotation through an OpenAI-compatible endpoint.

A user who already runs a server (llama-server, vLLM, LM Studio, Ollama, llama-cpp-python's own
server) points sgtui at it instead of loading a model in-process; several replicas behind one
URL, or vLLM's tensor parallelism, then scale generation without sgtui growing a cluster.

The pipeline renders its chat prompts itself (render_chat, below), so the server must complete
the text as given and never put a chat template around it a second time: this backend uses the
plain-text `/v1/completions` endpoint, and for Ollama, whose `/v1/completions` wraps the prompt in
the model's template, the native `/api/generate` with `raw: true`.

What the server tells us, where it can, and what is assumed where it cannot (issue 13):
- the chat template: llama-server's `/props`, Ollama's `/api/show` (a Jinja template only: an
  Ollama TEMPLATE is Go text/template and cannot be rendered here), else the local GGUF or
  Hugging Face folder given as `template_from`, else the completion layout (backends/chat.py);
- token counts: the server's tokenizer (llama-cpp-python's `/extras/tokenize`, llama-server's and
  vLLM's `/tokenize`), else `template_from`'s vocabulary, else an estimate of one token per three
  UTF-8 bytes (`exact_tokens` is False; prompts are then not refused before they are sent);
- the context: the `n_ctx` given, else llama-server's `/props`, vLLM's `max_model_len`, an
  Ollama `num_ctx` parameter, else 2048 for llama-cpp-python's server (its own default) and 4096
  for any other (`n_ctx_source` says which);
- log-probabilities (score()): the completions endpoint with `echo` and `logprobs`, checked once
  against the server's own generation log-probabilities; a server that returns none, or wrong
  ones (llama-cpp-python's server shifts the prompt's by one token for a model without a BOS
  token), has `supports_score` False and `score_unsupported` says why. The pipeline then leaves
  the input-dependence filter off, and the channel annotator refuses the backend.

Requests go out in parallel (`concurrency`, default 4) from a thread pool; 429 and 503 (and a
gateway's 502 and 504) are retried after the server's Retry-After or an exponential backoff. A
server that ignores `n` (llama-cpp-python's, Ollama) gets the missing answers as parallel requests
of their own, with the seeds the in-process backends give those draws (base seed + draw number).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

from sgtui.errors import SgtuiError
from sgtui.training import chat_format

from .base import (
    ChatMessage,
    Completion,
    SamplingParams,
    ScoreStopped,
    TokenScore,
    check_score_pair,
    prompt_too_long,
)
from .chat import render_template, with_turn_stops
from .llama_cpp import quiet_llama

DEFAULT_N_CTX = 4096
LLAMA_CPP_PYTHON_N_CTX = 2048  # llama_cpp.server's default --n_ctx
RETRIED = (429, 502, 503, 504)
MAX_TRIES = 8  # tries of one request on 429/503 before giving up
MAX_WAIT = 60.0  # the longest pause between two tries, whatever Retry-After says
# Sampling settings outside the OpenAI API that llama.cpp servers and vLLM take: without them
# llama-server and llama-cpp-python's server sample with min_p 0.05 and repeat_penalty 1.1, and
# the in-process batched backend uses neither.
EXTENSIONS = ("top_k", "min_p", "repeat_penalty")
SCORE_PROBE = "1, 2, 3, 4, 5, 6, 7, 8,"
SCORE_TOLERANCE = 0.05  # nats between the echoed and the generated log-probability


def split_spec(base_url: str, served_model: str | None) -> tuple[str, str | None]:
    """`URL#MODEL` (what `model_path` records for a run, so that --resume finds the server and
    the model again) or a URL and a separate model name."""
    if "#" in base_url and served_model is None:
        base_url, served_model = base_url.split("#", 1)
    return base_url, served_model or None


class ServerHTTPError(SgtuiError):
    """The server answered with an HTTP error status."""

    def __init__(
        self, status: int, message: str, *, path: str | None = None, fix: str | None = None
    ):
        super().__init__(message, path=path, fix=fix)
        self.status = status


class _Cancelled(Exception):
    """The stop event was set while a request waited to be retried."""


class OpenAIServerGenerator:
    """A Generator (backends/base.py) whose model runs in a server sgtui talks to over HTTP.

    base_url: the server's API root, with or without the trailing /v1 (http://127.0.0.1:8080/v1),
    or `URL#MODEL`; served_model: the model name the server knows (default: its only model);
    api_key_env: the name of the environment variable holding the API key (never the key itself);
    concurrency: requests in flight at once; timeout: seconds one request may take; n_ctx: the
    context the server runs with, when it cannot tell us; template_from: a local GGUF file or
    Hugging Face folder whose chat template (and tokenizer) to use when the server gives none."""

    name = "openai"
    supports_batch = True
    supports_stop = True  # generate() and score() take a stop event
    supports_lora = False

    def __init__(
        self,
        base_url: str,
        served_model: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 4,
        timeout: float = 600.0,
        n_ctx: int | None = None,
        template_from: str | Path | None = None,
    ):
        base_url, served_model = split_spec(str(base_url), served_model)
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SgtuiError(
                f"not a server address: {base_url!r}",
                fix="pass --base-url like http://127.0.0.1:8080/v1",
            )
        if concurrency < 1:
            raise SgtuiError("concurrency must be at least 1", fix="pass 1 or more")
        path = parts.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[:-3]
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._root = path  # llama-server's /props, /tokenize and Ollama's /api live here
        self.base_url = f"{parts.scheme}://{parts.netloc}{path}/v1"
        self.concurrency = concurrency
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._key_env = api_key_env
        if api_key_env:
            key = os.environ.get(api_key_env, "").strip()
            if not key:
                raise SgtuiError(
                    f"the environment variable {api_key_env} that should hold the "
                    "server's API key is not set",
                    fix=f"export {api_key_env}=YOUR_KEY, or leave out --api-key-env "
                    "for a server without a key",
                )
            self._headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []  # every thread's, closed by close()
        self._conns_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._n_ok: bool | None = None  # does the server honour n? (None: not seen)
        self._extensions_ok = True  # does it take top_k, min_p, repeat_penalty?
        self._score_check: tuple[bool, str] | None = None
        self._counts: dict[str, int] = {}
        self._vocab = None  # template_from's vocabulary (token counts)
        self._tokenize_path: str | None = None
        self._bos_offset = 0
        self.flavour = "openai"

        models = self._models()
        self.served_model = self._pick_model(models, served_model)
        self.model_path = f"{self.base_url}#{self.served_model}"
        self.chat_template: str | None = None
        self._bos = self._eos = ""
        self.template_source = "completion layout (the server gives no chat template)"
        server_ctx, ctx_source = self._inspect(models)
        self._find_tokenizer()
        if template_from:
            self._template_from(template_from)
        if n_ctx:
            self.n_ctx, self.n_ctx_source = int(n_ctx), "given"
        elif server_ctx:
            self.n_ctx, self.n_ctx_source = server_ctx, ctx_source
        elif self.flavour == "llama-cpp-python":
            self.n_ctx = LLAMA_CPP_PYTHON_N_CTX
            self.n_ctx_source = "assumed: llama-cpp-python's server default (pass n_ctx)"
        else:
            self.n_ctx, self.n_ctx_source = DEFAULT_N_CTX, "assumed (pass n_ctx)"

    # -- HTTP -------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host  # an IPv6 address
        return f"{self._scheme}://{host}:{self._port}{path}"

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        """This thread's keep-alive connection (a new one after a failure)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and fresh:
            self._drop(conn)
            conn = None
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)

    def _request(
        self, method: str, path: str, body: dict | None = None, *, stop=None, probe: bool = False
    ) -> tuple[int, object]:
        """(status, parsed JSON or text). Retries 429/503/502/504 with backoff and a dropped
        keep-alive connection once; raises SgtuiError on a refused connection, a timeout, or a
        connection that keeps dropping. probe: return 4xx/5xx to the caller instead of raising
        (used to find out what a server offers)."""
        data = json.dumps(body).encode("utf-8") if body is not None else None
        url = self._url(path)
        dropped = 0
        for attempt in range(MAX_TRIES):
            conn = self._connection(fresh=dropped > 0)
            try:
                conn.request(method, path, body=data, headers=self._headers)
                resp = conn.getresponse()
                raw = resp.read()
            except ConnectionRefusedError:
                self._drop(conn)
                if dropped:  # it was there a moment ago
                    raise SgtuiError(
                        "the server closed the connection and no longer listens at "
                        f"{self.base_url} (connection refused)",
                        path=url,
                        fix="check the server's log (it may have crashed or been "
                        "stopped) and start it again; a run continues with "
                        "--resume",
                    ) from None
                raise SgtuiError(
                    f"nothing is listening at {self.base_url} (connection refused)",
                    path=url,
                    fix="start the server (llama-server -m MODEL --port N, "
                    "ollama serve, vllm serve MODEL), or pass --base-url with its "
                    "address",
                ) from None
            except socket.gaierror as e:
                self._drop(conn)
                raise SgtuiError(
                    f"the server's host name cannot be resolved ({e.strerror or e})",
                    path=url,
                    fix="check the host in --base-url",
                ) from None
            except (TimeoutError, socket.timeout):
                self._drop(conn)
                raise SgtuiError(
                    f"the server did not answer within {self.timeout:g} s",
                    path=url,
                    fix="give it a longer timeout, or fewer parallel requests (--concurrency)",
                ) from None
            except (
                http.client.RemoteDisconnected,
                http.client.IncompleteRead,
                ConnectionResetError,
                BrokenPipeError,
                ConnectionAbortedError,
            ) as e:
                # a keep-alive connection the server closed while idle fails at once: retry on
                # a new one; a server that drops that too has crashed or been stopped
                self._drop(conn)
                dropped += 1
                if dropped <= 2:
                    continue
                raise SgtuiError(
                    f"the server closed the connection before it answered ({type(e).__name__})",
                    path=url,
                    fix="check the server's log (it may have crashed or run out of "
                    "memory) and start it again; a run continues with --resume",
                ) from None
            text = raw.decode("utf-8", "replace")
            try:
                payload: object = json.loads(text) if text else None
            except ValueError:
                payload = text
            status = resp.status
            if resp.will_close:
                self._drop(conn)
            if status in RETRIED and attempt + 1 < MAX_TRIES:
                delay = self._retry_delay(resp.getheader("Retry-After"), attempt)
                if stop is not None:
                    if stop.wait(delay):
                        raise _Cancelled()
                else:
                    time.sleep(delay)
                continue
            if status >= 400 and not probe:
                raise self._http_error(status, payload, url)
            return status, payload
        raise AssertionError("unreachable")  # the last try returns or raises

    @staticmethod
    def _retry_delay(retry_after: str | None, attempt: int) -> float:
        """Retry-After (seconds or an HTTP date) when the server sends it, else 0.5 s doubling
        with jitter; never more than MAX_WAIT."""
        if retry_after:
            try:
                return min(MAX_WAIT, max(0.0, float(retry_after)))
            except ValueError:
                try:
                    when = parsedate_to_datetime(retry_after).timestamp()
                    return min(MAX_WAIT, max(0.0, when - time.time()))
                except (TypeError, ValueError, IndexError):
                    pass
        return min(MAX_WAIT, 0.5 * 2**attempt) * (0.5 + random.random() / 2)

    def _http_error(self, status: int, payload: object, url: str) -> ServerHTTPError:
        said = _message(payload)
        if status in (401, 403):
            what = f"the server refused the request (HTTP {status}: {said})"
            fix = (
                f"check the key in ${self._key_env}"
                if self._key_env
                else "put the key in an environment variable and name it with --api-key-env"
            )
        elif status == 404:
            what = f"the server has no such endpoint or model (HTTP 404: {said})"
            fix = (
                "pass --base-url with the server's API root (…/v1) and --served-model with a "
                "model it lists at /v1/models"
            )
        elif status in RETRIED:
            what = f"the server is still busy after {MAX_TRIES} tries (HTTP {status}: {said})"
            fix = "lower --concurrency, or try again when the server is free"
        elif 400 <= status < 500:
            what = f"the server rejected the request (HTTP {status}: {said})"
            fix = (
                "shorten the prompts, or pass the server's real context as n_ctx"
                if "context" in said.lower() or "too long" in said.lower()
                else "check the server's log for what it expected"
            )
        else:
            what = f"the server failed (HTTP {status}: {said})"
            fix = "check the server's log; a run continues with --resume"
        return ServerHTTPError(status, what, path=url, fix=fix)

    def _get(self, path: str) -> tuple[int, object]:
        return self._request("GET", path, probe=True)

    # -- what the server offers ---------------------------------------------------------------
    def _models(self) -> list[dict]:
        status, payload = self._request("GET", self._root + "/v1/models")
        data = payload.get("data") if isinstance(payload, dict) else None
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    def _pick_model(self, models: list[dict], wanted: str | None) -> str:
        ids = [str(m.get("id")) for m in models if m.get("id")]
        if wanted:
            # Ollama answers to "name" for "name:latest"; other servers may not list aliases
            if ids and wanted not in ids and not any(i.split(":")[0] == wanted for i in ids):
                raise SgtuiError(
                    f"the server does not serve {wanted!r}",
                    path=self.base_url,
                    fix=f"pass --served-model with one of: {', '.join(ids)}",
                )
            return wanted
        if len(ids) == 1:
            return ids[0]
        raise SgtuiError(
            "the server serves "
            + (f"{len(ids)} models" if ids else "no model it lists")
            + ", and none was named",
            path=self.base_url,
            fix=f"pass --served-model with one of: {', '.join(ids)}"
            if ids
            else "pass --served-model with the name the server knows the model by",
        )

    def _inspect(self, models: list[dict]) -> tuple[int | None, str]:
        """Find the server kind, its chat template and its context where it says them."""
        mine = next((m for m in models if m.get("id") == self.served_model), {})
        status, props = self._get(self._root + "/props")
        if (
            status == 200
            and isinstance(props, dict)
            and ("default_generation_settings" in props or "chat_template" in props)
        ):
            self.flavour = "llama-server"
            if props.get("chat_template"):
                self.chat_template = props["chat_template"]
                self.template_source = "the server (/props)"
                self._bos = props.get("bos_token") or ""
                self._eos = props.get("eos_token") or ""
            ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
            if ctx:
                return int(ctx), "the server (/props, per slot)"
        if mine.get("max_model_len"):  # vLLM
            self.flavour = "vllm"
            return int(mine["max_model_len"]), "the server (/v1/models max_model_len)"
        if mine.get("owned_by") == "ollama" or self._is_ollama():
            return self._inspect_ollama()
        return None, ""

    def _is_ollama(self) -> bool:
        status, payload = self._get(self._root + "/api/version")
        return status == 200 and isinstance(payload, dict) and "version" in payload

    def _inspect_ollama(self) -> tuple[int | None, str]:
        self.flavour = "ollama"
        status, show = self._request(
            "POST", self._root + "/api/show", {"model": self.served_model}, probe=True
        )
        if status != 200 or not isinstance(show, dict):
            return None, ""
        info = show.get("model_info") or {}
        if isinstance(info.get("tokenizer.chat_template"), str):
            self.chat_template = info["tokenizer.chat_template"]
            self.template_source = "the server (/api/show)"
        for line in str(show.get("parameters") or "").splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "num_ctx" and value.strip().isdigit():
                return int(value), "the server (/api/show num_ctx)"
        return None, ""

    def _find_tokenizer(self) -> None:
        """Which endpoint counts tokens: llama-cpp-python's /extras/tokenize (which adds the BOS
        token where the model wants one: counted once and taken off), else llama-server's and
        vLLM's /tokenize."""
        if self.flavour == "ollama":
            return
        status, got = self._request(
            "POST",
            self._root + "/extras/tokenize",
            {"input": "", "model": self.served_model},
            probe=True,
        )
        if status == 200 and isinstance(got, dict) and isinstance(got.get("tokens"), list):
            self._tokenize_path = self._root + "/extras/tokenize"
            self._bos_offset = len(got["tokens"])
            if self.flavour == "openai":
                self.flavour = "llama-cpp-python"
            return
        status, got = self._request(
            "POST", self._root + "/tokenize", self._tokenize_body("a"), probe=True
        )
        if status == 200 and isinstance(got, dict) and isinstance(got.get("tokens"), list):
            self._tokenize_path = self._root + "/tokenize"

    def _tokenize_body(self, text: str) -> dict:
        if self._tokenize_path and self._tokenize_path.endswith("/extras/tokenize"):
            return {"input": text, "model": self.served_model}
        # one body for both: llama-server reads content/add_special, vLLM prompt/add_special_tokens
        return {
            "content": text,
            "add_special": False,
            "parse_special": True,
            "prompt": text,
            "model": self.served_model,
            "add_special_tokens": False,
        }

    def _template_from(self, source: str | Path) -> None:
        """The chat template of a local model where the server gave none, and its vocabulary
        for token counts where the server has no tokenizer (a GGUF file only)."""
        if self.chat_template is None:
            fmt = chat_format(source)
            self.chat_template, self._bos, self._eos = fmt.template, fmt.bos, fmt.eos
            self.template_source = f"{source} (template_from)"
        if self._tokenize_path is None and Path(source).is_file():
            from llama_cpp import Llama

            quiet_llama()
            self._vocab = Llama(model_path=str(source), vocab_only=True, verbose=False)

    @property
    def exact_tokens(self) -> bool:
        """Whether count_tokens() asks a tokenizer (else it estimates)."""
        return self._tokenize_path is not None or self._vocab is not None

    # -- the Generator interface --------------------------------------------------------------
    def render_chat(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        return render_template(
            self.chat_template, messages, self._bos, self._eos, add_generation_prompt
        )

    def eos_text(self) -> str:
        """The end-of-turn text, where the server or template_from told it ("" otherwise:
        training uses the training model's own)."""
        return self._eos

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` without a BOS token, as the in-process backends count them: the
        server's tokenizer, template_from's vocabulary, or an estimate (exact_tokens)."""
        if text in self._counts:
            return self._counts[text]
        if self._tokenize_path is not None:
            _, got = self._request("POST", self._tokenize_path, self._tokenize_body(text))
            toks = got.get("tokens") if isinstance(got, dict) else None
            if not isinstance(toks, list):
                raise SgtuiError(
                    "the server's tokenizer answered without tokens",
                    path=self._url(self._tokenize_path),
                )
            n = max(0, len(toks) - self._bos_offset) if text else 0
        elif self._vocab is not None:
            n = len(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        else:
            n = math.ceil(len(text.encode("utf-8")) / 3)
        if len(self._counts) > 4096:
            self._counts.clear()
        self._counts[text] = n
        return n

    def _max_tokens(self, prompt: str, params: SamplingParams) -> int:
        """max_tokens for this prompt, and the in-process backends' refusal of a prompt that does
        not fit (only with exact token counts: an estimate would refuse prompts that fit)."""
        if not self.exact_tokens:
            return params.max_tokens
        n = self.count_tokens(prompt)
        if n + 1 >= self.n_ctx:
            raise prompt_too_long(n, self.n_ctx, self.model_path)
        return max(1, min(params.max_tokens, self.n_ctx - n - 1))

    def generate(
        self,
        prompts: Sequence[str],
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
        stop=None,
    ) -> Iterator[Completion]:
        """Yield completions as they finish, in any order: n per prompt (with best_of > n, the n
        with the highest cumulative logprob of best_of drawn, where the server returns
        log-probabilities; else the first n). Prompts are checked before anything is sent.
        `stop`: an object with is_set(); once set, the stream ends without the answers still
        in flight."""
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError("seeds must give one seed per prompt")
        # without a chat template, the completion layout's next turn is a stop, as in-process
        params = with_turn_stops(params, self.chat_template)
        k = max(params.n, params.best_of or params.n)
        if k < 1 or not prompts:
            return iter(())
        pool = self._executor()
        limits = list(pool.map(lambda p: self._max_tokens(p, params), prompts))
        bases = [
            (seeds[i] if seeds is not None else (params.seed or 0) * 1000003 + i)
            for i in range(len(prompts))
        ]
        return self._stream(list(prompts), params, k, limits, bases, stop)

    def _stream(
        self,
        prompts: list[str],
        params: SamplingParams,
        k: int,
        limits: list[int],
        bases: list[int],
        stop,
    ) -> Iterator[Completion]:
        pool = self._executor()
        want_logprob = k > params.n
        pending: dict[Future, tuple[int, int, int]] = {}
        drawn: dict[int, list[Completion]] = {}

        def submit(i: int, first: int, count: int) -> None:
            fut = pool.submit(
                self._complete,
                prompts[i],
                params,
                (bases[i] + first) % (2**31),
                count,
                limits[i],
                want_logprob,
                stop,
            )
            pending[fut] = (i, first, count)

        for i in range(len(prompts)):
            if self._n_ok is False or k == 1:
                for j in range(k):
                    submit(i, j, 1)
            else:
                submit(i, 0, k)
        try:
            while pending:
                if stop is not None and stop.is_set():
                    return
                done, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
                for fut in done:
                    i, first, count = pending.pop(fut)
                    try:
                        got = fut.result()
                    except _Cancelled:
                        return
                    if count > 1:
                        self._n_ok = len(got) >= count
                    got = got[:count]
                    for j in range(first + len(got), first + count):
                        submit(i, j, 1)  # the server ignored n: one request per draw
                    for off, c in enumerate(got):
                        comp = Completion(
                            i, first + off, c["text"], c["n_tokens"], c["logprob"], c["finish"]
                        )
                        if k == params.n:
                            yield comp
                            continue
                        drawn.setdefault(i, []).append(comp)
                        if len(drawn[i]) == k:
                            best = sorted(drawn.pop(i), key=lambda d: (-d.logprob, d.sample))
                            for rank, d in enumerate(best[: params.n]):
                                d.sample = rank
                                yield d
        finally:
            for fut in pending:
                fut.cancel()

    def _complete(
        self,
        prompt: str,
        params: SamplingParams,
        seed: int,
        n: int,
        max_tokens: int,
        want_logprob: bool,
        stop,
    ) -> list[dict]:
        """One request for n draws; returns the choices the server gave (maybe fewer than n)."""
        if self.flavour == "ollama":
            return self._complete_ollama(prompt, params, seed, max_tokens, stop)
        body: dict = {
            "model": self.served_model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "n": n,
            "stream": False,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if want_logprob:
            body["logprobs"] = 1
        payload = self._post_completion(body, params, stop)
        choices = sorted(payload.get("choices") or [], key=lambda c: c.get("index", 0))
        usage = (payload.get("usage") or {}).get("completion_tokens")
        chars = sum(len(c.get("text") or "") for c in choices) or 1
        out = []
        for c in choices:
            text, finish = _cut_at_stop(c.get("text") or "", params.stop, c.get("finish_reason"))
            lp = c.get("logprobs") or {}
            token_lps = [x for x in (lp.get("token_logprobs") or []) if x is not None]
            if len(choices) == 1 and usage is not None:
                n_tokens = int(usage)
            elif lp.get("tokens"):
                n_tokens = len(lp["tokens"])
            else:  # usage counts all choices together: shared out by length
                n_tokens = round((usage or 0) * len(c.get("text") or "") / chars)
            out.append(
                {
                    "text": text,
                    "n_tokens": n_tokens,
                    "logprob": float(sum(token_lps)),
                    "finish": finish,
                }
            )
        return out

    def _post_completion(self, body: dict, params: SamplingParams | None, stop) -> dict:
        """POST /v1/completions with the llama.cpp sampling extensions, while the server takes
        them. A server that answers 400 is asked again without the extensions, then with n = 1;
        what it then takes is remembered, and when nothing helps the first answer is the error
        (a prompt too long for the context turns nothing off)."""
        path = self._root + "/v1/completions"
        ext = {}
        if params is not None and self._extensions_ok:
            ext = {
                "top_k": params.top_k if params.temperature > 0 else 1,
                "min_p": 0.0,
                "repeat_penalty": 1.0,
            }
        many = body.get("n", 1) > 1
        tries = [(bool(ext), False)]
        if ext:
            tries.append((False, False))
        if many:
            tries += [(bool(ext), True)] + ([(False, True)] if ext else [])
        first_error = None
        for with_ext, one in tries:
            full = {**body, **(ext if with_ext else {}), **({"n": 1} if one else {})}
            status, payload = self._request("POST", path, full, stop=stop, probe=True)
            if status == 400:
                first_error = first_error or self._http_error(status, payload, self._url(path))
                continue
            if status >= 400:
                raise self._http_error(status, payload, self._url(path))
            if ext and not with_ext:
                self._extensions_ok = False
            if one:
                self._n_ok = False
            if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list):
                raise SgtuiError(
                    "the server's answer has no completions in it",
                    path=self._url(path),
                    fix="check that --base-url points at an OpenAI-compatible server's API root",
                )
            return payload
        raise first_error

    def _complete_ollama(
        self, prompt: str, params: SamplingParams, seed: int, max_tokens: int, stop
    ) -> list[dict]:
        """Ollama's native /api/generate with raw: its /v1/completions puts the model's TEMPLATE
        around the prompt, which the pipeline has already rendered."""
        options = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k if params.temperature > 0 else 1,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "seed": seed,
            "num_predict": max_tokens,
            "num_ctx": self.n_ctx,
        }
        if params.stop:
            options["stop"] = list(params.stop)
        _, got = self._request(
            "POST",
            self._root + "/api/generate",
            {
                "model": self.served_model,
                "prompt": prompt,
                "raw": True,
                "stream": False,
                "options": options,
            },
            stop=stop,
        )
        got = got if isinstance(got, dict) else {}
        text, finish = _cut_at_stop(got.get("response") or "", params.stop, got.get("done_reason"))
        return [
            {
                "text": text,
                "n_tokens": int(got.get("eval_count") or 0),
                "logprob": 0.0,
                "finish": finish,
            }
        ]

    # -- log-probabilities --------------------------------------------------------------------
    @property
    def supports_score(self) -> bool:
        """Whether score() works here: checked once, on first use (two short requests)."""
        if self._score_check is None:
            self._score_check = self._check_score()
        return self._score_check[0]

    @property
    def score_unsupported(self) -> str:
        """Why score() does not work with this server ("" when it does)."""
        return "" if self.supports_score else self._score_check[1]

    def _check_score(self) -> tuple[bool, str]:
        """Generate one greedy token with its log-probability, then send the prompt with that
        token appended and `echo`: the echoed log-probability of the token must be the one the
        server generated it with."""
        if self.flavour == "ollama":
            return False, "Ollama does not return a prompt's log-probabilities"
        try:
            gen = self._post_completion(
                {
                    "model": self.served_model,
                    "prompt": SCORE_PROBE,
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": 1,
                    "stream": False,
                },
                None,
                None,
            )
            choice = gen["choices"][0]
            lp = choice.get("logprobs") or {}
            tokens, values = lp.get("tokens") or [], lp.get("token_logprobs") or []
            if not tokens or not values or values[0] is None:
                return False, "the server returns no log-probabilities"
            token, expected = tokens[0], float(values[0])
            if not token:
                return False, "the server's log-probabilities could not be checked"
            echo = self._post_completion(
                {
                    "model": self.served_model,
                    "prompt": SCORE_PROBE + token,
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": 1,
                    "echo": True,
                    "stream": False,
                },
                None,
                None,
            )
        except ServerHTTPError as e:
            if not 400 <= e.status < 500:
                raise
            return False, f"the server refused a log-probability request ({e.message})"
        try:
            got = _echo_score(echo, SCORE_PROBE, token, "")
        except SgtuiError:
            return False, "the server does not return a prompt's log-probabilities (echo)"
        if got.n_tokens != 1:
            return False, "the server's echoed tokens could not be matched with its generation's"
        if abs(got.logprob - expected) > SCORE_TOLERANCE:
            return False, (
                f"the server's log-probabilities for a prompt disagree with those it "
                f"generates with ({got.logprob:.2f} against {expected:.2f} nats for the "
                "same token; llama-cpp-python's server shifts a prompt's by one token "
                "for a model without a BOS token)"
            )
        return True, ""

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], stop=None
    ) -> list[TokenScore]:
        """log P(continuations[i] | prompts[i]) for each pair (backends.base.Generator.score),
        one echo request per pair, `concurrency` at a time.

        The server tokenises prompt and continuation as one text, so the split between them is
        where the continuation's first character is (_echo_score): a token that straddles the
        boundary (which a chat prompt ending in a newline or a special token does not produce)
        counts for the continuation. `stop`: once set, scoring gives up with ScoreStopped."""
        if len(prompts) != len(continuations):
            raise ValueError("score needs one continuation per prompt")
        if not self.supports_score:
            raise SgtuiError(
                f"this server cannot score text: {self.score_unsupported}",
                path=self.model_path,
                fix="use --backend llama-cpp for the filters that score, or --annotator vote",
            )
        pool = self._executor()
        out: list[TokenScore | None] = [None] * len(prompts)
        pending: dict[Future, int] = {}
        for i, (p, c) in enumerate(zip(prompts, continuations)):
            if not c:
                out[i] = TokenScore(0.0, 0)
                continue
            if self.exact_tokens or not p:
                n_p = self.count_tokens(p) if p else 0
                check_score_pair(n_p, self.count_tokens(c), self.n_ctx, self.model_path)
            pending[pool.submit(self._score_one, p, c, stop)] = i
        try:
            while pending:
                if stop is not None and stop.is_set():
                    raise ScoreStopped()
                done, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        out[i] = fut.result()
                    except _Cancelled:
                        raise ScoreStopped() from None
        finally:
            for fut in pending:
                fut.cancel()
        return out  # type: ignore[return-value]

    def _score_one(self, prompt: str, continuation: str, stop) -> TokenScore:
        payload = self._post_completion(
            {
                "model": self.served_model,
                "prompt": prompt + continuation,
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": 1,
                "echo": True,
                "stream": False,
            },
            None,
            stop,
        )
        return _echo_score(payload, prompt, continuation, self._url(self._root + "/v1/completions"))

    # -- lifetime -----------------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sgtui-openai")
        return self._pool

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        vocab, self._vocab = self._vocab, None
        if vocab is not None:
            vocab.close()
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


def _echo_score(payload: dict, prompt: str, continuation: str, url: str) -> TokenScore:
    """The continuation's log-probability in an echo answer for prompt + continuation.

    Token strings, not text offsets, find it: servers count offsets differently (llama-cpp-
    python's leave out special tokens, such as a chat template's). The echo ends where the rest
    of the tokens spell the generated text (or part of it: llama-cpp-python leaves the generated
    token out for a model without a BOS token) and the text so far ends with the continuation;
    the continuation's tokens are those at the end of the echo that cover its characters."""
    choice = (payload.get("choices") or [{}])[0]
    lp = choice.get("logprobs") or {}
    strings = [t if isinstance(t, str) else "" for t in lp.get("tokens") or []]
    values = list(lp.get("token_logprobs") or [])
    text = choice.get("text") or ""
    whole = prompt + continuation
    generated = text[len(whole) :] if text.startswith(whole) else None
    ends = [0]
    for t in strings:
        ends.append(ends[-1] + len(t))
    joined = "".join(strings)
    # first where the rest is exactly the generated text, then where it is only its start
    for exact in (True, False):
        for e in range(len(strings), 0, -1):
            tail = joined[ends[e] :]
            if generated is None:
                fits = not exact and len(strings) - e <= 1
            else:
                fits = tail == generated if exact else generated.startswith(tail)
            if not fits or not joined[: ends[e]].endswith(continuation):
                continue
            b, covered = e, 0
            while b > 0 and covered < len(continuation):
                b -= 1
                covered += len(strings[b])
            picked = values[b:e]
            if len(picked) == e - b and all(v is not None for v in picked):
                return TokenScore(float(sum(picked)), e - b)
    raise SgtuiError(
        "the server's echo does not show the continuation's log-probabilities",
        path=url or None,
        fix="use --backend llama-cpp for the filters that score",
    )


def _cut_at_stop(text: str, stops: Sequence[str], reason: str | None) -> tuple[str, str]:
    """The text up to the first stop string (a server that returns it, or takes fewer stop
    strings than given, still gives the in-process backends' answer), and the finish reason."""
    cuts = [p for p in (text.find(s) for s in stops if s) if p >= 0]
    if cuts:
        return text[: min(cuts)], "stop"
    return text, "length" if reason == "length" else "stop"


def _message(payload: object) -> str:
    """The error message in a server's answer (OpenAI's error.message, FastAPI's detail,
    Ollama's error), shortened."""
    said = payload
    if isinstance(payload, dict):
        err = payload.get("error")
        said = (
            (err.get("message") if isinstance(err, dict) else err)
            or payload.get("detail")
            or payload.get("message")
            or payload
        )
    text = said if isinstance(said, str) else json.dumps(said)
    text = " ".join(text.split())
    return text[:300] + ("…" if len(text) > 300 else "")
