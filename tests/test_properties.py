"""Property tests: the task-file parser, every filter, the vote and the label mapper take any
input without crashing and return a valid result.

The parser may refuse a document, but only with an SgtuiError (a clear message, exit 2); a
document it accepts is a valid task that survives the round trips the app makes with it
(database JSON, the TUI editor's TOML)."""

from __future__ import annotations

import json

import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sgtui.annotation import map_to_label
from sgtui.errors import SgtuiError
from sgtui.filters import (
    DegenerateFilter,
    DuplicateFilter,
    EmptyFilter,
    FormFilter,
    LengthFilter,
    NearCopyFilter,
    NoiseFilter,
    PromptEchoFilter,
    first_failure,
    length_window,
    rouge_l,
)
from sgtui.task import MAX_EXAMPLES, MIN_EXAMPLES, TYPES, Task, load_task, parse_task, task_to_toml
from sgtui.vote import self_consistency_vote

FAST = settings(max_examples=150, deadline=None)
FILES = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- strategies -------------------------------------------------------------------------------
REGEX_META = ".^$*+?{}[]\\|()"
any_text = st.text(st.characters(codec=None), max_size=40)
# a lone surrogate: a JSON file can hold one as a \ud800 escape (st.text never makes them)
broken = st.builds(
    lambda a, c, b: a + c + b,
    st.text(max_size=4),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
    st.text(max_size=4),
)
meta_text = st.text(st.sampled_from(REGEX_META + "ab \n\"'"), min_size=1, max_size=12)
quoted = st.text(st.sampled_from("ab \"'\\\n\t\r{}[]=#"), min_size=1, max_size=30)
# a few kilobytes to a few hundred: built by repetition, which hypothesis shrinks well
huge = st.builds(
    lambda s, n: s * n,
    st.text(st.sampled_from('ab é\n"'), min_size=1, max_size=4),
    st.integers(1_000, 60_000),
)
texty = st.one_of(any_text, meta_text, quoted, st.text(max_size=200), huge, broken)
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texty)
junk = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def task_docs(draw) -> dict:
    """Documents near a valid task: each field is valid most of the time and wrong otherwise,
    so that both acceptance and every refusal are reached."""

    def pick(valid, wrong):
        return draw(valid if draw(st.integers(0, 14)) else wrong)

    filled = st.one_of(any_text, meta_text, quoted, huge).filter(lambda t: t.strip() != "")
    ttype = pick(st.sampled_from(TYPES), st.sampled_from(["Generation", "", None, 3]))
    labels = pick(
        st.lists(
            st.one_of(meta_text, quoted, any_text).filter(lambda t: t.strip()),
            min_size=2,
            max_size=5,
        ),
        st.lists(st.one_of(any_text, st.just("")), max_size=2),
    )
    n = pick(st.integers(MIN_EXAMPLES, MAX_EXAMPLES), st.sampled_from([0, 1, MAX_EXAMPLES + 1]))

    def output() -> object:
        if ttype == "classification" and labels:
            lab = draw(st.sampled_from(labels))
            return pick(st.sampled_from([lab, f" {lab}\n"]), st.one_of(texty, junk))
        return pick(filled, st.one_of(texty, junk))

    examples = [
        {"input": pick(filled, st.one_of(texty, junk)), "output": output()} for _ in range(n)
    ]
    doc: dict = {
        "name": pick(filled, st.one_of(texty, junk)),
        "type": ttype,
        "instruction": pick(filled, st.one_of(texty, junk)),
        "examples": examples,
    }
    if ttype == "classification" or draw(st.integers(0, 9)) == 0:
        doc["labels"] = pick(st.just(labels), junk)
    if draw(st.booleans()):
        doc["extra_noise_terms"] = pick(
            st.lists(st.one_of(meta_text, any_text).filter(bool), max_size=4), junk
        )
    if draw(st.booleans()):
        doc["metric"] = pick(
            st.sampled_from(["rouge", "exact_match"]), st.one_of(junk, st.just("bleu"))
        )
    if draw(st.booleans()):  # the Natural-Instructions spellings
        doc["task_name"] = doc.pop("name")
        if doc["type"] in TYPES and draw(st.booleans()):
            doc["is_classification"] = doc.pop("type") == "classification"
    if draw(st.integers(0, 9)) == 0:
        doc.pop(draw(st.sampled_from(sorted(doc))))
    return doc


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_valid(task: Task) -> None:
    """What the rest of sgtui relies on when a task was accepted."""
    assert isinstance(task, Task)
    assert task.type in TYPES and task.is_classification == (task.type == "classification")
    assert task.name and task.name == task.name.strip()
    assert task.instruction and task.instruction == task.instruction.strip()
    assert MIN_EXAMPLES <= len(task.examples) <= MAX_EXAMPLES
    for ex in task.examples:
        assert isinstance(ex.input, str) and ex.input.strip()
        assert isinstance(ex.output, str) and ex.output.strip()
    if task.is_classification:
        assert len(task.labels) >= 2 and len(set(task.labels)) == len(task.labels)
        assert all(lab and lab == lab.strip() for lab in task.labels)
        assert all(ex.output.strip() in task.labels for ex in task.examples)
    else:
        assert task.labels == []
    assert all(isinstance(t, str) and t for t in task.extra_noise_terms)
    assert task.metric in ("rouge", "exact_match")
    # the database stores it as UTF-8 JSON; reading it back gives the same task
    stored = task.to_json()
    assert _storable(stored)
    again = parse_task(json.loads(stored), task.source)
    assert again == task


