"""The SELF-GUIDE synthesis run: input generation -> input filters -> annotation and vote ->
output filters -> label validation and class balancing.

Every candidate is written to SQLite as soon as it is filtered, every annotation as soon as its
vote is taken. A run stopped anywhere resumes from what the database holds: finished rounds are
skipped, a half-finished round generates only its missing slots, and only unannotated inputs
are annotated.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable

from backends.base import Generator, SamplingParams, ScoreStopped
from backends.llama_cpp import log_llama_to

from . import input_dependence as dep
from .annotation import OutputAnnotator, balance
from .channel import channel_labels
from .config import RunParams
from .errors import SgtuiError
from .evaluation import answer_budget
from .events import NoticeEvent, ProgressEvent, SampleEvent
from .filters import rouge_l
from .input_generation import InputGenerator, slot_rng
from .prompts import meta_messages
from .store import Store, task_of
from .task import Task
from .training import run_dir

Emit = Callable[[object], None]


def annotation_warnings(
    task: Task, kept: list[dict], share: float = 0.9, copy_share: float = 0.5
) -> list[str]:
    """Annotation sanity: labels that carry no signal, or answers that copy the input."""
    out: list[str] = []
    if len(kept) < 5:
        if not kept:
            out.append("no sample survived annotation; there is nothing to train on")
        return out
    if task.is_classification:
        counts: dict[str, int] = {}
        for s in kept:
            counts[s["label"]] = counts.get(s["label"], 0) + 1
        top = max(counts, key=counts.get)
        if counts[top] / len(kept) >= share:
            out.append(
                f"the annotator gave {top!r} to {counts[top]} of {len(kept)} inputs: its "
                "labels carry little signal, and fine-tuning on them teaches one answer"
            )
    else:
        copies = sum(
            1
            for s in kept
            if s["output"].strip() == s["input"].strip() or rouge_l(s["output"], s["input"]) >= 0.9
        )
        if copies / len(kept) >= copy_share:
            out.append(
                f"the annotator copied its input for {copies} of {len(kept)} samples: "
                "fine-tuning on them teaches copying"
            )
    return out


class Stopped(Exception):
    """The person asked the run to stop; it can be resumed."""


@contextmanager
def scoring_stops():
    """A backend's score() that gave up on the stop event stops the run like generation does."""
    try:
        yield
    except ScoreStopped:
        raise Stopped() from None


def annotation_prompt(gen: Generator, task: Task, text: str) -> str:
    return gen.render_chat(meta_messages(task, text))


def annotation_sampling(gen: Generator, task: Task, p: RunParams) -> SamplingParams:
    """How the answers of one input are drawn: n at the annotation temperature, at most the
    budget evaluation gives when seed_answer_budget is on."""
    max_tokens = p.ann_max_tokens
    if p.seed_answer_budget:
        max_tokens = min(max_tokens, answer_budget(gen, task.seed_outputs))
    return SamplingParams(
        temperature=p.ann_temperature,
        top_k=p.ann_top_k,
        top_p=1.0,
        max_tokens=max_tokens,
        n=p.n,
        best_of=p.best_of or None,
        seed=p.seed,
    )


def annotation_seed(p: RunParams, sample: dict) -> int:
    """The sampler seed of one sample's answers. It is the sample's, not its position's in a
    call: a resumed run annotates the samples left with the seeds an uninterrupted run would
    have used."""
    return slot_rng(p.seed, "annotate", sample["round"], sample["slot"]).randrange(2**31)


