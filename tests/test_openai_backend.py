"""The server backend (backends/openai_server.py) against a real OpenAI-compatible server:
llama-cpp-python's own (`python -m llama_cpp.server`) on the bundled model and a free loopback
port, started by these tests. Stubs stand in only for what a real server will not do on demand
(answer 429 and 503, drop a connection before answering); they are marked where used."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from server_fixture import (
    free_port,
    llama_cpp_server,
    missing_server_packages,
    stub_server,
    with_bos,
)
from word_task import KEEP_EVERY_SAMPLE

from backends.base import ChatMessage, SamplingParams
from sgtui.errors import SgtuiError

MISSING = missing_server_packages()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING),
        reason="llama-cpp-python's server extra is not installed "
        f"(missing: {', '.join(MISSING)}); pip install fastapi uvicorn "
        "sse-starlette 'starlette-context<0.4' pydantic-settings pyyaml",
    ),
]

KEY = "sgtui-test-key-5c1e"
KEY_ENV = "SGTUI_TEST_SERVER_KEY"
INPUTS = ["hey can u call me back later", "the printer is broken again lol", "dont forget the milk"]


@pytest.fixture(scope="module")
def server(bundled_model, tmp_path_factory):
    """The bundled model behind llama-cpp-python's server, with an API key."""
    with llama_cpp_server(bundled_model, tmp_path_factory.mktemp("server"), api_key=KEY) as s:
        yield s


@pytest.fixture
def gen(server, bundled_model, monkeypatch):
    from backends.openai_server import OpenAIServerGenerator

    monkeypatch.setenv(KEY_ENV, KEY)
    g = OpenAIServerGenerator(server.url, api_key_env=KEY_ENV, template_from=bundled_model)
    yield g
    g.close()


def _prompts(g, inputs=INPUTS):
    from sgtui.paths import REPO_DATA
    from sgtui.prompts import meta_messages
    from sgtui.task import load_task

    task = load_task(REPO_DATA / "tasks" / "formal-rewrite.toml")
    return [g.render_chat(meta_messages(task, x)) for x in inputs]


def test_what_the_server_offers(gen, server, llama, monkeypatch):
    """Rendering, token counts and the context as the in-process backend has them."""
    from backends.openai_server import OpenAIServerGenerator

    assert gen.flavour == "llama-cpp-python" and gen.exact_tokens
    assert gen.model_path == f"{server.url}#{gen.served_model}"
    msgs = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi there")]
    assert gen.render_chat(msgs) == llama.render_chat(msgs)
    assert gen.eos_text() == llama.eos_text() == "<|im_end|>"
    for text in ["", "hello", "<|im_start|>user\nCafé, naïve — 東京<|im_end|>\n", *_prompts(gen)]:
        assert gen.count_tokens(text) == llama.count_tokens(text), text
    # llama-cpp-python's server does not say its context: its own default is assumed
    assert gen.n_ctx == 2048 and "assumed" in gen.n_ctx_source
    # without template_from nothing gives a chat template: the completion layout
    bare = OpenAIServerGenerator(
        f"{server.url}#{gen.served_model}", api_key_env=KEY_ENV, n_ctx=1024
    )
    try:
        assert bare.chat_template is None and bare.template_source.startswith("completion")
        assert bare.render_chat([ChatMessage("user", "Hi")]) == "Input: Hi\nOutput:\n"
        assert bare.n_ctx == 1024 and bare.n_ctx_source == "given"
    finally:
        bare.close()


def test_greedy_answers_are_the_in_process_ones(gen, llama):
    """The same rendered prompts, greedy: the server's answers are the in-process batched
    backend's, token for token."""
    prompts = _prompts(gen)
    assert prompts == _prompts(llama)
    sp = SamplingParams(temperature=0.0, max_tokens=40)
    t = time.perf_counter()
    served = {c.index: c for c in gen.generate(prompts, sp)}
    t_server = time.perf_counter() - t
    t = time.perf_counter()
    local = {c.index: c for c in llama.generate(prompts, sp)}
    t_local = time.perf_counter() - t
    print(f"\n3 prompts, greedy, 40 tokens: server {t_server:.2f} s, in-process {t_local:.2f} s")
    assert sorted(served) == sorted(local) == [0, 1, 2]
    for i in range(3):
        assert served[i].text == local[i].text
        assert served[i].n_tokens == local[i].n_tokens
        assert served[i].finish_reason == local[i].finish_reason
    assert any(c.text.strip() for c in served.values())


