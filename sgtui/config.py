"""Run parameters: one typed object, the paper's defaults per task type, every field overridable.

Defaults follow SELF_GUIDE.md sections 2-4 and 7 (the "one parameter fits all" values the
reference pipelines use). Departures are listed in docs/METHOD.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


MODES = ("paper", "small")
DEFAULT_MODE = "small"

# The "small" mode for models that cannot follow the paper's long prompt (docs/METHOD.md).
SMALL_COMMON = dict(mode="small", small_filters=True, max_low_quality=3, length_sigma_floor=0.25,
                    best_of=0, seed_answer_budget=True, min_labels=2)
# Rounds sized for a CPU: a default `sgtui run` of the bundled model takes minutes, not hours
# (bench/results/). More rounds give more data; pass --rounds.
SMALL_MODE: dict[str, dict] = {
    "classification": dict(SMALL_COMMON, rounds=20),
    # 1.1: the max-min winner of `sgtui search` over the input-generation temperature
    # (bench/results/search.md); the paper's 0.9 came last
    "generation": dict(SMALL_COMMON, rounds=10, gen_temperature=1.1),
}


@dataclass(frozen=True)
class RunParams:
    # input generation (section 2)
    mode: str = "paper"              # "paper": the paper's prompt; "small": see docs/METHOD.md
    small_filters: bool = False      # prompt-echo, near-copy and degenerate-text filters
    near_copy_threshold: float = 0.7
    rounds: int = 40
    per_round: int = 10
    gen_temperature: float = 0.7
    gen_top_k: int = 40
    gen_top_p: float = 1.0
    gen_max_tokens: int = 500
    max_low_quality: int = 10
    context_cutoff: int = 3000       # prompt token limit, as the reference code
    # filters (section 3)
    input_length_filter: bool = True
    output_length_filter: bool = False
    length_sigma_floor: float = 0.0  # sigma >= this x mu in the length windows (0: the paper)
    noise_filter: bool = True
    # annotation (section 4)
    n: int = 10
    best_of: int = 20                # 0: draw only n
    ann_temperature: float = 0.2
    ann_top_k: int = 10
    ann_max_tokens: int = 500
    seed_answer_budget: bool = False  # cap answers at 2x the longest seed output + 16 tokens
    min_frequency: float = 0.3
    balance_classes: bool = True
    min_labels: int = 1              # fewer distinct labels than this: class balancing keeps none
    seed: int = 0

    @classmethod
    def defaults_for(cls, task_type: str, mode: str = "paper") -> "RunParams":
        if mode not in MODES:
            raise ValueError(f"unknown input-generation mode {mode!r}")
        if task_type == "classification":
            p = cls()
        else:
            p = cls(rounds=20, gen_temperature=0.9, input_length_filter=False,
                    output_length_filter=True)
        if mode == "small":
            p = replace(p, **SMALL_MODE[task_type])
        return p

    def override(self, **changes) -> "RunParams":
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown run parameter(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
