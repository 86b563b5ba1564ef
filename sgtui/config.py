"""Run parameters: one typed object, the paper's defaults per task type, every field overridable.

Defaults follow SELF_GUIDE.md sections 2-4 and 7 (the "one parameter fits all" values the
reference pipelines use). Departures are listed in docs/METHOD.md.

Each field is declared once, with its metadata: the CLI flag (None: only the TUI form sets it),
the TUI label, the help text and the accepted range. The CLI's options, the TUI form's labels
and `RunParams.validate()` are all read from it, so the CLI and the TUI refuse the same values
with the same message. `sgtui.training.TrainParams` is declared the same way.
"""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields, replace

from .errors import SgtuiError

MODES = ("paper", "small")
DEFAULT_MODE = "small"

# The backends hand counts and token limits to llama.cpp as C ints.
C_INT_MAX = 2**31 - 1
# A round's prompts are built and queued at once, and the transformers backend draws the n
# candidates of an input as one batch: past these, a run exhausts memory instead of running.
MAX_PER_ROUND = 10_000
MAX_DRAWS = 1_000
MAX_SEED = 2**32 - 1

# The "small" mode for models that cannot follow the paper's long prompt (docs/METHOD.md).
SMALL_COMMON = dict(
    mode="small",
    small_filters=True,
    max_low_quality=3,
    length_sigma_floor=0.25,
    best_of=0,
    seed_answer_budget=True,
    min_labels=2,
    answer_filters=True,
)
CONSENSUS = ("exact", "mbr")
ANNOTATORS = ("vote", "conditioning", "channel")
# Rounds sized for a CPU: a default `sgtui run` of the bundled model takes minutes, not hours
# (bench/results/). More rounds give more data; pass --rounds.
SMALL_MODE: dict[str, dict] = {
    "classification": dict(SMALL_COMMON, rounds=20),
    # 1.1: the max-min winner of `sgtui search` over the input-generation temperature
    # (bench/results/search.md); the paper's 0.9 came last
    "generation": dict(SMALL_COMMON, rounds=10, gen_temperature=1.1, consensus="mbr"),
}


def param(
    default,
    *,
    flag: str | None = None,
    label: str | None = None,
    help: str = "",
    min: float | None = None,
    above: float | None = None,
    max: float | None = None,
    below: float | None = None,
    choices: tuple[str, ...] | None = None,
):
    """A parameters field (RunParams, TrainParams) with its declaration. `min` and `max` are
    inclusive, `above` and `below` exclusive; a float field must also be finite, an int field
    at most C_INT_MAX."""
    return field(
        default=default,
        metadata={
            "flag": flag,
            "label": label,
            "help": help,
            "min": min,
            "above": above,
            "max": max,
            "below": below,
            "choices": choices,
        },
    )


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _low_text(m) -> str:
    if m["above"] is not None:
        return f"above {_number(m['above'])}"
    return f"at least {_number(m['min'])}" if m["min"] is not None else ""


def _high_text(m) -> str:
    if m["below"] is not None:
        return f"below {_number(m['below'])}"
    return f"at most {_number(m['max'])}" if m["max"] is not None else ""


def range_text(f: Field) -> str:
    """The accepted values of a field, in words: "at least 1", "between 0 and 1"..."""
    m = f.metadata
    if m["choices"]:
        return "one of " + ", ".join(m["choices"])
    if isinstance(f.default, bool):
        return "true or false"
    if m["min"] is not None and m["max"] is not None:
        return f"between {_number(m['min'])} and {_number(m['max'])}"
    low, high = _low_text(m), _high_text(m)
    if low and high:
        return f"{low} and {high}"
    return low or high or "any number"


def param_name(f: Field) -> str:
    """How messages name a field: its CLI flag, or the field's own name where it has none."""
    return f.metadata["flag"] or f.name