def parse_or_refuse(doc: object, source: str = "<task>") -> Task | None:
    try:
        task = parse_task(doc, source)
    except SgtuiError as e:
        assert e.message and e.fix, e  # a refusal always says what to do
        return None
    check_valid(task)
    return task


# -- the parser ---------------------------------------------------------------------------------
@FAST
@given(task_docs())
def test_parse_task_near_valid(doc):
    parse_or_refuse(doc)


@FAST
@given(junk)
def test_parse_task_any_value(doc):
    parse_or_refuse(doc)


def test_the_strategy_reaches_valid_tasks():
    """Guard against a strategy that only ever produces refusals."""
    accepted = {"n": 0}

    @settings(max_examples=300, deadline=None)
    @given(task_docs())
    def count(doc):
        if parse_or_refuse(doc) is not None:
            accepted["n"] += 1

    count()
    assert accepted["n"] >= 20


def _toml_safe(value):
    """TOML has no null: drop None, as a person writing the file would leave the key out."""
    if isinstance(value, dict):
        return {str(k): _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_safe(v) for v in value if v is not None]
    return value


@FILES
@given(doc=task_docs(), fmt=st.sampled_from(["json", "json-ascii", "toml"]))
def test_load_task_files(tmp_path, doc, fmt):
    if fmt == "toml":
        doc = _toml_safe(doc)
        assume(all(_storable(s) for s in _strings(doc)))
        path = tmp_path / "t.toml"
        path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    else:
        path = tmp_path / "t.json"
        text = json.dumps(doc, ensure_ascii=(fmt == "json-ascii"))
        if not _storable(text):
            text = json.dumps(doc)  # lone surrogates travel as \ud800 escapes
        path.write_text(text, encoding="utf-8")
    try:
        task = load_task(path)
    except SgtuiError as e:
        assert e.message and e.fix and e.path
        return
    check_valid(task)
    # the TUI's editor saves tasks as TOML: what it writes must load back unchanged
    path.with_suffix(".toml").write_text(task_to_toml(task), encoding="utf-8")
    again = load_task(path.with_suffix(".toml"))
    assert again.to_dict() == task.to_dict()


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@FILES
@given(
    raw=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    suffix=st.sampled_from([".toml", ".json"]),
)
def test_load_task_garbage_bytes(tmp_path, raw, suffix):
    path = tmp_path / f"g{suffix}"
    path.write_bytes(raw)
    try:
        check_valid(load_task(path))
    except SgtuiError as e:
        assert e.message and e.fix


@pytest.mark.parametrize("char", ["\x7f", "\x00", "\x1f", "\u2028", "\ufeff", '"', "\\"])
def test_task_to_toml_round_trips_awkward_characters(char):
    task = parse_task(
        {
            "name": f"n{char}",
            "type": "classification",
            "instruction": f"say {char} yes",
            "labels": [f"a{char}", "b"],
            "examples": [
                {"input": f"x{char}\ny", "output": f"a{char}"},
                {"input": "z", "output": "b"},
            ],
        }
    )
    import tomllib

    assert parse_task(tomllib.loads(task_to_toml(task))).to_dict() == task.to_dict()


def test_lone_surrogate_is_refused_clearly():
    doc = {
        "name": "x",
        "type": "generation",
        "instruction": "do \ud800 it",
        "examples": [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}],
    }
    with pytest.raises(SgtuiError, match="Unicode"):
        parse_task(doc)


# -- the filters --------------------------------------------------------------------------------
# rouge-based filters are quadratic in words: inputs stay at generated-text sizes
sized = st.one_of(st.text(max_size=300), meta_text, quoted, any_text, broken)
seed_texts = st.lists(sized, min_size=1, max_size=10)


def _reason(r) -> None:
    assert r is None or (isinstance(r, str) and r)


@FAST
@given(st.one_of(st.none(), sized))
def test_empty_filter(text):
    r = EmptyFilter()(text)
    assert (r is not None) == (text is None or not text.strip())


@FAST
@given(seeds=seed_texts, text=st.one_of(sized, huge))
def test_length_filter(seeds, text):
    lo, hi = length_window(seeds)
    assert lo is None or lo > 0
    f = LengthFilter.from_seeds(seeds)
    r = f(text)
    _reason(r)
    ok = (lo is None or len(text) >= lo) and len(text) < hi
    assert (r is None) == ok