class SynthesisRun:
    def __init__(
        self,
        store: Store,
        run_id: int,
        generator: Generator,
        emit: Emit | None = None,
        stop: threading.Event | None = None,
    ):
        self.store = store
        self.run_id = run_id
        self.gen = generator
        self.emit = emit or (lambda e: None)
        self.stop = stop or threading.Event()
        row = store.run(run_id)
        self.task = task_of(row)
        self.params = RunParams.from_dict(row["params"])
        log_llama_to(run_dir(store, run_id) / "llama.log")  # not the terminal
        self.tokens = 0
        self.t0 = time.monotonic()

    # -- helpers ----------------------------------------------------------------------------
    def _tps(self) -> float:
        dt = time.monotonic() - self.t0
        return self.tokens / dt if dt > 0 else 0.0

    def _generate(self, prompts: list[str], sp: SamplingParams, seeds: list[int]):
        """The generator's stream. A generator that takes `stop` (the batched llama.cpp one)
        looks at the stop event between decode steps and ends the stream when it is set, so a
        stop from the TUI does not wait for a whole vote of n answers."""
        if getattr(self.gen, "supports_stop", False):
            return self.gen.generate(prompts, sp, seeds=seeds, stop=self.stop)
        return self.gen.generate(prompts, sp, seeds=seeds)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped()

    def _progress(self, stage: str, done: int, total: int) -> None:
        c = self.store.counts(self.run_id)
        self.emit(
            ProgressEvent(
                stage,
                done,
                total,
                kept=c["inputs_kept"] if stage == "inputs" else c["kept"],
                filtered=sum(c["filtered"].values()),
                tokens_per_s=self._tps(),
            )
        )

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict:
        """Run or finish the run. Stopped (the stop event) and KeyboardInterrupt (Ctrl-C, or
        SIGTERM through sgtui/interrupts.py) leave it `stopped`, to be resumed; any other
        exception leaves it `failed` with the error. An error left by an earlier attempt is
        cleared when the run is taken up again, so a finished run shows none."""
        self.store.claim_run(self.run_id)
        timings = self.store.run(self.run_id)["timings"]
        try:
            self.store.update_run(self.run_id, error=None)
            for stage, fn in (
                ("inputs", self.generate_inputs),
                ("annotate", self.annotate),
                ("balance", self.finalize),
            ):
                self.store.update_run(self.run_id, stage=stage)
                t = time.monotonic()
                fn()
                timings[stage] = timings.get(stage, 0.0) + time.monotonic() - t
                self.store.update_run(self.run_id, timings=timings)
        except (Stopped, KeyboardInterrupt):
            self.store.update_run(self.run_id, timings=timings)
            self.store.release_run(self.run_id, "stopped")
            self.emit(NoticeEvent("stopped; resume the run to continue"))
            raise
        except BaseException as e:
            self.store.release_run(self.run_id, "failed", error=f"{type(e).__name__}: {e}")
            raise
        summary = self.summary()
        self.store.update_run(self.run_id, stage="done", summary=summary)
        self.store.release_run(self.run_id, "done")
        self.emit(
            ProgressEvent(
                "done",
                1,
                1,
                kept=summary["kept"],
                filtered=sum(summary["filtered"].values()),
                tokens_per_s=self._tps(),
            )
        )
        return summary

    def generate_inputs(self) -> None:
        p = self.params
        ig = InputGenerator(self.task, p, self.gen.count_tokens)
        rows = self.store.samples(self.run_id)
        done_slots = {(r["round"], r["slot"]) for r in rows}
        total = p.rounds * p.per_round
        for rnd in range(p.rounds):
            missing = [s for s in range(p.per_round) if (rnd, s) not in done_slots]
            if not missing:
                continue
            self._check_stop()
            prior = self.store.passed_inputs(self.run_id, before_round=rnd)
            pool = [(r["input"], r["pseudo_label"]) for r in prior]
            this_round = self.store.kept_in_round(self.run_id, rnd)
            dynamic = ig.round_filters([x for x, _ in pool], [r["input"] for r in this_round])
            prompts = [ig.build_prompt(rnd, s, pool) for s in missing]
            sp = SamplingParams(
                temperature=p.gen_temperature,
                top_k=p.gen_top_k,
                top_p=p.gen_top_p,
                max_tokens=ig.max_tokens,
                n=1,
                seed=p.seed,
                stop=ig.stop,
            )
            # completions may finish in any order; store them in slot order so the duplicate
            # filter sees the same sequence on a resumed run
            arrived: dict[int, object] = {}
            nxt = 0
            stream = self._generate([pr.text for pr in prompts], sp, [pr.seed for pr in prompts])
            try:
                for comp in stream:
                    self.tokens += comp.n_tokens
                    arrived[comp.index] = comp
                    while nxt in arrived:
                        c, pr = arrived.pop(nxt), prompts[nxt]
                        text, filt, reason = ig.check(c.text, dynamic)
                        sid = self.store.add_sample(
                            self.run_id,
                            round=rnd,
                            slot=pr.slot,
                            stage="input",
                            input=text,
                            raw_output=c.text,
                            pseudo_label=pr.pseudo_label,
                            status="filtered" if filt else "kept",
                            filter=filt,
                            reason=reason,
                            n_tokens=c.n_tokens,
                        )
                        self.emit(SampleEvent(self.store.sample(sid)))
                        nxt += 1
                        done = rnd * p.per_round + pr.slot + 1
                        self._progress("inputs", done, total)
                    self._check_stop()
                self._check_stop()  # the stream ends early when the stop event is set
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()

    def annotate(self) -> None:
        p = self.params
        ann = OutputAnnotator(self.task, p)
        pending = self.store.awaiting_annotation(self.run_id)
        total = len(self.store.annotated(self.run_id)) + len(pending)
        done = total - len(pending)
        if not pending:
            return
        if self.task.is_classification and p.annotator == "conditioning":
            self._annotate_by_conditioning(pending, done, total)
            return
        if self.task.is_classification and p.annotator == "channel":
            self._annotate_by_channel(pending, done, total)
            return
        sp = annotation_sampling(self.gen, self.task, p)
        prompts = [annotation_prompt(self.gen, self.task, s["input"]) for s in pending]
        got: dict[int, list] = {}
        seeds = [annotation_seed(p, s) for s in pending]
        stream = self._generate(prompts, sp, seeds)
        try:
            for comp in stream:
                self.tokens += comp.n_tokens
                got.setdefault(comp.index, []).append(comp)
                if len(got[comp.index]) < p.n:
                    continue
                comps = sorted(got.pop(comp.index), key=lambda c: c.sample)
                s = pending[comp.index]
                texts = [c.text for c in comps]
                self.store.update_sample(
                    s["id"],
                    stage="annotated",
                    candidates=texts,
                    **ann.sample_fields(texts, s["input"]),
                )
                self.emit(SampleEvent(self.store.sample(s["id"])))
                done += 1
                self._progress("annotate", done, total)
                self._check_stop()
            self._check_stop()
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()

    def _annotate_by_conditioning(self, pending: list[dict], done: int, total: int) -> None:
        """Classification without the model's vote: each input's label is the one it was
        generated for (ZeroGen, SuperGen; docs/METHOD.md). The bundled model's own labels carry
        no signal (bench/results/label_signal.md), and a vote on them gives one label to nearly
        every input; the conditioning label at least says what the input was written to be.
        No answers are drawn, so this stage takes no model time."""
        for s in pending:
            label = s["pseudo_label"]
            ok = label in self.task.labels
            self.store.update_sample(
                s["id"],
                stage="annotated",
                candidates=[],
                votes={},
                output=label if ok else None,
                label=label if ok else None,
                status="kept" if ok else "filtered",
                filter=None if ok else "label",
                reason=None if ok else f"generated for {label!r}, which is not a label",
            )
            self.emit(SampleEvent(self.store.sample(s["id"])))
            done += 1
            self._progress("annotate", done, total)
            self._check_stop()

    def check_input_dependence(self, chunk: int = 16) -> None:
        """The input-dependence filter (sgtui/input_dependence.py) on every kept answer of a
        generation task, a chunk of answers per batched scoring pass. Runs again on a resumed
        run: the scores are deterministic, so an answer kept once is kept again."""
        p = self.params
        if (
            self.task.is_classification
            or not p.input_dependence
            or not getattr(self.gen, "supports_score", False)
        ):
            return

        def prompt(task: Task, text: str) -> str:
            return annotation_prompt(self.gen, task, text)

        with scoring_stops():
            seeds = dep.seed_dependence(self.gen, self.task, prompt, self.stop)
        if seeds is None or seeds <= 0:
            self.emit(
                NoticeEvent(
                    "input dependence is off for this task: its seed answers do "
                    "not depend on their inputs",
                    "warning",
                )
            )
            return
        threshold = p.min_dependence * seeds
        others = dep.other_inputs(self.store.annotated(self.run_id))
        kept = [s for s in self.store.annotated(self.run_id, kept_only=True) if s["id"] in others]
        for i in range(0, len(kept), chunk):
            self._check_stop()
            part = kept[i : i + chunk]
            with scoring_stops():
                values = dep.dependence(
                    self.gen,
                    [prompt(self.task, s["input"]) for s in part],
                    [prompt(self.task, others[s["id"]]) for s in part],
                    [s["output"] for s in part],
                    stop=self.stop,
                )
            for s, v in zip(part, values):
                if v < threshold:
                    self.store.update_sample(
                        s["id"], status="filtered", filter=dep.NAME, reason=dep.reason(v, threshold)
                    )
                    self.emit(SampleEvent(self.store.sample(s["id"])))

    def _annotate_by_channel(
        self, pending: list[dict], done: int, total: int, chunk: int = 8
    ) -> None:
        """Classification by the noisy channel (sgtui/channel.py): each input takes the label
        under which the model finds it likeliest, scored in batched passes, a chunk of inputs
        at a time. No answers are drawn."""
        if not getattr(self.gen, "supports_score", False):
            raise SgtuiError(
                f"the {self.gen.name} backend cannot score text, which the channel annotator needs",
                fix="use a llama.cpp or transformers backend, or --annotator vote",
            )
        for i in range(0, len(pending), chunk):
            self._check_stop()
            part = pending[i : i + chunk]
            with scoring_stops():
                got = channel_labels(self.gen, self.task, [s["input"] for s in part], self.stop)
            for s, (label, scores) in zip(part, got):
                self.store.update_sample(
                    s["id"],
                    stage="annotated",
                    candidates=[],
                    votes={lab: round(v, 3) for lab, v in scores.items()},
                    output=label,
                    label=label,
                    status="kept",
                    filter=None,
                    reason=None,
                )
                self.emit(SampleEvent(self.store.sample(s["id"])))
                done += 1
                self._progress("annotate", done, total)

    def finalize(self) -> None:
        self.check_input_dependence()
        kept = self.store.annotated(self.run_id, kept_only=True)
        self.warnings = annotation_warnings(self.task, kept)
        for w in self.warnings:
            self.emit(NoticeEvent(w, "warning"))
        if not (self.task.is_classification and self.params.balance_classes):
            return
        keep, counts = balance(kept, self.params.seed, self.params.min_labels)
        if kept and not keep:
            only = ", ".join(repr(lab) for lab in sorted(counts))
            reason = (
                f"every kept input got the label {only}: a training set of one label "
                "teaches only that answer (mark samples keep to train on them anyway)"
            )
            self.warnings.append(reason)
            self.emit(NoticeEvent(reason, "warning"))
        else:
            reason = f"down-sampled to {len(keep) // max(len(counts), 1)} per label"
        self.store.update_samples(
            (s["id"], {"status": "filtered", "filter": "class_balance", "reason": reason})
            for s in kept
            if s["id"] not in keep
        )
        missing = [lab for lab in self.task.labels if lab not in counts]
        if missing and kept:
            self.emit(
                NoticeEvent(
                    f"no sample was annotated with {', '.join(missing)}; the "
                    "training set lacks those classes",
                    "warning",
                )
            )

    def summary(self) -> dict:
        c = self.store.counts(self.run_id)
        pairs = self.store.training_pairs(self.run_id)
        inputs_kept = len(self.store.passed_inputs(self.run_id))
        if not hasattr(self, "warnings"):
            kept = self.store.annotated(self.run_id, kept_only=True)
            self.warnings = annotation_warnings(self.task, kept)
        return {
            "candidates": c["candidates"],
            "inputs_kept": inputs_kept,
            "warnings": self.warnings,
            "kept": c["kept"],
            "training_pairs": len(pairs),
            "filtered": c["filtered"],
            "tokens_per_s": round(self._tps(), 1),
        }