def test_n_answers_are_draws_with_their_own_seeds(gen):
    """llama-cpp-python's server ignores n: the missing answers come from requests of their own,
    draw j seeded base + j, as the in-process backends seed their draws."""
    prompt = _prompts(gen)[:1]
    sp = SamplingParams(temperature=0.9, top_k=40, max_tokens=24, n=3)
    draws = sorted(gen.generate(prompt, sp, seeds=[1234]), key=lambda c: c.sample)
    assert [(c.index, c.sample) for c in draws] == [(0, 0), (0, 1), (0, 2)]
    assert gen._n_ok is False  # the server gave one choice for n = 3
    for j, c in enumerate(draws):
        alone = list(
            gen.generate(
                prompt, SamplingParams(temperature=0.9, top_k=40, max_tokens=24), seeds=[1234 + j]
            )
        )
        assert [a.text for a in alone] == [c.text]
    assert len({c.text for c in draws}) > 1


def test_stop_strings_cut_as_in_process(gen, llama):
    prompt = _prompts(gen)[1:2]
    full = next(iter(gen.generate(prompt, SamplingParams(max_tokens=40)))).text
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    cut = next(iter(gen.generate(prompt, SamplingParams(max_tokens=40, stop=(stop, "\n\n\n")))))
    assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"
    local = next(iter(llama.generate(prompt, SamplingParams(max_tokens=40, stop=(stop,)))))
    assert local.text == cut.text


def test_refused_connection_is_a_clear_error():
    from backends.openai_server import OpenAIServerGenerator

    port = free_port()  # nothing listens there
    with pytest.raises(SgtuiError) as e:
        OpenAIServerGenerator(f"http://127.0.0.1:{port}/v1", served_model="m")
    msg = str(e.value)
    assert "connection refused" in msg and f"127.0.0.1:{port}" in msg
    assert "--base-url" in e.value.fix


def test_api_key_comes_from_the_named_variable(server, monkeypatch):
    from backends.openai_server import OpenAIServerGenerator

    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(SgtuiError) as e:
        OpenAIServerGenerator(server.url, api_key_env=KEY_ENV)
    assert KEY_ENV in str(e.value) and "not set" in str(e.value)
    with pytest.raises(SgtuiError) as e:  # no key at all: the server refuses
        OpenAIServerGenerator(server.url)
    assert "HTTP 401" in str(e.value) and "--api-key-env" in e.value.fix
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    with pytest.raises(SgtuiError) as e:
        OpenAIServerGenerator(server.url, api_key_env=KEY_ENV)
    assert "HTTP 401" in str(e.value) and KEY_ENV in e.value.fix
    assert "wrong-key" not in str(e.value)


def _stub_routes(completions):
    """A stub OpenAI server: one model, no extras, /v1/completions answered by `completions`."""

    def handle(method, path, body):
        if path == "/v1/models":
            return 200, {}, {"object": "list", "data": [{"id": "stub", "object": "model"}]}
        if path == "/v1/completions":
            return completions(body)
        return 404, {}, {"detail": "Not Found"}

    return handle


def test_429_and_503_are_retried_after_retry_after():
    """A stub, because a real server does not answer 429 on demand: the backend waits as long
    as Retry-After says, then tries again."""
    from backends.openai_server import OpenAIServerGenerator

    answers = [
        (429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}),
        (503, {"Retry-After": "0"}, {"error": {"message": "loading model"}}),
        (
            200,
            {},
            {
                "choices": [{"text": "Fine.", "index": 0, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 2},
            },
        ),
    ]
    with stub_server(_stub_routes(lambda body: answers.pop(0))) as (url, seen):
        g = OpenAIServerGenerator(url)
        assert g.served_model == "stub" and not g.exact_tokens
        t = time.monotonic()
        out = list(g.generate(["Say fine."], SamplingParams(max_tokens=8)))
        waited = time.monotonic() - t
        g.close()
    assert [c.text for c in out] == ["Fine."] and out[0].n_tokens == 2
    posts = [s for s in seen if s[1] == "/v1/completions"]
    assert len(posts) == 3 and waited >= 1.0
    body = posts[-1][3]
    assert body["prompt"] == "Say fine." and body["max_tokens"] == 8 and body["n"] == 1
    assert body["temperature"] == 0.0 and body["top_k"] == 1 and body["repeat_penalty"] == 1.0