@FAST
@given(
    extra=st.lists(st.one_of(meta_text, broken, any_text.filter(bool)), max_size=5),
    text=st.one_of(sized, huge),
)
def test_noise_filter(extra, text):
    f = NoiseFilter.for_task(extra)
    r = f(text)
    _reason(r)
    assert (r is None) == (not any(t in text for t in f.terms))
    for term in extra:
        assert f(f"x{term}y") is not None


@FAST
@given(seen=st.lists(sized, max_size=6), text=sized)
def test_duplicate_filter(seen, text):
    f = DuplicateFilter(seen)
    r = f(text)
    _reason(r)
    assert (r is not None) == (text.strip() in {s.strip() for s in seen})
    f.add(text)
    assert f(text) is not None and f(f"  {text}\n") is not None


@FAST
@given(a=sized, b=sized)
def test_rouge_l_bounds(a, b):
    score = rouge_l(a, b)
    assert 0.0 <= score <= 1.0
    assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))


@FAST
@given(instruction=sized, text=sized)
def test_prompt_echo_filter(instruction, text):
    _reason(PromptEchoFilter(instruction)(text))


@FAST
@given(refs=st.lists(sized, max_size=5), text=sized)
def test_near_copy_filter(refs, text):
    f = NearCopyFilter(refs)
    r = f(text)
    _reason(r)
    if text in refs and rouge_l(text, text) == 1.0:
        assert r is not None


@FAST
@given(st.one_of(sized, st.builds(lambda w, n: " ".join([w] * n), meta_text, st.integers(0, 400))))
def test_degenerate_filter(text):
    _reason(DegenerateFilter()(text))


field_text = st.text(st.sampled_from("Sentence 12: ab.\n"), max_size=40)


@FAST
@given(
    seeds=st.lists(st.one_of(sized, field_text), min_size=1, max_size=5),
    text=st.one_of(sized, field_text),
)
def test_form_filter(seeds, text):
    f = FormFilter.from_seeds(seeds)
    _reason(f(text))
    for s in seeds:  # every example input has the form its examples share
        assert f(s) is None


@FAST
@given(text=sized, seeds=seed_texts, extra=st.lists(meta_text, max_size=3))
def test_first_failure(text, seeds, extra):
    filters = [
        EmptyFilter(),
        LengthFilter.from_seeds(seeds),
        NoiseFilter.for_task(extra),
        DuplicateFilter(seeds),
        DegenerateFilter(),
    ]
    got = first_failure(text, filters)
    if got is not None:
        name, reason = got
        assert name in {f.name for f in filters} and reason
        first = next(f for f in filters if f(text))
        assert first.name == name


# -- the vote and the label mapper ---------------------------------------------------------------
candidates = st.lists(
    st.one_of(st.none(), st.sampled_from(["yes", " yes ", "no", "", "  "]), sized), max_size=12
)


@FAST
@given(
    cands=candidates,
    min_frequency=st.floats(0, 1),
    extra=st.lists(meta_text, max_size=2),
    seeds=seed_texts,
)
def test_self_consistency_vote(cands, min_frequency, extra, seeds):
    filters = [LengthFilter.from_seeds(seeds, "output_length"), NoiseFilter.for_task(extra)]
    r = self_consistency_vote(cands, filters, min_frequency)
    assert r.survivors + sum(r.dropped.values()) == len(cands)
    assert sum(r.votes.values()) == r.survivors
    assert 0 <= r.count <= r.survivors and 0.0 <= r.share <= 1.0
    if r.winner is not None:
        assert r.winner in r.votes and r.count == max(r.votes.values())
        assert r.share >= min_frequency and not r.reason
        assert r.winner == r.winner.strip() and r.winner
    elif cands:
        assert r.reason
    # order of the candidates changes only tie-breaks, never the top count
    again = self_consistency_vote(list(reversed(cands)), filters, min_frequency)
    assert again.count == r.count and again.survivors == r.survivors


@FAST
@given(answer=st.one_of(sized, huge), labels=st.lists(st.one_of(meta_text, sized), max_size=6))
def test_map_to_label(answer, labels):
    got = map_to_label(answer, labels)
    assert got is None or got in labels
    if answer.strip() in labels:
        assert got == answer.strip()


@FAST
@given(
    labels=st.lists(meta_text.map(str.strip).filter(bool), min_size=2, max_size=5, unique=True),
    pick=st.integers(0, 4),
)
def test_map_to_label_finds_a_metacharacter_label(labels, pick):
    lab = labels[pick % len(labels)]
    got = map_to_label(f"The answer is {lab}.", labels)
    assert got is None or got in labels
    assert map_to_label(lab, labels) == lab
