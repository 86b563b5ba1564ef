"""A fake generator for UI tests: scripted completions, an optional delay, recorded calls.

It implements the Generator protocol of backends/base.py so the real pipeline runs on it. It
stands in for a model only where a test is about the UI's flow and layout; no test that claims
the real model works uses it.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Iterator, Sequence

from backends.base import ChatMessage, Completion, SamplingParams

CHAT = "<|fake-chat|>"

# Inputs that pass the sentiment task's filters (length window, noise terms, duplicates).
REVIEW_INPUTS = [
    "The blender is loud but it crushes ice in a few seconds.",
    "Delivery was late and the box arrived completely crushed.",
    "This lamp gives a warm light and was easy to assemble.",
    "The charger stopped working after only three short days.",
    "Great little speaker, the sound is clear and quite rich.",
    "The zipper broke on the first trip, very disappointing.",
    "Soft towels that dry quickly and still look new to me.",
    "The app keeps crashing and the refund took six weeks.",
    "Sturdy chair, comfortable for long days at the desk.",
    "Cheap plastic lid cracked the moment I dropped it once.",
    "My kids love this puzzle and play with it every night.",
    "Battery drains overnight even when the phone is idle.",
]
NEGATIVE_WORDS = ("late", "stopped", "broke", "crash", "crack", "drain", "loud")


def sentiment_answer(prompt: str) -> str:
    """Answer like a sentiment model would: by the words of the last review in the prompt."""
    tail = prompt[-300:].lower()
    return "negative" if any(w in tail for w in NEGATIVE_WORDS) else "positive"


class FakeGenerator:
    """Yields scripted completions. `inputs` answer raw (input-generation) prompts in turn;
    `answer` maps a chat (annotation) prompt to its answer. Records every call and the threads
    it was used from."""

    name = "fake"
    supports_batch = False
    supports_lora = False
    n_ctx = 4096

    def __init__(
        self,
        inputs: Sequence[str] = REVIEW_INPUTS,
        answer: Callable[[str], str] = sentiment_answer,
        delay: float = 0.0,
        model_path: str = "fake.gguf",
        fail_after: int | None = None,
    ) -> None:
        self.model_path = model_path
        self._inputs = itertools.cycle(list(inputs))
        self._answer = answer
        self.delay = delay
        self.fail_after = fail_after
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.completions = 0
        self.threads: set[int] = set()
        self.closed = False
        self._lock = threading.Lock()

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> Iterator[Completion]:
        self.threads.add(threading.get_ident())
        self.calls.append((list(prompts), params))
        for i, prompt in enumerate(prompts):
            for j in range(params.n):
                if self.delay:
                    time.sleep(self.delay)
                if self.fail_after is not None and self.completions >= self.fail_after:
                    raise RuntimeError("scripted failure")
                with self._lock:
                    self.completions += 1
                    text = self._answer(prompt) if prompt.startswith(CHAT) else next(self._inputs)
                yield Completion(index=i, sample=j, text=text, n_tokens=len(text.split()))

    def render_chat(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        self.threads.add(threading.get_ident())
        return CHAT + "\n".join(f"{m.role}: {m.content}" for m in messages) + "\nassistant:"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def eos_text(self) -> str:
        return "</s>"

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """A generator factory for the app: records which thread loaded which model."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.loads: list[tuple[str, str, int]] = []
        self.generators: list[FakeGenerator] = []

    def __call__(self, backend: str, model: str) -> FakeGenerator:
        self.loads.append((backend, model, threading.get_ident()))
        gen = FakeGenerator(model_path=model, **self.kwargs)
        self.generators.append(gen)
        return gen