def field_problem(f: Field, value) -> str | None:
    """Why `value` is not acceptable for field `f`, or None when it is."""
    m, name, default = f.metadata, param_name(f), f.default
    if isinstance(default, bool) or m["choices"]:
        ok = isinstance(value, bool) if isinstance(default, bool) else value in m["choices"]
        return None if ok else f"{name} must be {range_text(f)} (got {value!r})"
    if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{name} must be a whole number, {range_text(f)} (got {value!r})"
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, {range_text(f)} (got {value!r})"
        if not math.isfinite(value):
            return f"{name} must be a finite number, {range_text(f)} (got {value})"
    if (m["min"] is not None and value < m["min"]) or (
        m["above"] is not None and value <= m["above"]
    ):
        what = range_text(f) if _high_text(m) else _low_text(m)
        return f"{name} must be {what} (got {_number(value)})"
    if (m["max"] is not None and value > m["max"]) or (
        m["below"] is not None and value >= m["below"]
    ):
        return f"{name} must be {range_text(f)} (got {_number(value)})"
    if isinstance(default, int) and m["max"] is None and m["below"] is None and value > C_INT_MAX:
        return f"{name} must be at most {C_INT_MAX} (got {value})"
    return None


def field_fix(f: Field) -> str:
    what = range_text(f)
    if not (f.metadata["choices"] or isinstance(f.default, bool)):
        what = "a value " + what
    if f.metadata["flag"]:
        return f"give {f.metadata['flag']} {what}, or leave it out"
    return f"give {f.name} {what}"


def check_fields(params) -> None:
    """Refuse the first field of a parameters dataclass whose value its declaration does not
    accept, naming the flag, the range and the value."""
    for f in fields(params):
        problem = field_problem(f, getattr(params, f.name))
        if problem:
            raise SgtuiError(problem, fix=field_fix(f))


