"""The task: an instruction, 2-10 examples, a type, labels for classification.

Task files are TOML (this project's format, see docs/TASKS.md) or JSON in the layout of the
Natural-Instructions task.json files. Both are parsed with safe parsers (tomllib, json): a task
file is data, never code.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import SgtuiError
from .paths import shared_ni

TYPES = ("generation", "classification")
METRICS = {"generation": "rouge", "classification": "exact_match"}
MIN_EXAMPLES, MAX_EXAMPLES = 2, 10
# Instruction plus examples, in characters: about 50k tokens, more than a local model's prompt
# can hold with room left for the answers. Refused before any model is loaded.
MAX_TASK_CHARS = 200_000
# The paper's default extra noise terms for every task (SELF_GUIDE.md section 3.2).
DEFAULT_EXTRA_NOISE = ["input", "output", "\n\n", "\\_\\_"]


@dataclass
class Example:
    input: str
    output: str


@dataclass
class Task:
    name: str
    type: str
    instruction: str
    examples: list[Example]
    labels: list[str] = field(default_factory=list)
    extra_noise_terms: list[str] = field(default_factory=lambda: list(DEFAULT_EXTRA_NOISE))
    metric: str = ""
    source: str = ""

    @property
    def is_classification(self) -> bool:
        return self.type == "classification"

    @property
    def seed_inputs(self) -> list[str]:
        return [e.input for e in self.examples]

    @property
    def seed_outputs(self) -> list[str]:
        return [e.output for e in self.examples]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: object, source: str = "<task>") -> "Task":
        return parse_task(data, source)


def _fail(source: str, message: str, fix: str) -> SgtuiError:
    return SgtuiError(message, path=source, fix=fix)


def _text(data: dict, key: str, source: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(source, f"missing field '{key}'", f"add a '{key} = \"...\"' line")
        return ""
    if not isinstance(value, str):
        raise _fail(
            source,
            f"field '{key}' must be text, got {type(value).__name__}",
            f"write {key} as a quoted string",
        )
    return value


def parse_task(data: object, source: str = "<task>") -> Task:
    """Validate a parsed task document. Raises SgtuiError naming the field and the fix."""
    if not isinstance(data, dict):
        raise _fail(
            source,
            "a task file must hold a table of fields",
            "see data/tasks/*.toml for the format",
        )
    name = data.get("name", data.get("task_id", data.get("task_name")))
    if name is None:
        name = Path(source).stem if source and source != "<task>" else None
    if name is not None and not isinstance(name, str):
        raise _fail(
            source,
            f"field 'name' must be text, got {type(name).__name__}",
            'write the name as a quoted string: name = "my-task"',
        )
    if name is None or not name.strip():
        raise _fail(source, "missing field 'name'", "add a 'name = \"my-task\"' line")
    ttype = data.get("type")
    if ttype is None and "is_classification" in data:
        ttype = "classification" if data["is_classification"] else "generation"
    if ttype not in TYPES:
        raise _fail(
            source,
            f"field 'type' must be 'generation' or 'classification', got {ttype!r}",
            'set type = "generation" or type = "classification"',
        )
    instruction = _text(data, "instruction", source).strip()
    if not instruction:
        raise _fail(
            source, "field 'instruction' is empty", "describe the task in one or two sentences"
        )

    raw_examples = data.get("examples")
    if not isinstance(raw_examples, list):
        raise _fail(
            source,
            "missing field 'examples' (a list of {input, output})",
            "add [[examples]] tables with input and output",
        )
    examples: list[Example] = []
    for i, ex in enumerate(raw_examples, 1):
        if not isinstance(ex, dict):
            raise _fail(
                source,
                f"example {i} is not a table with input and output",
                "write each example as [[examples]] with input = ... and output = ...",
            )
        inp, out = ex.get("input"), ex.get("output")
        if not isinstance(inp, str) or not isinstance(out, str):
            raise _fail(
                source,
                f"example {i} needs text fields 'input' and 'output'",
                "give every example an input and an output string",
            )
        if not inp.strip() or not out.strip():
            raise _fail(
                source, f"example {i} has an empty input or output", "fill in both input and output"
            )
        examples.append(Example(inp, out))
    if not MIN_EXAMPLES <= len(examples) <= MAX_EXAMPLES:
        raise _fail(
            source,
            f"a task needs {MIN_EXAMPLES} to {MAX_EXAMPLES} examples, this one has {len(examples)}",
            "add or remove [[examples]] (about 3 works well)",
        )

    labels = data.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise _fail(
            source, "field 'labels' must be a list of strings", 'write labels = ["yes", "no"]'
        )
    labels = [lab for lab in dict.fromkeys(x.strip() for x in labels) if lab]
    if ttype == "classification":
        if len(labels) < 2:
            raise _fail(
                source,
                "a classification task needs at least 2 labels",
                'add labels = ["...", "..."]',
            )
        for i, ex in enumerate(examples, 1):
            if ex.output.strip() not in labels:
                raise _fail(
                    source,
                    f"example {i}'s output {ex.output.strip()!r} is not one of the labels {labels}",
                    "make every example's output one of the labels",
                )
    elif labels:
        raise _fail(
            source,
            "a generation task has no labels",
            "remove 'labels' or set type = \"classification\"",
        )

    noise = data.get("extra_noise_terms", data.get("optional_list"))
    if noise is None:
        noise = list(DEFAULT_EXTRA_NOISE)
    if not isinstance(noise, list) or not all(isinstance(x, str) and x for x in noise):
        raise _fail(
            source,
            "field 'extra_noise_terms' must be a list of non-empty strings",
            'write extra_noise_terms = ["input", "output"]',
        )
    metric = data.get("metric") or METRICS[ttype]
    if metric not in ("rouge", "exact_match"):
        raise _fail(
            source,
            f"field 'metric' must be 'rouge' or 'exact_match', got {metric!r}",
            "remove 'metric' to use the default for the task type",
        )
    size = len(instruction) + sum(len(e.input) + len(e.output) for e in examples)
    if size > MAX_TASK_CHARS:
        raise _fail(
            source,
            f"the instruction and examples are {size:,} characters long, more "
            f"than a model's prompt can hold (at most {MAX_TASK_CHARS:,})",
            "shorten the instruction and the examples to a few sentences each",
        )
    task = Task(
        name=name.strip(),
        type=ttype,
        instruction=instruction,
        examples=examples,
        labels=labels,
        extra_noise_terms=noise,
        metric=metric,
        source=source,
    )
    try:
        task.to_json().encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate, e.g. a "\ud800" escape in JSON
        raise _fail(
            source,
            f"the task holds text that is not valid Unicode ({e.object[e.start]!r})",
            "remove the broken character (a lone \\uD800-\\uDFFF escape)",
        ) from None
    return task


def load_task(path: str | Path) -> Task:
    """Load a task file (.toml, or .json as in Natural-Instructions), or an NI task folder."""
    p = Path(path)
    if p.is_dir() and (p / "task.json").is_file():
        p = p / "task.json"
    source = str(path if not p.name == "task.json" else p)
    if not p.exists():
        raise SgtuiError(
            "task file not found",
            path=str(path),
            fix="give a .toml task file (see data/tasks/) or an NI task folder",
        )
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SgtuiError(
            f"cannot read the task file: {e.strerror}",
            path=source,
            fix="check the path and its permissions",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SgtuiError("the task file is not UTF-8 text", path=source, fix="save it as UTF-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise SgtuiError(
            f"the task file does not parse: {e}",
            path=source,
            fix="fix the syntax at the place named above",
        )
    return parse_task(data, source)


def task_to_toml(task: Task) -> str:
    """Serialise a task as this project's TOML format (used by the TUI's task editor)."""

    def q(s: str) -> str:
        # a JSON string is a TOML basic string, except that TOML also forbids a raw DEL
        return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")

    lines = [
        f"name = {q(task.name)}",
        f"type = {q(task.type)}",
        f"instruction = {q(task.instruction)}",
    ]
    if task.labels:
        lines.append("labels = [" + ", ".join(q(x) for x in task.labels) + "]")
    lines.append("extra_noise_terms = [" + ", ".join(q(x) for x in task.extra_noise_terms) + "]")
    lines.append(f"metric = {q(task.metric)}")
    for ex in task.examples:
        lines += ["", "[[examples]]", f"input = {q(ex.input)}", f"output = {q(ex.output)}"]
    return "\n".join(lines) + "\n"


# -- what a command line names as a task, and the rows that come with it ----------------------
def resolve_task_spec(spec: str | Path) -> Path:
    """A task file, an NI task folder, or an NI task id such as task937 (a folder of the
    Natural-Instructions tasks beside the project)."""
    p = Path(spec)
    ni = shared_ni()
    if not p.exists() and ni is not None and "/" not in str(spec) and (ni / str(spec)).is_dir():
        return ni / str(spec)
    return p


def load_task_spec(spec: str | Path) -> Task:
    return load_task(resolve_task_spec(spec))


def _split_beside(task_path: str | Path, suffix: str, ni_split: str) -> str | None:
    p = Path(task_path)
    beside = p.with_name(p.stem + suffix)
    if p.is_file() and beside.is_file():
        return str(beside)  # a task file's own rows (docs/TASKS.md)
    folder = p if p.is_dir() else p.parent
    if (folder / f"{ni_split}.jsonl").is_file() and (folder / "task.json").is_file():
        return f"{folder}:{ni_split}"
    return None


def default_eval_split(task_path: str | Path) -> str | None:
    """The rows a task is scored on by default: NAME.eval.jsonl beside a task file, or an NI
    task's test split; None when it has neither."""
    return _split_beside(task_path, ".eval.jsonl", "test")


def default_val_split(task_path: str | Path) -> str | None:
    """Validation rows the task brings: NAME.val.jsonl beside a task file, or an NI task's
    validation split. Never the rows `run` reports its scores on."""
    return _split_beside(task_path, ".val.jsonl", "validation")