def test_a_server_that_stays_busy_is_a_clear_error():
    """A stub (see above) that answers 429 to every try."""
    from backends.openai_server import MAX_TRIES, OpenAIServerGenerator

    busy = (429, {"Retry-After": "0"}, {"error": {"message": "rate limited"}})
    with stub_server(_stub_routes(lambda body: busy)) as (url, seen):
        g = OpenAIServerGenerator(url)
        with pytest.raises(SgtuiError) as e:
            list(g.generate(["x"], SamplingParams(max_tokens=4)))
        g.close()
    assert "still busy" in str(e.value) and "HTTP 429" in str(e.value)
    assert "--concurrency" in e.value.fix
    assert len([s for s in seen if s[1] == "/v1/completions"]) == MAX_TRIES


def test_ollama_gets_the_prompt_raw():
    """A stub with Ollama's routes (no Ollama here; this checks only what is sent, not that
    Ollama works): Ollama's /v1/completions would wrap the rendered prompt in the model's
    TEMPLATE, so the backend uses /api/generate with raw, one request per draw (Ollama has no
    n), and the context the model is served with (num_ctx from /api/show)."""
    from backends.openai_server import OpenAIServerGenerator

    def handle(method, path, body):
        if path == "/api/version":
            return 200, {}, {"version": "0.12.0"}
        if path == "/v1/models":
            return (
                200,
                {},
                {
                    "object": "list",
                    "data": [{"id": "smol:latest", "object": "model", "owned_by": "library"}],
                },
            )
        if path == "/api/show":
            return (
                200,
                {},
                {
                    "parameters": 'num_ctx 8192\nstop "<|im_end|>"',
                    "template": "{{ .Prompt }}",
                    "model_info": {},
                },
            )
        if path == "/api/generate":
            return (
                200,
                {},
                {
                    "response": "Bonjour.\n\nInput: and again",
                    "done": True,
                    "done_reason": "stop",
                    "eval_count": 7,
                },
            )
        return 404, {}, {"error": "not found"}

    with stub_server(handle) as (url, seen):
        g = OpenAIServerGenerator(url, served_model="smol")
        out = sorted(
            g.generate(
                ["Input: hi\nOutput:\n"],
                SamplingParams(temperature=0.5, max_tokens=9, n=2),
                seeds=[40],
            ),
            key=lambda c: c.sample,
        )
        assert g.flavour == "ollama" and g.n_ctx == 8192 and "api/show" in g.n_ctx_source
        assert g.supports_score is False and "Ollama" in g.score_unsupported
        g.close()
    # no chat template: the completion layout's next turn is a stop, as in-process
    assert [(c.sample, c.text, c.n_tokens) for c in out] == [
        (0, "Bonjour.\n", 7),
        (1, "Bonjour.\n", 7),
    ]
    calls = [s for s in seen if s[1] == "/api/generate"]
    assert not [s for s in seen if s[1] == "/v1/completions"] and len(calls) == 2
    for call in calls:
        body = call[3]
        assert body["raw"] is True and body["stream"] is False and body["model"] == "smol"
        assert body["prompt"] == "Input: hi\nOutput:\n"
        opts = body["options"]
        assert opts["num_ctx"] == 8192 and opts["num_predict"] == 9 and opts["top_k"] == 40
        assert "\nInput:" in opts["stop"]
    assert sorted(c[3]["options"]["seed"] for c in calls) == [40, 41]


def test_a_dropped_connection_is_a_clear_error():
    """A stub socket that accepts and closes without answering (a server that dies mid-request;
    the real server killed mid-run is in the resume test below)."""
    from backends.openai_server import OpenAIServerGenerator

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    done = threading.Event()

    def drop():
        lsock.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.close()

    threading.Thread(target=drop, daemon=True).start()
    try:
        with pytest.raises(SgtuiError) as e:
            OpenAIServerGenerator(f"http://127.0.0.1:{lsock.getsockname()[1]}/v1")
    finally:
        done.set()
        lsock.close()
    assert "closed the connection" in str(e.value) and "--resume" in e.value.fix