@dataclass(frozen=True)
class RunParams:
    # input generation (section 2)
    mode: str = param(
        "paper",
        flag="--mode",
        choices=MODES,
        help="input-generation prompt: the paper's, or the one small models follow",
    )
    small_filters: bool = param(
        False,
        flag="--small-filters",
        label="small filters",
        help="prompt-echo, near-copy and degenerate-text filters",
    )
    form_filter: bool = param(
        False,
        flag="--form-filter",
        label="form filter",
        help="drop an input that lacks a field label every example input has "
        "('Sentence1:', 'Premise:'), repeats one, or reorders them",
    )
    near_copy_threshold: float = param(
        0.7, label="near-copy", min=0.0, max=1.0, help="ROUGE-L above which an input is a near copy"
    )
    rounds: int = param(40, flag="--rounds", min=1, help="input-generation rounds")
    per_round: int = param(
        10,
        flag="--per-round",
        label="per round",
        min=1,
        max=MAX_PER_ROUND,
        help="prompts per round",
    )
    gen_temperature: float = param(
        0.7,
        flag="--temperature",
        label="gen temp",
        min=0.0,
        help="input-generation temperature (0: greedy)",
    )
    gen_top_k: int = param(40, label="gen top_k", min=0, help="0: no top-k")
    gen_top_p: float = param(1.0, label="gen top_p", above=0.0, max=1.0)
    gen_max_tokens: int = param(
        500, flag="--gen-max-tokens", label="gen max tok", min=1, help="tokens per generated input"
    )
    max_low_quality: int = param(
        10, label="pool examples", min=1, help="earlier inputs shown in a prompt, at most"
    )
    context_cutoff: int = param(
        3000, label="prompt limit", min=1, help="prompt token limit, as the reference code"
    )
    # filters (section 3)
    input_length_filter: bool = param(True, flag="--input-length-filter", label="input length")
    output_length_filter: bool = param(False, flag="--output-length-filter", label="output length")
    # sigma >= this x mu in the length windows (0: the paper)
    length_sigma_floor: float = param(0.0, min=0.0)
    noise_filter: bool = param(True, flag="--noise-filter", label="noise filter")
    answer_filters: bool = param(
        False,
        flag="--answer-filters",
        label="answer filters",
        help="drop degenerate answers, assistant talk and answers far "
        "from their input (generation tasks)",
    )
    input_dependence: bool = param(
        False,
        flag="--input-dependence",
        label="input dependence",
        help="drop an answer about as likely after another input "
        "as after its own (generation tasks)",
    )
    min_dependence: float = param(
        0.5,
        flag="--min-dependence",
        label="min dependence",
        min=0.0,
        help="input dependence: the least share of the seed answers' dependence on their inputs",
    )
    # annotation (section 4)
    n: int = param(
        10, flag="--n", min=1, max=MAX_DRAWS, help="candidate answers per input for the vote"
    )
    best_of: int = param(
        20,
        flag="--best-of",
        label="best of",
        min=0,
        max=MAX_DRAWS,
        help="draw this many and keep the n most likely; 0: draw only n",
    )
    ann_temperature: float = param(0.2, label="ann temp", min=0.0)
    ann_top_k: int = param(10, label="ann top_k", min=0, help="0: no top-k")
    ann_max_tokens: int = param(
        500, flag="--ann-max-tokens", label="ann max tok", min=1, help="tokens per candidate answer"
    )
    # cap answers at 2x the longest seed output + 16 tokens
    seed_answer_budget: bool = param(False)
    min_frequency: float = param(
        0.3,
        flag="--min-frequency",
        label="vote min freq",
        min=0.0,
        max=1.0,
        help="the winner's least share of the vote",
    )
    consensus: str = param(
        "exact",
        flag="--consensus",
        label="consensus",
        choices=CONSENSUS,
        help="generation tasks: the exact-match vote (the paper), or the "
        "answer the others agree with most (minimum Bayes risk under "
        "ROUGE-L)",
    )
    min_agreement: float = param(
        0.5,
        flag="--min-agreement",
        label="mbr min agree",
        min=0.0,
        max=1.0,
        help="consensus mbr: the chosen answer's least mean ROUGE-L to the other answers",
    )
    annotator: str = param(
        "vote",
        flag="--annotator",
        label="annotator",
        choices=ANNOTATORS,
        help="classification tasks: the model's vote on each input, the "
        "label each input was generated for (no answers drawn), or the "
        "label under which the model finds the input likeliest",
    )
    balance_classes: bool = param(True, label="balance")
    # fewer distinct labels than this: class balancing keeps none
    min_labels: int = param(1, min=1)
    seed: int = param(
        0, flag="--seed", min=0, max=MAX_SEED, help="seeds every prompt's and every answer's draws"
    )

    @classmethod
    def defaults_for(cls, task_type: str, mode: str = "paper") -> "RunParams":
        if mode not in MODES:
            raise ValueError(f"unknown input-generation mode {mode!r}")
        if task_type == "classification":
            p = cls()
        else:
            p = cls(
                rounds=20, gen_temperature=0.9, input_length_filter=False, output_length_filter=True
            )
        if mode == "small":
            p = replace(p, **SMALL_MODE[task_type])
        return p

    def override(self, **changes) -> "RunParams":
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown run parameter(s): {', '.join(sorted(unknown))}")
        new = replace(self, **{k: v for k, v in changes.items() if v is not None})
        new.validate()
        return new

    def validate(self) -> None:
        """Refuse any value a run cannot use, naming the CLI flag (or the field) and its range.
        Raises SgtuiError; the CLI prints it and exits 2, the TUI form shows its message."""
        check_fields(self)
        if self.best_of and self.best_of < self.n:
            # the backends keep the n most likely of best_of draws: fewer draws than n is no
            # choice at all
            raise SgtuiError(
                f"--best-of must be 0 or at least --n, since best of must be at least n to keep "
                f"the n best draws (got {self.best_of} with --n {self.n})",
                fix=f"pass --best-of 0 (draw only n) or --best-of {self.n} or more",
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunParams":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def cli_fields() -> list[Field]:
    """The RunParams fields that have a command-line flag, in declaration order."""
    return [f for f in fields(RunParams) if f.metadata["flag"]]
