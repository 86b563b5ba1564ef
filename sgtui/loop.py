"""The whole loop for one task, headless: base scores, then generate -> train -> evaluate.

Shared by `sgtui search` and the benchmarks, so they measure exactly what `sgtui run` does."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

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


def synthesize_and_train(store: Store, task: Task, params: RunParams, model: str,
                         epochs: int = 3, emit=None) -> dict:
    """Generate and filter samples, then train on them (one checkpoint per epoch). Returns a
    cell without a score: {"run", "kept", "candidates", "filtered", "warnings"}, and "note"
    when nothing survived to train on."""
    import backends
    from .cli_train import train_run
    from .synthesis import create_run, run_synthesis
    from .training import TrainParams

    rid = create_run(store, task, params, model, "llama-cpp")
    gen = backends.load_generator("llama-cpp", model)
    try:
        summary = run_synthesis(store, rid, gen, emit or (lambda e: None))
    finally:
        gen.close()
    cell: dict = {"run": rid, "kept": summary["training_pairs"],
                  "candidates": summary["candidates"], "filtered": summary["filtered"],
                  "warnings": summary["warnings"]}
    if summary["training_pairs"] == 0:
        cell["note"] = "no sample survived the filters; nothing to train"
    else:
        train_run(str(store.path), rid, TrainParams(epochs=epochs), quiet=True)
    return cell


def self_guide(store: Store, task: Task, params: RunParams, rows: list[dict], model: str,
               max_tokens: int, epochs: int = 3, split: str = "", emit=None) -> dict:
    """Generate, train and evaluate one configuration on one task. Returns a result cell."""
    import backends
    from . import evaluation as ev
    from .export import export_run

    t = time.monotonic()
    cell = synthesize_and_train(store, task, params, model, epochs, emit)
    cell["score"] = None
    if "note" not in cell:
        rid = cell["run"]
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


def trained_epochs(store: Store, run_id: int) -> list[int]:
    """The epochs of run `run_id` that have a checkpoint, in order."""
    from .training import checkpoints_dir
    return sorted(int(ck.name.split("-")[1])
                  for ck in checkpoints_dir(store, run_id).glob("epoch-*"))


def score_epoch(store: Store, run_id: int, epoch: int, task: Task, rows: list[dict], model: str,
                max_tokens: int, split: str) -> tuple[float, str]:
    """Score the checkpoint after `epoch` epochs of run `run_id`, greedy, through llama.cpp
    with the checkpoint exported as a GGUF adapter. Returns (score, adapter path)."""
    import backends
    from . import evaluation as ev
    from .export import export_gguf
    from .training import checkpoints_dir, run_dir

    dest = run_dir(store, run_id) / "export" / f"epoch-{epoch}.gguf"
    adapter = str(export_gguf(checkpoints_dir(store, run_id) / f"epoch-{epoch}", model, dest))
    gen = backends.load_generator("llama-cpp", model, lora_path=adapter)
    try:
        result = ev.evaluate(gen, task, rows, max_tokens=max_tokens)
    finally:
        gen.close()
    ev.save(store, run_id, f"epoch-{epoch}", split, result, f"{model} + {adapter}")
    return result.score, adapter


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

    scores: dict[int, float] = {}
    adapters: dict[int, str | None] = {0: None}
    if base_score is None:
        gen = backends.load_generator("llama-cpp", model)
        try:
            base_score = ev.evaluate(gen, task, val_rows, max_tokens=max_tokens).score
        finally:
            gen.close()
    scores[0] = base_score
    for k in trained_epochs(store, run_id):
        scores[k], adapters[k] = score_epoch(store, run_id, k, task, val_rows, model,
                                             max_tokens, val_split)
        if on_score:
            on_score(k, scores[k])
    best = max(scores, key=lambda k: (scores[k], -k))
    return {"scores": scores, "epoch": best, "adapter": adapters[best]}


def train_seeds(store: Store, run_id: int, task: Task, rows: list[dict], model: str,
                max_tokens: int, seeds: list[int], epochs: int, split: str,
                max_epochs: int | None = None, on_seed=None) -> dict[int, float]:
    """Train run `run_id`'s samples once per training seed and score each fine-tune on `rows`,
    greedy, through llama.cpp: one synthesis, so what differs between seeds is the training
    alone. Returns {seed: score}.

    Each training runs `max_epochs` epochs (default `epochs`) with the task type's other
    training defaults and exports the checkpoint after every epoch as a GGUF adapter,
    export/seed-S-epoch-K-of-M.gguf; a seed scores the checkpoint after `epochs` epochs. A seed
    whose adapters are already exported is not trained again (a stopped search continues; cells
    that differ only in epochs share each seed's training), and an interrupted training of the
    same seed continues from its last checkpoint. on_seed(seed, score) follows each seed."""
    import backends
    from . import evaluation as ev

    scores: dict[int, float] = {}
    for seed in seeds:
        adapters = _seed_adapters(store, run_id, task, model, seed, epochs, max_epochs or epochs)
        gen = backends.load_generator("llama-cpp", model, lora_path=str(adapters[epochs]))
        try:
            result = ev.evaluate(gen, task, rows, max_tokens=max_tokens)
        finally:
            gen.close()
        ev.save(store, run_id, f"seed-{seed}-epoch-{epochs}", split, result,
                f"{model} + {adapters[epochs]}")
        scores[seed] = result.score
        if on_seed:
            on_seed(seed, result.score)
    return scores


def _seed_adapters(store: Store, run_id: int, task: Task, model: str, seed: int, epochs: int,
                   max_epochs: int) -> dict[int, Path]:
    """{epoch: GGUF adapter} of training seed `seed` on run `run_id`, training it only when
    its adapters are not all exported yet. The checkpoints folder holds one training at a time
    (a new training clears it), hence the per-seed exports."""
    from .cli_train import train_run
    from .export import export_gguf
    from .training import TrainParams, checkpoints_dir, interrupted_training, run_dir

    if not 1 <= epochs <= max_epochs:
        raise ValueError(f"epochs {epochs} outside 1..{max_epochs}")
    export = run_dir(store, run_id) / "export"
    paths = {k: export / f"seed-{seed}-epoch-{k}-of-{max_epochs}.gguf"
             for k in range(1, max_epochs + 1)}
    if all(p.is_file() for p in paths.values()):
        return paths
    params = TrainParams.for_task(task.type).override(seed=seed, epochs=max_epochs)
    meta = interrupted_training(run_dir(store, run_id))
    # continue the folder's training only when it is this seed's; another's is started anew
    same = meta is not None and TrainParams.from_dict(meta["params"]) == params
    train_run(str(store.path), run_id, params, resume=same, quiet=True)
    for k in trained_epochs(store, run_id):
        if k in paths:
            export_gguf(checkpoints_dir(store, run_id) / f"epoch-{k}", model, paths[k])
    return paths