def test_score_where_the_server_gives_right_logprobs(gen, bundled_model, tmp_path):
    """llama-cpp-python's server shifts a prompt's log-probabilities by one token for a model
    without a BOS token (the bundled one): the backend finds that out and does not score. The
    same model with add_bos_token set gets them right, and score() then gives the in-process
    backend's numbers."""
    from backends.llama_cpp import LlamaCppGenerator
    from backends.openai_server import OpenAIServerGenerator

    assert gen.supports_score is False and "shifts" in gen.score_unsupported
    with pytest.raises(SgtuiError, match="cannot score"):
        gen.score(["a"], ["b"])

    bos_model = with_bos(bundled_model, tmp_path)
    prompt = "<|im_start|>user\nRewrite formally: gonna be late<|im_end|>\n<|im_start|>assistant\n"
    pairs = (
        [prompt, prompt, "The capital of France is"],
        ["I will be late.", "The weather is nice.", " Paris"],
    )
    local = LlamaCppGenerator(str(bos_model))
    try:
        expected = local.score(*pairs)
    finally:
        local.close()
    with llama_cpp_server(bos_model, tmp_path) as s:
        g = OpenAIServerGenerator(s.url, template_from=bos_model)
        try:
            assert g.supports_score, g.score_unsupported
            got = g.score(*pairs)
            assert g.score([prompt], [""])[0].n_tokens == 0
        finally:
            g.close()
    for a, b in zip(got, expected):
        assert a.n_tokens == b.n_tokens
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)


def _small_run(store, task_file="formal-rewrite.toml", **over):
    from sgtui.config import RunParams
    from sgtui.paths import REPO_DATA
    from sgtui.synthesis import create_run
    from sgtui.task import load_task

    task = load_task(REPO_DATA / "tasks" / task_file)
    params = RunParams.defaults_for(task.type, "small").override(
        rounds=1, per_round=2, n=3, gen_max_tokens=32, ann_max_tokens=24, **over
    )
    return task, params, lambda model: create_run(store, task, params, model, "openai")


def test_a_synthesis_run_against_the_server(gen, tmp_path):
    """formal-rewrite, one round of two inputs, three answers each, with the input-dependence
    filter asked for: this server cannot score, so the filter is off and the run finishes."""
    from sgtui.events import SampleEvent
    from sgtui.pipeline import SynthesisRun
    from sgtui.store import Store

    store = Store(tmp_path / "s.db")
    _, _, make = _small_run(store, input_dependence=True)
    rid = make(gen.model_path)
    events = []
    summary = SynthesisRun(store, rid, gen, events.append).run()
    rows = store.samples(rid)
    assert sorted((r["round"], r["slot"]) for r in rows) == [(0, 0), (0, 1)]
    assert all(r["raw_output"] for r in rows)
    for r in rows:
        if r["stage"] == "annotated":
            assert len(r["candidates"]) == 3 and sum(r["votes"].values()) <= 3
        else:
            assert r["status"] == "filtered" and r["filter"]
    run = store.run(rid)
    assert run["status"] == "done" and run["backend"] == "openai"
    assert run["model"] == gen.model_path and summary["candidates"] == 2
    assert any(isinstance(e, SampleEvent) for e in events)


def test_a_server_killed_mid_run_fails_it_and_a_new_one_finishes_it(bundled_model, tmp_path):
    """The real server killed as soon as the first input is stored: the run fails with the
    server named, keeps what it stored, and finishes against a server started again. The input
    filters are off so that both inputs reach annotation: there is work left after the kill."""
    from backends.openai_server import OpenAIServerGenerator
    from sgtui.events import SampleEvent
    from sgtui.pipeline import SynthesisRun
    from sgtui.store import Store

    store = Store(tmp_path / "k.db")
    _, _, make = _small_run(
        store, input_length_filter=False, small_filters=False, noise_filter=False
    )
    with llama_cpp_server(bundled_model, tmp_path) as first:
        g = OpenAIServerGenerator(first.url, template_from=bundled_model)
        rid = make(g.model_path)

        def kill_on_first_sample(event):
            if isinstance(event, SampleEvent):
                first.kill()

        try:
            with pytest.raises(SgtuiError) as e:
                SynthesisRun(store, rid, g, kill_on_first_sample).run()
        finally:
            g.close()
    print(f"\nthe error: {e.value}")
    assert f"127.0.0.1:{first.port}" in str(e.value)
    assert "closed the connection" in str(e.value) or "connection refused" in str(e.value)
    run = store.run(rid)
    assert run["status"] == "failed" and "SgtuiError" in run["error"]
    stored = {(r["round"], r["slot"]) for r in store.samples(rid)}
    assert stored  # the sample stored before the kill is kept

    with llama_cpp_server(bundled_model, tmp_path) as second:
        g = OpenAIServerGenerator(second.url, template_from=bundled_model)
        try:
            SynthesisRun(store, rid, g).run()
        finally:
            g.close()
    rows = store.samples(rid)
    assert sorted((r["round"], r["slot"]) for r in rows) == [(0, 0), (0, 1)]
    assert store.run(rid)["status"] == "done"


