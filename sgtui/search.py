"""`sgtui search`: the paper's "one parameter fits all" (SELF_GUIDE.md section 7).

Every configuration of a small grid runs the whole loop on every validation task; a
configuration scores the MINIMUM, over the tasks of one type, of its improvement over the base
few-shot score (the max-min criterion), and the best configuration per task type wins. Every
cell (search, configuration, task) is stored in SQLite as soon as it is measured, so a search
that stops continues where it stopped.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Callable

from .errors import SgtuiError
from .store import Store, now

GRID_KEYS = {"mode": str, "gen_temperature": float, "rounds": int, "small_filters": bool,
             "epochs": int}
DEFAULT_GRID = "mode=paper,small;gen_temperature=0.7,0.9;epochs=1,3"


def parse_grid(spec: str) -> list[dict]:
    """"key=v1,v2;key=v1" -> the list of configurations (the cartesian product)."""
    axes: list[tuple[str, list]] = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, _, values = part.partition("=")
        key = key.strip()
        if key not in GRID_KEYS or not values:
            raise SgtuiError(f"bad grid axis {part!r}",
                             fix=f"write key=v1,v2 with keys from: {', '.join(GRID_KEYS)}")
        cast = GRID_KEYS[key]
        vals = []
        for v in values.split(","):
            v = v.strip()
            try:
                vals.append(v.lower() in ("1", "true", "on", "yes") if cast is bool else cast(v))
            except ValueError:
                raise SgtuiError(f"grid value {v!r} for {key} is not a {cast.__name__}",
                                 fix="fix the --grid value")
        axes.append((key, vals))
    if not axes:
        raise SgtuiError("the grid is empty", fix=f"for example --grid '{DEFAULT_GRID}'")
    keys = [k for k, _ in axes]
    configs = [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]
    for config in configs:
        check_config(config)
    return configs


def check_config(config: dict) -> None:
    """Refuse a grid value that a run or a training would refuse, before hours of search."""
    from .config import MODES, RunParams
    from .training import TrainParams
    mode = config.get("mode", "small")
    if mode not in MODES:
        raise SgtuiError(f"grid value {mode!r} for mode is not one of {', '.join(MODES)}",
                         fix="fix the --grid value")
    run_keys = {k: v for k, v in config.items() if k not in ("mode", "epochs")}
    try:
        RunParams.defaults_for("generation", mode).override(**run_keys)
        if "epochs" in config:
            TrainParams(epochs=config["epochs"]).validate()
    except SgtuiError as e:
        raise SgtuiError(f"in --grid: {e.message}", fix="fix the --grid value") from None


def config_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


@dataclass
class Ranking:
    task_type: str
    config: dict
    min_delta: float
    deltas: dict[str, float]


def rank(store: Store, search: str) -> list[Ranking]:
    """Configurations ranked by their minimum improvement, per task type, best first (a tie
    goes to the higher mean improvement). Only configurations measured on every task of that
    type are ranked."""
    rows = list(store.db["search_cells"].rows_where("search = ?", [search]))
    tasks: dict[str, set] = {}
    by: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        tasks.setdefault(r["task_type"], set()).add(r["task"])
        by.setdefault((r["task_type"], r["config"]), {})[r["task"]] = r["delta"]
    out = [Ranking(t, json.loads(c), min(d.values()), d) for (t, c), d in by.items()
           if set(d) == tasks[t]]
    # a tie on the minimum goes to the higher mean improvement
    return sorted(out, key=lambda r: (r.task_type, -r.min_delta,
                                      -sum(r.deltas.values()) / len(r.deltas)))


def run_search(store: Store, search: str, configs: list[dict], tasks: list[str],
               measure: Callable[[dict, str], dict], log: Callable[[str], None] = print) -> list[Ranking]:
    """measure(config, task) -> {"task_type", "base", "score"}; a score of None (nothing
    survived to train on) counts as no change from the base."""
    done = {(r["config"], r["task"]) for r in
            store.db["search_cells"].rows_where("search = ?", [search], select="config, task")}
    for config in configs:
        key = config_key(config)
        for task in tasks:
            if (key, task) in done:
                continue
            cell = measure(config, task)
            score = cell["score"] if cell.get("score") is not None else cell["base"]
            store.db["search_cells"].insert({
                "search": search, "config": key, "task": task, "task_type": cell["task_type"],
                "base": cell["base"], "score": score, "delta": score - cell["base"],
                "cell": json.dumps(cell), "created": now()})
            log(f"{task} {key}: {cell['base']:.1f} -> {score:.1f}")
    return rank(store, search)


def _without_epochs(config: dict) -> str:
    """The key of a configuration's synthesis and training: everything but its epochs."""
    return config_key({k: v for k, v in config.items() if k != "epochs"})


