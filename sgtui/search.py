"""`sgtui search`: the paper's "one parameter fits all" (SELF_GUIDE.md section 7).

Every configuration of a small grid runs the whole loop on every validation task; a
configuration scores the MINIMUM, over the tasks of one type, of its improvement over the base
few-shot score (the max-min criterion), and the best configuration per task type wins. A
cell (search, configuration, task) synthesises once and trains once per training seed; its
improvement is the mean over seeds minus the base, since one training's score moves by as much
as the gaps between configurations. Every seed's score is stored in SQLite as soon as it is
measured, so a search that stops continues where it stopped, without training a seed again.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import evaluation as ev
from .config import DEFAULT_MODE, MODES, RunParams
from .errors import SgtuiError
from .generator import LLAMA_CPP, open_generator
from .loop import base_scores, train_seeds
from .store import Store, now
from .synthesis import create_run, run_synthesis
from .task import load_task_spec
from .training import TrainParams

GRID_KEYS = {
    "mode": str,
    "gen_temperature": float,
    "rounds": int,
    "small_filters": bool,
    "epochs": int,
}
DEFAULT_GRID = "mode=paper,small;gen_temperature=0.7,0.9;epochs=1,3"


def parse_grid(spec: str) -> list[dict]:
    """ "key=v1,v2;key=v1" -> the list of configurations (the cartesian product)."""
    axes: list[tuple[str, list]] = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, _, values = part.partition("=")
        key = key.strip()
        if key not in GRID_KEYS or not values:
            raise SgtuiError(
                f"bad grid axis {part!r}",
                fix=f"write key=v1,v2 with keys from: {', '.join(GRID_KEYS)}",
            )
        cast = GRID_KEYS[key]
        vals = []
        for v in values.split(","):
            v = v.strip()
            try:
                vals.append(v.lower() in ("1", "true", "on", "yes") if cast is bool else cast(v))
            except ValueError:
                raise SgtuiError(
                    f"grid value {v!r} for {key} is not a {cast.__name__}",
                    fix="fix the --grid value",
                )
        axes.append((key, vals))
    if not axes:
        raise SgtuiError("the grid is empty", fix=f"for example --grid '{DEFAULT_GRID}'")
    keys = [k for k, _ in axes]
    configs = [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]
    for config in configs:
        check_config(config)
    return configs


def parse_seeds(spec: str) -> list[int]:
    """--seeds "42,1,2" -> [42, 1, 2]: each a seed a training accepts, none twice."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            seed = int(part)
            TrainParams(seed=seed).validate()
        except (ValueError, SgtuiError):
            raise SgtuiError(
                f"--seeds: {part!r} is not a training seed (a whole number from 0 to {2**32 - 1})",
                fix="give comma-separated seeds, e.g. --seeds 42,1,2",
            ) from None
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise SgtuiError(
            "--seeds names no seed", fix="give comma-separated training seeds, e.g. --seeds 42,1,2"
        )
    return seeds


def check_config(config: dict) -> None:
    """Refuse a grid value that a run or a training would refuse, before hours of search."""
    mode = config.get("mode", "small")
    if mode not in MODES:
        raise SgtuiError(
            f"grid value {mode!r} for mode is not one of {', '.join(MODES)}",
            fix="fix the --grid value",
        )
    run_keys = {k: v for k, v in config.items() if k not in ("mode", "epochs")}
    try:
        RunParams.defaults_for("generation", mode).override(**run_keys)
        if "epochs" in config:
            TrainParams(epochs=config["epochs"]).validate()
    except SgtuiError as e:
        raise SgtuiError(f"in --grid: {e.message}", fix="fix the --grid value") from None


def config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


DEFAULT_SEEDS = (42, 1, 2)


@dataclass
class Ranking:
    task_type: str
    config: dict
    min_delta: float
    deltas: dict[str, float]  # task -> mean over seeds - base
    scores: dict[str, list[float]] = field(default_factory=dict)  # task -> one score per seed
    bases: dict[str, float] = field(default_factory=dict)