# -- helpers for the Pilot tests ----------------------------------------------------------------
async def wait_until(
    pilot, predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Let the app run until predicate() holds (instead of fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def settle(app, pilot) -> None:
    """Wait for every worker except the long-lived model owner."""
    await pilot.pause()
    workers = [w for w in app.workers if w.group != "model"]
    if workers:  # an empty list would mean "all", the model owner included
        await app.workers.wait_for_complete(workers)
    await pilot.pause()


def screen_text(app) -> str:
    """The current screen as plain text, line by line, as a terminal would show it."""
    return "\n".join(strip.text.rstrip() for strip in app.screen._compositor.render_strips())


def make_app(db, factory: "FakeFactory | None" = None, **kwargs):
    from sgtui.tui.app import SgtuiApp

    return SgtuiApp(
        db=db,
        model="fake.gguf",
        backend="llama-cpp",
        generator_factory=factory or FakeFactory(),
        cursor_blink=False,
        **kwargs,
    )


def make_reviewed_run(db, n_kept: int = 3) -> int:
    """A finished run of the sentiment task written straight into the store: kept answers with
    votes, inputs dropped by each kind of filter, and one input still waiting for its answer."""
    from sgtui.config import RunParams
    from sgtui.paths import REPO_DATA
    from sgtui.store import Store
    from sgtui.synthesis import create_run
    from sgtui.task import load_task

    store = Store(db)
    task = load_task(REPO_DATA / "tasks" / "sentiment.toml")
    params = RunParams.defaults_for(task.type).override(rounds=1, per_round=n_kept + 4, n=3)
    rid = create_run(store, task, params, "fake.gguf", "llama-cpp")
    slot = 0
    for i in range(n_kept):
        label = "positive" if i % 2 == 0 else "negative"
        store.add_sample(
            rid,
            round=0,
            slot=slot,
            stage="annotated",
            input=REVIEW_INPUTS[i],
            raw_output=REVIEW_INPUTS[i],
            pseudo_label=label,
            candidates=[label, label, "neutral"],
            votes={label: 2, "neutral": 1},
            output=label,
            label=label,
            status="kept",
        )
        slot += 1
    for filt, reason, text in (
        ("noise", "contains 'Of course!'", "Of course! Here is a review."),
        ("noise", "contains 'input'", "The input was a toaster review."),
        ("length", "12 chars, shorter than 40", "Bad product."),
    ):
        store.add_sample(
            rid,
            round=0,
            slot=slot,
            stage="input",
            input=text,
            raw_output=text,
            pseudo_label="positive",
            status="filtered",
            filter=filt,
            reason=reason,
        )
        slot += 1
    store.add_sample(
        rid,
        round=0,
        slot=slot,
        stage="input",
        input=REVIEW_INPUTS[-1],
        raw_output=REVIEW_INPUTS[-1],
        pseudo_label="negative",
        status="kept",
    )
    store.update_run(rid, status="done", stage="done")
    store.close()
    return rid


FAKE_TRAINER = r"""
import json, sys, time
steps, delay = int(sys.argv[1]), float(sys.argv[2])
start = {"event": "start", "backend": "fake", "device": "cpu", "precision": "fp32"}
print(json.dumps(start), flush=True)
for step in range(1, steps + 1):
    time.sleep(delay)
    print(json.dumps({"event": "progress", "step": step, "epoch": step / steps,
                      "loss": 2.0 / step, "tokens_per_s": 100.0, "eta_s": (steps - step) * delay,
                      "total_steps": steps, "epoch_end": step == steps}), flush=True)
print(json.dumps({"event": "done", "adapter": "fake-adapter", "steps": steps}), flush=True)
"""


def fake_training_job(steps: int = 5, delay: float = 0.05):
    """A TrainingJob whose child process is a small script printing the worker's JSON lines.
    Only the child's command is replaced: TrainingJob.start (the early refusal, the run folder
    and its train.log, the lifeline pipe) and the Train page's process handling (progress,
    cancel = terminate) run for real; the training does not."""
    import sys

    from sgtui.training import TrainingJob

    class FakeTrainingJob(TrainingJob):
        def child_command(self, db, run_id, params, **kwargs) -> list[str]:
            self.started_with = (str(db), run_id, params)
            self.worker_argv = super().child_command(db, run_id, params, **kwargs)  # not run
            return [sys.executable, "-c", FAKE_TRAINER, str(steps), str(delay)]

    jobs: list = []

    def factory():
        jobs.append(FakeTrainingJob())
        return jobs[-1]

    factory.jobs = jobs  # type: ignore[attr-defined]
    return factory


def add_evaluations(db, run_id: int) -> None:
    """Base, fine-tuned (self-guide) and trivial results for a run, four items each; the
    fine-tuned model changes two answers, one for the better and one for the worse."""
    from sgtui.store import Store

    store = Store(db)
    gold = ["positive", "negative", "positive", "negative"]
    base = ["positive", "positive", "negative", "negative"]
    tuned = ["positive", "negative", "negative", "positive"]

    def items(preds):
        return [
            {"input": f"review {i}", "gold": g, "prediction": p, "score": 100.0 * (g == p)}
            for i, (g, p) in enumerate(zip(gold, preds))
        ]

    for system, preds in (("base", base), ("self-guide", tuned), ("trivial", ["positive"] * 4)):
        its = items(preds)
        score = sum(i["score"] for i in its) / len(its)
        store.add_eval(
            run_id, system, "test", "exact_match", score, {"exact_match": score}, "fake.gguf", its
        )
    store.close()
