"""The one thread that owns the loaded model.

llama.cpp contexts are not thread-safe, so a single long-lived thread loads the generator once
and serves every generation request in turn. It talks to the UI only by posting messages, and
the pipeline's events are buffered and posted at most every `interval` seconds, so the UI is
never flooded and never waited on.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from textual.message import Message

import backends
from backends.base import cpu_threads

from ..config import RunParams
from ..errors import SgtuiError
from ..events import NoticeEvent, ProgressEvent, SampleEvent
from ..models import resolve_model
from ..pipeline import Stopped, SynthesisRun
from ..store import Store
from ..synthesis import create_run
from .messages import GenerationNotice, GenerationProgress, GenerationState, SamplesArrived

Post = Callable[[Message], object]
GeneratorFactory = Callable[[str, str], object]


def load_generator(backend: str, model: str) -> object:

    options: dict = {}
    if backend.startswith("llama-cpp"):
        # leave one core to the UI thread: llama.cpp's worker threads spin, and on a small or
        # busy machine a thread per core starves the UI and itself (measured on 2 cores under
        # load: 2.8 tok/s with 2 threads, 10.8 tok/s with 1)
        options["n_threads"] = max(1, cpu_threads() - 1)
    return backends.load_generator(backend, model, **options)


@dataclass
class _Release:
    done: threading.Event


@dataclass
class _Reload:
    pass


@dataclass
class GenerateRequest:
    """Continue run `run_id`, or create a new run from the task and parameters."""

    run_id: int | None = None
    task_id: int | None = None
    params: RunParams | None = None
    model: str = ""
    backend: str = ""


class EventBatcher:
    """Collects pipeline events from the model thread and posts them in batches from its own
    small thread, so a burst of samples becomes one message and a slow one is not held back."""

    def __init__(self, run_id: int, post: Post, interval: float = 0.08) -> None:
        self.run_id = run_id
        self.post = post
        self.interval = interval
        self._lock = threading.Lock()
        self._samples: dict[int, dict] = {}
        self._stages: dict[str, ProgressEvent] = {}
        self._progress_new = False
        self._notices: list[NoticeEvent] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sgtui-batcher", daemon=True)

    def start(self) -> "EventBatcher":
        self._thread.start()
        return self

    def add(self, event: object) -> None:
        with self._lock:
            if isinstance(event, SampleEvent):
                self._samples[event.sample["id"]] = event.sample
            elif isinstance(event, ProgressEvent):
                self._stages[event.stage] = event
                self._progress_new = True
            elif isinstance(event, NoticeEvent):
                self._notices.append(event)

    def _loop(self) -> None:
        while not self._closed.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows = list(self._samples.values())
            stages = dict(self._stages) if self._progress_new else None
            notices = self._notices
            self._samples, self._progress_new, self._notices = {}, False, []
        if rows:
            self.post(SamplesArrived(self.run_id, rows))
        if stages is not None:
            self.post(GenerationProgress(self.run_id, stages))
        for n in notices:
            self.post(GenerationNotice(self.run_id, n.text, n.level))

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()


class ModelOwner:
    """Serves generation requests in the thread that calls serve(); that thread alone ever
    loads or calls the generator. pause/resume/stop may be called from any thread."""

    def __init__(
        self,
        db_path: str | Path,
        post: Post,
        factory: GeneratorFactory | None = None,
        interval: float = 0.08,
    ) -> None:
        self.db_path = str(db_path)
        self.post = post
        self.factory = factory or load_generator
        self.interval = interval
        self.requests: queue.Queue[GenerateRequest | None] = queue.Queue()
        self.stop = threading.Event()
        self.running = threading.Event()  # cleared while paused
        self.running.set()
        self.loaded: tuple[str, str] | None = None
        self.released: tuple[str, str] | None = None  # closed for training, to load again

    # -- called from the UI thread ------------------------------------------------------------
    def submit(self, request: GenerateRequest) -> None:
        self.requests.put(request)

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def stop_run(self) -> None:
        self.stop.set()
        self.running.set()

    def shutdown(self) -> None:
        self.stop_run()
        self.requests.put(None)

    def release(self) -> threading.Event:
        """Close the loaded model once the current request is done, so training can have the
        memory (a GPU above all: the two never share the card). The event is set when it is
        closed; reload() loads it again."""
        done = threading.Event()
        self.requests.put(_Release(done))
        return done

    def reload(self) -> None:
        self.requests.put(_Reload())

    # -- the owner thread ---------------------------------------------------------------------
    def serve(self) -> None:
        _lower_priority()
        store = Store(self.db_path)
        generator = None
        try:
            while True:
                request = self.requests.get()
                if request is None:
                    return
                if isinstance(request, (_Release, _Reload)):
                    generator = self._housekeeping(request, generator)
                    continue
                self.stop.clear()
                self.running.set()
                try:
                    generator = self._serve_one(store, request, generator)
                except Exception as e:  # keep serving: one bad request must not end the thread
                    self.post(GenerationState(request.run_id, "failed", f"{type(e).__name__}: {e}"))
        finally:
            if generator is not None:
                generator.close()
            store.close()

    def _housekeeping(self, request: "_Release | _Reload", generator):
        if isinstance(request, _Release):
            if generator is not None:
                generator.close()
                self.released, self.loaded = self.loaded, None
            request.done.set()
            return None
        if generator is None and self.released is not None:
            wanted, self.released = self.released, None
            try:
                generator = self.factory(wanted[1], wanted[0])
                self.loaded = wanted
            except Exception:  # the next generation request loads it, and reports why not
                return None
        return generator

    def _serve_one(self, store: Store, request: GenerateRequest, generator):
        run_id = request.run_id
        try:
            if run_id is None:
                task = store.get_task(request.task_id)
                run_id = create_run(
                    store, task, request.params, _by_name(request.model), request.backend
                )
                self.post(GenerationState(run_id, "created"))
            row = store.run(run_id)
            wanted = (row["model"], row["backend"])
            if generator is None or self.loaded != wanted:
                if generator is not None:
                    generator.close()
                    generator, self.loaded = None, None
                self.post(GenerationState(run_id, "loading", Path(wanted[0]).name))
                generator = self.factory(wanted[1], wanted[0])
                self.loaded = wanted
        except SgtuiError as e:
            self.post(GenerationState(run_id, "failed", _describe(e)))
            return generator
        except Exception as e:  # a broken model file, an unexpected backend error
            self.post(GenerationState(run_id, "failed", f"{type(e).__name__}: {e}"))
            return generator
        if self.stop.is_set():
            self.post(GenerationState(run_id, "stopped"))
            return generator
        batcher = EventBatcher(run_id, self.post, self.interval).start()
        self.post(GenerationState(run_id, "running"))
        state, detail = "done", ""
        try:
            SynthesisRun(store, run_id, generator, self._emitter(run_id, batcher), self.stop).run()
        except Stopped:
            state = "stopped"
        except SgtuiError as e:
            state, detail = "failed", _describe(e)
        except Exception as e:
            state, detail = "failed", f"{type(e).__name__}: {e}"
        finally:
            batcher.close()
        self.post(GenerationState(run_id, state, detail))
        return generator

    def _emitter(self, run_id: int, batcher: EventBatcher) -> Callable[[object], None]:
        def emit(event: object) -> None:
            batcher.add(event)
            if self.running.is_set() or self.stop.is_set():
                return
            # paused: hold the pipeline between two samples, in this thread, until resumed
            batcher.flush()
            self.post(GenerationState(run_id, "paused"))
            while not self.running.wait(0.1):
                pass
            if not self.stop.is_set():
                self.post(GenerationState(run_id, "running"))

        return emit


def _by_name(model: str) -> str:
    """The file or folder a name stands for (ollama:NAME, ORG/NAME: sgtui/models.py), so the
    run records what training and export can load; a name that resolves to nothing is kept,
    and loading it says what is wrong."""
    try:
        return resolve_model(model)
    except SgtuiError:
        return model


def _lower_priority() -> None:
    """Let this thread yield to the UI thread when they compete for a core (Linux: a thread's
    nice value is its own). Generation barely slows, since the UI is idle most of the time."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
    except (AttributeError, OSError):
        pass


def _describe(e: SgtuiError) -> str:
    return f"{e.message} (fix: {e.fix})" if e.fix else e.message