def mean_sd(scores: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (None for one seed)."""
    return statistics.fmean(scores), (statistics.stdev(scores) if len(scores) > 1 else None)


def cell_scores(row: dict) -> list[float]:
    """A stored cell's score per training seed; a cell of an older search, which trained once,
    is one seed."""
    cell = json.loads(row["cell"] or "{}")
    if "scores" in cell:
        return list(cell["scores"].values())
    return [row["score"]]


def _pending(row: dict) -> bool:
    return bool(json.loads(row["cell"] or "{}").get("pending"))


def rank(store: Store, search: str) -> list[Ranking]:
    """Configurations ranked by their minimum improvement (mean over seeds minus base), per
    task type, best first (a tie goes to the higher mean improvement). Only configurations
    measured on every task of that type are ranked; a cell stopped between seeds is not."""
    rows = [r for r in store.search_cells(search) if not _pending(r)]
    tasks: dict[str, set] = {}
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        tasks.setdefault(r["task_type"], set()).add(r["task"])
        by.setdefault((r["task_type"], r["config"]), []).append(r)
    out = []
    for (t, c), cells in by.items():
        deltas = {r["task"]: r["delta"] for r in cells}
        if set(deltas) == tasks[t]:
            out.append(
                Ranking(
                    t,
                    json.loads(c),
                    min(deltas.values()),
                    deltas,
                    {r["task"]: cell_scores(r) for r in cells},
                    {r["task"]: r["base"] for r in cells},
                )
            )
    # a tie on the minimum goes to the higher mean improvement
    return sorted(
        out, key=lambda r: (r.task_type, -r.min_delta, -sum(r.deltas.values()) / len(r.deltas))
    )


def ranking_text(ranking: list[Ranking]) -> str:
    """The ranking as `sgtui search` prints it: per task type, each configuration's minimum
    improvement, then per task the base, the mean ± sd over seeds and the improvement."""
    lines: list[str] = []
    for typ in sorted({r.task_type for r in ranking}):
        lines += [
            "",
            f"{typ}: configurations by their minimum over tasks of (mean over seeds "
            "- base); per task: base, mean ± sd over seeds, improvement",
        ]
        for r in (r for r in ranking if r.task_type == typ):
            lines.append(f"  {r.min_delta:+6.1f}  {json.dumps(r.config, sort_keys=True)}")
            for task, scores in sorted(r.scores.items()):
                mean, sd = mean_sd(scores)
                spread = f"± {sd:4.1f}" if sd is not None else "(1 seed)"
                lines.append(
                    f"          {task:<16} base {r.bases[task]:5.1f}  {mean:5.1f} "
                    f"{spread}  {r.deltas[task]:+.1f}"
                )
    return "\n".join(lines)


Measure = Callable[[dict, str, int, Callable[[dict], None]], dict]


def run_search(
    store: Store,
    search: str,
    configs: list[dict],
    tasks: list[str],
    measure: Measure,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    log: Callable[[str], None] = print,
) -> list[Ranking]:
    """Measure every cell (configuration, task) once per training seed and rank them.

    measure(config, task, seed, note) -> {"task_type", "base", "score", ...} measures one
    seed; a score of None (nothing survived to train on) counts as no change from the base.
    note(fields) stores fields in the cell at once (the synthesis run, before it is trained),
    so that a stopped cell continues with them. Each seed's score is stored as it comes; the
    cell's score is the mean over its seeds. A cell already stored is measured only for the
    seeds it lacks; a cell of an older search (one score, no seeds) counts as done."""
    for config in configs:
        for task in tasks:
            _measure_cell(store, search, config, task, seeds, measure, log)
    return rank(store, search)


def _measure_cell(
    store: Store,
    search: str,
    config: dict,
    task: str,
    seeds: Sequence[int],
    measure: Measure,
    log: Callable[[str], None],
) -> None:
    """Measure the seeds cell (config, task) lacks, storing it after each."""
    key = config_key(config)
    found = store.search_cells(search, task, key)
    cell = json.loads(found[0]["cell"] or "{}") if found else {}
    if found and "scores" not in cell:
        return  # an older search's cell: one training, one seed
    scores: dict[str, float] = cell.setdefault("scores", {})
    todo = [s for s in seeds if str(s) not in scores]
    if not todo:
        return
    # the seeds left to measure: until they are, the cell is not ranked
    cell["pending"] = todo

    def save() -> None:
        stats = mean_sd(list(scores.values())) if scores else None
        if stats is not None:
            cell["mean"], cell["sd"] = stats
        mean, base = (stats[0] if stats else None), cell.get("base")
        store.save_search_cell(
            {
                "search": search,
                "config": key,
                "task": task,
                "task_type": cell.get("task_type"),
                "base": base,
                "score": mean,
                "delta": None if mean is None else mean - base,
                "cell": json.dumps(cell),
                "created": now(),
            }
        )

    def note(fields: dict) -> None:
        cell.update(fields)
        save()

    for seed in todo:
        got = measure(config, task, seed, note)
        score = got["score"] if got.get("score") is not None else got["base"]
        cell.update({k: v for k, v in got.items() if k not in ("score", "minutes")})
        cell["minutes"] = cell.get("minutes", 0) + got.get("minutes", 0)
        scores[str(seed)] = score
        cell["pending"] = [s for s in cell["pending"] if s != seed]
        if not cell["pending"]:
            del cell["pending"]
        save()
        log(f"{task} {key} seed {seed}: {got['base']:.1f} -> {score:.1f}")
    mean, sd = mean_sd(list(scores.values()))
    log(
        f"{task} {key}: {cell['base']:.1f} -> {mean:.1f}"
        + ("" if sd is None else f" ± {sd:.1f}")
        + f" over {len(scores)} seed(s)"
    )


def _without_epochs(config: dict) -> str:
    """The key of a configuration's synthesis and training: everything but its epochs."""
    return config_key({k: v for k, v in config.items() if k != "epochs"})


def shared_run(store: Store, search: str, task: str, config: dict) -> int | None:
    """The run a stored cell of this search made for `task` with the same configuration apart
    from its epochs, if any: cells that differ only in epochs share one synthesis and one
    training, each scoring that training's checkpoint after its own number of epochs."""
    want = _without_epochs(config)
    for r in store.search_cells(search, task):
        if _without_epochs(json.loads(r["config"])) == want:
            run = json.loads(r["cell"]).get("run")
            if run is not None:
                return run
    return None


def real_measure(
    store: Store,
    model: str,
    split: str,
    eval_limit: int,
    cache: dict,
    search: str = "default",
    max_epochs: int = 3,
) -> Measure:
    """The real cell, one training seed at a time: the whole loop through llama.cpp on one
    task's `split` rows (the first `eval_limit` of a seeded shuffle). A cell synthesises once
    (the run's own generation seed) and trains that run's samples once per training seed
    (sgtui.loop.train_seeds), every seed scored on the same rows.

    Cells that differ only in epochs share the synthesis and each seed's training of
    `max_epochs` epochs: the epochs axis scores that seed's checkpoint after its own number of
    epochs, as choosing the epoch on validation does (with the learning rate's linear decay,
    the checkpoint after 1 of 3 epochs is not the same as a 1-epoch training)."""

    def measure(config: dict, task_name: str, seed: int, note: Callable[[dict], None]) -> dict:
        t = time.monotonic()
        task = load_task_spec(task_name)
        if task_name not in cache:
            rows, split_name = ev.load_rows(f"{task_name}:{split}", eval_limit, seed=0)
            cache[task_name] = (rows, split_name, base_scores(task, rows, model))
        rows, split_name, base = cache[task_name]
        cfg = dict(config)
        epochs = cfg.pop("epochs", 3)
        if epochs > max_epochs:
            raise SgtuiError(
                f"a grid cell asks for {epochs} epochs, more than the search's {max_epochs}",
                fix="raise --max-epochs or lower the epochs axis",
            )
        params = RunParams.defaults_for(task.type, cfg.pop("mode", DEFAULT_MODE)).override(**cfg)
        share = (task_name, _without_epochs(config))
        rid = cache.get(share) or shared_run(store, search, task_name, config)
        if rid is None:
            rid = create_run(store, task, params, model, LLAMA_CPP)
        cache[share] = rid
        note({"task_type": task.type, "base": base.base, "run": rid})  # before it is synthesised
        cell: dict = {
            "task_type": task.type,
            "base": base.base,
            "score": None,
            "run": rid,
            **_synthesized(store, rid, model),
        }
        if cell["kept"]:
            cell["score"] = train_seeds(
                store,
                rid,
                task,
                rows,
                model,
                base.max_tokens,
                [seed],
                epochs,
                split_name,
                max_epochs,
            )[seed]
        else:
            cell["note"] = "no sample survived the filters; nothing to train"
        cell["minutes"] = (time.monotonic() - t) / 60
        return cell

    return measure


def _synthesized(store: Store, run_id: int, model: str) -> dict:
    """Synthesise run `run_id`, or finish it where a stopped search left it; returns the
    cell's account of it: kept (training pairs), candidates, filtered, warnings."""
    row = store.run(run_id)
    if row["status"] == "done":
        summary = row["summary"]
    else:
        gen = open_generator(model, LLAMA_CPP)
        try:
            summary = run_synthesis(store, run_id, gen, lambda e: None)
        finally:
            gen.close()
    return {
        "kept": len(store.training_pairs(run_id)),
        "candidates": summary.get("candidates"),
        "filtered": summary.get("filtered"),
        "warnings": summary.get("warnings"),
    }
