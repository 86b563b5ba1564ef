"""The whole loop for one task, headless: base scores, then generate -> train -> evaluate.

Shared by `sgtui search` and the benchmarks, so they measure exactly what `sgtui run` does."""
from __future__ import annotations

import time
from dataclasses import dataclass

from .config import RunParams
from .store import Store
from .task import Task


@dataclass
class BaseScores:
    trivial: float
    base: float
    max_tokens: int
    minutes: float


def base_scores(task: Task, rows: list[dict], model: str) -> BaseScores:
    """The trivial baseline and the base model's few-shot score, greedy, through llama.cpp."""
    import backends
    from . import evaluation as ev
    t = time.monotonic()
    gen = backends.load_generator("llama-cpp", model)
    try:
        max_tokens = ev.default_max_tokens(gen, task, rows)
        base = ev.evaluate(gen, task, rows, max_tokens=max_tokens).score
    finally:
        gen.close()
    return BaseScores(ev.trivial_baseline(task, rows).score, base, max_tokens,
                      (time.monotonic() - t) / 60)


def self_guide(store: Store, task: Task, params: RunParams, rows: list[dict], model: str,
               max_tokens: int, epochs: int = 3, split: str = "", emit=None) -> dict:
    """Generate, train and evaluate one configuration on one task. Returns a result cell."""
    import backends
    from . import evaluation as ev
    from .cli_train import train_run
    from .export import export_run
    from .synthesis import create_run, run_synthesis
    from .training import TrainParams

    t = time.monotonic()
    rid = create_run(store, task, params, model, "llama-cpp")
    gen = backends.load_generator("llama-cpp", model)
    try:
        summary = run_synthesis(store, rid, gen, emit or (lambda e: None))
    finally:
        gen.close()
    cell: dict = {"run": rid, "kept": summary["training_pairs"],
                  "candidates": summary["candidates"], "filtered": summary["filtered"],
                  "warnings": summary["warnings"], "score": None}
    if summary["training_pairs"] == 0:
        cell["note"] = "no sample survived the filters; nothing to train"
    else:
        train_run(str(store.path), rid, TrainParams(epochs=epochs), quiet=True)
        lora = str(export_run(store, rid, "gguf"))
        gen = backends.load_generator("llama-cpp", model, lora_path=lora)
        try:
            result = ev.evaluate(gen, task, rows, max_tokens=max_tokens)
        finally:
            gen.close()
        ev.save(store, rid, "self-guide", split, result, f"{model} + {lora}")
        cell["score"] = result.score
    cell["minutes"] = (time.monotonic() - t) / 60
    return cell


def select_epoch(store: Store, run_id: int, task: Task, val_rows: list[dict], model: str,
                 max_tokens: int, val_split: str = "validation", base_score: float | None = None,
                 on_score=None) -> dict:
    """SELF_GUIDE.md section 7: choose the epoch on validation rows, never on the test rows.

    Scores the base model (epoch 0) and each epoch's checkpoint of run `run_id`, greedy,
    through llama.cpp with the checkpoint exported as a GGUF adapter. The best score wins; a
    tie goes to the earlier epoch, so a fine-tune that does no better than the base model on
    validation is not chosen. Returns {"scores": {epoch: score}, "epoch": best, "adapter":
    the chosen GGUF adapter, or None for the base model}."""
    import backends
    from . import evaluation as ev
    from .export import export_gguf
    from .training import checkpoints_dir, run_dir

    scores: dict[int, float] = {}
    adapters: dict[int, str | None] = {0: None}
    if base_score is None:
        gen = backends.load_generator("llama-cpp", model)
        try:
            base_score = ev.evaluate(gen, task, val_rows, max_tokens=max_tokens).score
        finally:
            gen.close()
    scores[0] = base_score
    cks = sorted(checkpoints_dir(run_id).glob("epoch-*"), key=lambda p: int(p.name.split("-")[1]))
    for ck in cks:
        k = int(ck.name.split("-")[1])
        dest = run_dir(run_id) / "export" / f"epoch-{k}.gguf"
        adapters[k] = str(export_gguf(ck, model, dest))
        gen = backends.load_generator("llama-cpp", model, lora_path=adapters[k])
        try:
            result = ev.evaluate(gen, task, val_rows, max_tokens=max_tokens)
        finally:
            gen.close()
        ev.save(store, run_id, f"epoch-{k}", val_split, result, f"{model} + {adapters[k]}")
        scores[k] = result.score
        if on_score:
            on_score(k, result.score)
    best = max(scores, key=lambda k: (scores[k], -k))
    return {"scores": scores, "epoch": best, "adapter": adapters[best]}
