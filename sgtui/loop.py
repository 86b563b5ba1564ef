"""The whole loop for one task, headless: generate -> filter -> train -> export -> evaluate.

`run_loop` is the loop `sgtui run` runs; the benchmarks' `self_guide` and `sgtui search`
(train_seeds) are built from the same steps, so they measure what `sgtui run` does. Nothing
here prints: each finished step is an event (sgtui/events.py) handed to `on_event`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import evaluation as ev
from .config import RunParams
from .events import EpochChosen, Evaluating, Exported, SynthesisDone, Trained, TrainingEvent
from .export import export_gguf, export_run
from .generator import LLAMA_CPP, is_llama_cpp, open_generator
from .store import Store
from .synthesis import create_run, run_synthesis
from .task import Task
from .training import TrainParams, checkpoints_dir, interrupted_training, run_dir, train

TRIVIAL, BASE, TUNED = "trivial", "base", "self-guide"


@dataclass
class LoopResult:
    run_id: int
    summary: dict
    adapter: str  # the peft adapter folder
    gguf_adapter: str | None  # the llama.cpp adapter (GGUF base models)
    split: str | None = None
    # (system, EvalResult) in table order: base, the fine-tune, trivial; empty without rows
    results: list = field(default_factory=list)
    tuned: str | None = None  # the adapter the fine-tune row was scored with
    base_chosen: bool = False  # validation found no epoch better than the base model
    max_tokens: int | None = None


def _quiet(event) -> None:
    pass


def run_loop(
    store: Store,
    run_id: int,
    generator,
    train_params: TrainParams,
    *,
    rows: list[dict] = (),
    split: str | None = None,
    val_rows: list[dict] = (),
    val_split: str | None = None,
    systems: tuple[str, ...] = (BASE, TUNED, TRIVIAL),
    max_tokens: int | None = None,
    trust_remote_code: bool = False,
    empty_ok: bool = False,
    train_model: str | None = None,
    on_event: Callable[[object], None] | None = None,
) -> LoopResult:
    """Synthesise run `run_id` with `generator` (closed when done, so training can load its own
    copy), train on what survives, export the llama.cpp adapter (GGUF base models) and, given
    `rows`, score `systems` on them, greedy. With `val_rows` the epoch is chosen on them first
    (GGUF base models): the base model and each epoch's checkpoint are scored, and the best
    one is what the fine-tune row is scored with. empty_ok: when nothing survives the filters,
    return before training (otherwise training refuses with a message that says why).
    train_model: the local weights to train on and score with (default: the run's model; a
    server run's: generator.train_weights)."""
    emit = on_event or _quiet
    try:
        summary = run_synthesis(store, run_id, generator, emit)
    finally:
        generator.close()  # free the model before training loads its own copy
    emit(SynthesisDone(run_id, summary))
    row = store.run(run_id)
    if empty_ok and summary["training_pairs"] == 0:
        return LoopResult(run_id, summary, "", None, split)
    model, backend = train_model or row["model"], row["backend"]
    outcome = train(
        str(store.path),
        run_id,
        train_params,
        model=train_model,
        trust_remote_code=trust_remote_code,
        on_event=lambda e: emit(TrainingEvent(e)),
    )
    emit(Trained(run_id, outcome.steps, str(outcome.adapter)))
    gguf_adapter = None
    if Path(model).is_file():
        gguf_adapter = str(export_run(store, run_id, "gguf"))
        emit(Exported(gguf_adapter))
    result = LoopResult(
        run_id, summary, str(outcome.adapter), gguf_adapter, split, max_tokens=max_tokens
    )
    if not rows:
        return result

    task = store.get_task(row["task_id"])
    llama = backend if is_llama_cpp(backend) else LLAMA_CPP

    def open_model(adapter: str | None):
        if gguf_adapter:
            return open_generator(model, llama, lora_path=adapter)
        return open_generator(
            model, "transformers", adapter=adapter, trust_remote_code=trust_remote_code
        )

    def evaluate(system: str, adapter: str | None, label: str) -> None:
        gen = open_model(adapter)
        try:
            if result.max_tokens is None:  # one answer budget for every system
                result.max_tokens = ev.default_max_tokens(gen, task, rows)
            emit(Evaluating(system, len(rows), split))
            scored = ev.evaluate(gen, task, rows, max_tokens=result.max_tokens)
        finally:
            gen.close()
        ev.save(store, run_id, TUNED if system.startswith(TUNED) else system, split, scored, label)
        result.results.append((system, scored))

    if BASE in systems:
        evaluate(BASE, None, model)
    tuned_label, tuned = TUNED, gguf_adapter or result.adapter
    if val_rows:
        if result.max_tokens is None:
            gen = open_model(None)
            try:
                result.max_tokens = ev.default_max_tokens(gen, task, rows)
            finally:
                gen.close()
        emit(Evaluating("epochs", len(val_rows), val_split))
        chosen = select_epoch(store, run_id, task, val_rows, model, result.max_tokens, val_split)
        emit(
            EpochChosen(
                val_split, len(val_rows), chosen["scores"], chosen["epoch"], chosen["adapter"]
            )
        )
        if chosen["epoch"] == 0:
            result.base_chosen = True  # the table shows the last epoch for reference
        else:
            tuned_label, tuned = f"{TUNED} (epoch {chosen['epoch']})", chosen["adapter"]
    if TUNED in systems:
        evaluate(tuned_label, tuned if gguf_adapter else result.adapter, f"{model} + {tuned}")
    result.tuned = tuned
    if TRIVIAL in systems:
        trivial = ev.trivial_baseline(task, rows)
        ev.save(store, run_id, TRIVIAL, split, trivial, "none")
        result.results.append((TRIVIAL, trivial))
    return result


@dataclass
class BaseScores:
    trivial: float
    base: float
    max_tokens: int
    minutes: float


def base_scores(task: Task, rows: list[dict], model: str) -> BaseScores:
    """The trivial baseline and the base model's few-shot score, greedy, through llama.cpp."""
    t = time.monotonic()
    gen = open_generator(model, LLAMA_CPP)
    try:
        max_tokens = ev.default_max_tokens(gen, task, rows)
        base = ev.evaluate(gen, task, rows, max_tokens=max_tokens).score
    finally:
        gen.close()
    return BaseScores(
        ev.trivial_baseline(task, rows).score, base, max_tokens, (time.monotonic() - t) / 60
    )


def synthesize_and_train(
    store: Store, task: Task, params: RunParams, model: str, epochs: int = 3, emit=None
) -> dict:
    """Generate and filter samples, then train on them (one checkpoint per epoch). Returns a
    cell without a score: {"run", "kept", "candidates", "filtered", "warnings"}, and "note"
    when nothing survived to train on."""
    return self_guide(store, task, params, [], model, None, epochs, emit=emit)


def self_guide(
    store: Store,
    task: Task,
    params: RunParams,
    rows: list[dict],
    model: str,
    max_tokens: int | None,
    epochs: int = 3,
    split: str = "",
    emit=None,
) -> dict:
    """Generate, train and evaluate one configuration on one task (run_loop on a new run,
    through llama.cpp, the fine-tune alone scored on `rows`). Returns a result cell."""
    t = time.monotonic()
    rid = create_run(store, task, params, model, LLAMA_CPP)
    result = run_loop(
        store,
        rid,
        open_generator(model, LLAMA_CPP),
        TrainParams(epochs=epochs),
        rows=rows,
        split=split,
        systems=(TUNED,),
        max_tokens=max_tokens,
        empty_ok=True,
        on_event=emit,
    )
    summary = result.summary
    cell: dict = {
        "run": rid,
        "kept": summary["training_pairs"],
        "candidates": summary["candidates"],
        "filtered": summary["filtered"],
        "warnings": summary["warnings"],
    }
    if summary["training_pairs"] == 0:
        cell["note"] = "no sample survived the filters; nothing to train"
    if rows:
        cell["score"] = result.results[0][1].score if result.results else None
        cell["minutes"] = (time.monotonic() - t) / 60
    return cell


def trained_epochs(store: Store, run_id: int) -> list[int]:
    """The epochs of run `run_id` that have a checkpoint, in order."""
    return sorted(
        int(ck.name.split("-")[1]) for ck in checkpoints_dir(store, run_id).glob("epoch-*")
    )


def score_epoch(
    store: Store,
    run_id: int,
    epoch: int,
    task: Task,
    rows: list[dict],
    model: str,
    max_tokens: int,
    split: str,
) -> tuple[float, str]:
    """Score the checkpoint after `epoch` epochs of run `run_id`, greedy, through llama.cpp
    with the checkpoint exported as a GGUF adapter. Returns (score, adapter path)."""

    dest = run_dir(store, run_id) / "export" / f"epoch-{epoch}.gguf"
    adapter = str(export_gguf(checkpoints_dir(store, run_id) / f"epoch-{epoch}", model, dest))
    gen = open_generator(model, LLAMA_CPP, lora_path=adapter)
    try:
        result = ev.evaluate(gen, task, rows, max_tokens=max_tokens)
    finally:
        gen.close()
    ev.save(store, run_id, f"epoch-{epoch}", split, result, f"{model} + {adapter}")
    return result.score, adapter


def select_epoch(
    store: Store,
    run_id: int,
    task: Task,
    val_rows: list[dict],
    model: str,
    max_tokens: int,
    val_split: str = "validation",
    base_score: float | None = None,
    on_score=None,
) -> dict:
    """SELF_GUIDE.md section 7: choose the epoch on validation rows, never on the test rows.

    Scores the base model (epoch 0) and each epoch's checkpoint of run `run_id`, greedy,
    through llama.cpp with the checkpoint exported as a GGUF adapter. The best score wins; a
    tie goes to the earlier epoch, so a fine-tune that does no better than the base model on
    validation is not chosen. Returns {"scores": {epoch: score}, "epoch": best, "adapter":
    the chosen GGUF adapter, or None for the base model}."""

    scores: dict[int, float] = {}
    adapters: dict[int, str | None] = {0: None}
    if base_score is None:
        gen = open_generator(model, LLAMA_CPP)
        try:
            base_score = ev.evaluate(gen, task, val_rows, max_tokens=max_tokens).score
        finally:
            gen.close()
    scores[0] = base_score
    for k in trained_epochs(store, run_id):
        scores[k], adapters[k] = score_epoch(
            store, run_id, k, task, val_rows, model, max_tokens, val_split
        )
        if on_score:
            on_score(k, scores[k])
    best = max(scores, key=lambda k: (scores[k], -k))
    return {"scores": scores, "epoch": best, "adapter": adapters[best]}


def train_seeds(
    store: Store,
    run_id: int,
    task: Task,
    rows: list[dict],
    model: str,
    max_tokens: int,
    seeds: list[int],
    epochs: int,
    split: str,
    max_epochs: int | None = None,
    on_seed=None,
) -> dict[int, float]:
    """Train run `run_id`'s samples once per training seed and score each fine-tune on `rows`,
    greedy, through llama.cpp: one synthesis, so what differs between seeds is the training
    alone. Returns {seed: score}.

    Each training runs `max_epochs` epochs (default `epochs`) with the task type's other
    training defaults and exports the checkpoint after every epoch as a GGUF adapter,
    export/seed-S-epoch-K-of-M.gguf; a seed scores the checkpoint after `epochs` epochs. A seed
    whose adapters are already exported is not trained again (a stopped search continues; cells
    that differ only in epochs share each seed's training), and an interrupted training of the
    same seed continues from its last checkpoint. on_seed(seed, score) follows each seed."""

    scores: dict[int, float] = {}
    for seed in seeds:
        adapters = _seed_adapters(store, run_id, task, model, seed, epochs, max_epochs or epochs)
        gen = open_generator(model, LLAMA_CPP, lora_path=str(adapters[epochs]))
        try:
            result = ev.evaluate(gen, task, rows, max_tokens=max_tokens)
        finally:
            gen.close()
        ev.save(
            store,
            run_id,
            f"seed-{seed}-epoch-{epochs}",
            split,
            result,
            f"{model} + {adapters[epochs]}",
        )
        scores[seed] = result.score
        if on_seed:
            on_seed(seed, result.score)
    return scores


def _seed_adapters(
    store: Store, run_id: int, task: Task, model: str, seed: int, epochs: int, max_epochs: int
) -> dict[int, Path]:
    """{epoch: GGUF adapter} of training seed `seed` on run `run_id`, training it only when
    its adapters are not all exported yet. The checkpoints folder holds one training at a time
    (a new training clears it), hence the per-seed exports."""

    if not 1 <= epochs <= max_epochs:
        raise ValueError(f"epochs {epochs} outside 1..{max_epochs}")
    export = run_dir(store, run_id) / "export"
    paths = {
        k: export / f"seed-{seed}-epoch-{k}-of-{max_epochs}.gguf" for k in range(1, max_epochs + 1)
    }
    if all(p.is_file() for p in paths.values()):
        return paths
    params = TrainParams.for_task(task.type).override(seed=seed, epochs=max_epochs)
    meta = interrupted_training(run_dir(store, run_id))
    # continue the folder's training only when it is this seed's; another's is started anew
    same = meta is not None and TrainParams.from_dict(meta["params"]) == params
    train(str(store.path), run_id, params, resume=same)
    for k in trained_epochs(store, run_id):
        if k in paths:
            export_gguf(checkpoints_dir(store, run_id) / f"epoch-{k}", model, paths[k])
    return paths