@pytest.mark.slow
def test_sgtui_generate_against_the_server_survives_a_kill_9(server, tmp_path, monkeypatch):
    """The CLI as a person runs it: `sgtui generate --backend openai --base-url URL`, the sgtui
    process killed with SIGKILL once a sample is stored, then `--resume` with the URL again:
    every input is annotated once, and nothing stored before the kill is lost or doubled."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    db = tmp_path / "s.db"
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(root), "SGTUI_HOME": str(tmp_path)}
    common = ["--db", str(db), "--base-url", server.url, "--api-key-env", KEY_ENV]
    inputs = 8  # enough left after the first answer that the kill lands before the run ends
    cmd = [
        sys.executable,
        "-m",
        "sgtui",
        "generate",
        str(root / "data" / "tasks" / "formal-rewrite.toml"),
        "--backend",
        "openai",
        "--rounds",
        "1",
        "--per-round",
        str(inputs),
        "--n",
        "2",
        *common,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def annotated() -> list[tuple]:
        try:
            with sqlite3.connect(db) as c:
                return c.execute(
                    "select slot, output from samples where stage = 'annotated' order by slot"
                ).fetchall()
        except sqlite3.Error:
            return []

    deadline = time.monotonic() + 600
    while not annotated() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    before = annotated()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(
        [sys.executable, "-m", "sgtui", "generate", "--resume", "1", *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    with sqlite3.connect(db) as c:
        model, backend = c.execute("select model, backend from runs where id = 1").fetchone()
        slots = [
            r[0]
            for r in c.execute(
                "select slot from samples where stage = 'input' or stage = 'annotated'"
            )
        ]
    assert backend == "openai" and model.startswith(server.url)
    assert sorted(slots) == sorted(set(slots)) and len(slots) == inputs  # each input once
    after = dict(annotated())
    assert all(after[slot] == out for slot, out in before)  # what was stored stays as it was


def _sgtui(args, env, timeout=1200):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "sgtui", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_sgtui_run_against_the_server_trains_on_local_weights(server, bundled_model, tmp_path):
    """`sgtui run --backend openai`: without local weights it refuses before any run exists,
    naming the flag; with --model (the local copy of the served model) it generates through
    the server, trains on that copy, and scores base and fine-tune with it. `sgtui train` of
    the run later finds the weights the run recorded."""
    import os
    import sqlite3
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    db = tmp_path / "r.db"
    env = {**os.environ, KEY_ENV: KEY, "PYTHONPATH": str(root), "SGTUI_HOME": str(tmp_path)}
    run = [
        "run",
        str(root / "data" / "tasks" / "formal-rewrite.toml"),
        "--db",
        str(db),
        "--backend",
        "openai",
        "--base-url",
        server.url,
        "--api-key-env",
        KEY_ENV,
    ]
    small = ["--rounds", "1", "--per-round", "4", "--n", "2", "--epochs", "1", *KEEP_EVERY_SAMPLE]
    refused = _sgtui([*run, *small, "--eval-limit", "2", "--no-val"], env)
    assert refused.returncode == 2, refused.stderr
    assert "training needs the served model's weights" in refused.stderr, refused.stderr
    assert "--train-model" in refused.stderr and "Traceback" not in refused.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*) from runs").fetchone()[0] == 0

    out = _sgtui(
        [*run, "--model", bundled_model, *small, "--eval-limit", "3", "--no-val", "--quiet"], env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith(("base ", "self-guide"))]
    assert len(rows) == 2, out.stdout
    with sqlite3.connect(db) as c:
        (model, backend) = c.execute("select model, backend from runs where id = 1").fetchone()
        (weights,) = c.execute(
            "select path from artifacts where run_id = 1 and kind = 'train-model'"
        ).fetchone()
        labels = dict(c.execute("select system, model from evals where run_id = 1"))
    assert backend == "openai" and model.startswith(server.url)
    assert weights == bundled_model
    assert labels["base"] == bundled_model and labels["self-guide"].startswith(bundled_model)
    info = Path(tmp_path / "r.db.runs" / "run-1" / "adapter" / "adapter_config.json")
    assert info.is_file()

    again = _sgtui(["train", "1", "--db", str(db), "--epochs", "1", "--quiet"], env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "trained" in again.stdout