def shared_run(store: Store, search: str, task: str, config: dict) -> int | None:
    """The run a stored cell of this search made for `task` with the same configuration apart
    from its epochs, if any: cells that differ only in epochs share one synthesis and one
    training, each scoring that training's checkpoint after its own number of epochs."""
    want = _without_epochs(config)
    for r in store.db["search_cells"].rows_where("search = ? and task = ?", [search, task]):
        if _without_epochs(json.loads(r["config"])) == want:
            run = json.loads(r["cell"]).get("run")
            if run is not None:
                return run
    return None


def real_measure(store: Store, model: str, split: str, eval_limit: int, cache: dict,
                 search: str = "default", max_epochs: int = 3):
    """The real cell: the whole loop through llama.cpp on one task's validation split. One
    training of `max_epochs` epochs serves every cell that differs only in epochs (the epochs
    axis scores checkpoints, as choosing the epoch on validation does; with the learning rate's
    linear decay, the checkpoint after 1 of 3 epochs is not the same as a 1-epoch training)."""
    from . import evaluation as ev
    from .config import DEFAULT_MODE, RunParams
    from .loop import base_scores, score_epoch, synthesize_and_train, trained_epochs
    from .task import load_task
    from .cli_train import _resolve_task

    def measure(config: dict, task_name: str) -> dict:
        t = time.monotonic()
        task = load_task(_resolve_task(task_name))
        if task_name not in cache:
            rows, split_name = ev.load_rows(f"{task_name}:{split}", eval_limit, seed=0)
            cache[task_name] = (rows, split_name, base_scores(task, rows, model))
        rows, split_name, base = cache[task_name]
        cfg = dict(config)
        epochs = cfg.pop("epochs", 3)
        if epochs > max_epochs:
            raise SgtuiError(f"a grid cell asks for {epochs} epochs, more than the search's "
                             f"{max_epochs}", fix="raise --max-epochs or lower the epochs axis")
        params = RunParams.defaults_for(task.type, cfg.pop("mode", DEFAULT_MODE)).override(**cfg)
        share = (task_name, _without_epochs(config))
        rid = cache.get(share) or shared_run(store, search, task_name, config)
        cell: dict = {"task_type": task.type, "base": base.base, "score": None}
        if rid is None:
            made = synthesize_and_train(store, task, params, model, max_epochs)
            rid = made["run"]
            cell.update(made)
        elif store.training_pairs(rid) and epochs not in trained_epochs(store, rid):
            # the shared training was stopped before this epoch: it resumes from its checkpoint
            from .cli_train import train_run
            from .training import TrainParams
            train_run(str(store.path), rid, TrainParams(epochs=max_epochs), resume=True,
                      quiet=True)
        cache[share] = rid
        cell["run"] = rid
        cell["kept"] = len(store.training_pairs(rid))
        if cell["kept"]:
            cell["score"], _ = score_epoch(store, rid, epochs, task, rows, model,
                                           base.max_tokens, split_name)
        cell["minutes"] = (time.monotonic() - t) / 60
        return cell
    return measure
