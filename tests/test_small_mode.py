"""The small-model input-generation mode, its filters and the annotation sanity checks."""

from sgtui.config import RunParams
from sgtui.filters import DegenerateFilter, FormFilter, NearCopyFilter, PromptEchoFilter
from sgtui.input_generation import InputGenerator
from sgtui.paths import REPO_DATA
from sgtui.pipeline import annotation_warnings
from sgtui.prompts import SMALL_STOPS, small_input_prompt
from sgtui.task import load_task

CLS = load_task(REPO_DATA / "tasks" / "sentiment.toml")
GEN = load_task(REPO_DATA / "tasks" / "formal-rewrite.toml")


def test_generation_prompt_lists_inputs_and_leaves_an_open_item():
    text = small_input_prompt(GEN, [(x, None) for x in GEN.seed_inputs])
    assert text.startswith(GEN.instruction)
    assert text.endswith("Input:")
    assert text.count("\n###\n") == len(GEN.seed_inputs)


def test_classification_prompt_groups_by_label_and_ends_under_pseudo_label():
    items = [(e.input, e.output) for e in CLS.examples]
    text = small_input_prompt(CLS, items, "negative")
    last_group = text.rsplit('Inputs whose answer is "', 1)[1]
    assert last_group.startswith('negative"')
    assert "Stopped charging" in last_group and "kettle" not in last_group
    assert text.endswith("Input:")


def test_small_mode_sets_stops_and_max_tokens_from_seeds():
    p = RunParams.defaults_for("generation", "small")
    ig = InputGenerator(GEN, p, count_tokens=lambda s: len(s.split()))
    assert ig.stop == SMALL_STOPS
    longest = max(len(x.split()) for x in GEN.seed_inputs)
    assert ig.max_tokens == int(longest * 1.5) + 8
    pr = ig.build_prompt(0, 0, [("a pool input", None)])
    assert pr.max_tokens == ig.max_tokens and pr.stop == SMALL_STOPS
    # the same slot builds the same prompt (resume)
    assert ig.build_prompt(0, 0, [("a pool input", None)]).text == pr.text


def test_paper_mode_is_unchanged():
    p = RunParams.defaults_for("classification", "paper")
    ig = InputGenerator(CLS, p)
    pr = ig.build_prompt(1, 3, [])
    assert "InputGenerator" in pr.text and pr.text.endswith("[input]=\n")
    assert pr.pseudo_label in CLS.labels and pr.stop == ()


def test_prompt_echo():
    f = PromptEchoFilter("Rewrite the casual sentence so that it is polite and formal.")
    assert f("[input] = something") and f("Input: x") and f("See ### here")
    assert "instruction" in f("Rewrite the casual sentence so that it is polite and formal please")
    assert f("Could you close the door?") is None


def test_near_copy():
    f = NearCopyFilter(["can u send me the file asap"], 0.7)
    assert f("can u send me the file asap pls")
    assert f("where is the nearest train station") is None
    f.add("where is the nearest train station")
    assert f("where is the nearest train station now")


def test_degenerate():
    f = DegenerateFilter()
    assert f("<<5.2.1.3.3.4.4.5.6.7.8.1.2>>")
    assert f("the cat the cat the cat the cat the cat the cat the cat the cat")
    assert f("aaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    assert f("The kettle boils fast and looks great on the counter.") is None
    assert f("Call me at 555 1234 tomorrow please") is None


def test_form_takes_the_fields_every_seed_input_has():
    seeds = [
        "Sentence1: pesticides cause pollution. \nSentence2: pollution can harm animals.",
        "Sentence1: running needs energy. Note: a hint.\nSentence2: a marathon needs energy.",
    ]
    f = FormFilter.from_seeds(seeds)
    assert f.fields == ("Sentence1", "Sentence2")  # "Note:" is in one seed only
    assert f("Sentence1: rain makes soil. \nSentence2: soil holds water.") is None
    assert "'Sentence2:'" in f("Sentence1: there are three legs in a car. Your answer is not")
    assert "more than once" in f("Sentence1: a. Sentence2: b. Sentence2: c.")
    assert "order" in f("Sentence2: a tree. \nSentence1: a house.")
    either = FormFilter.from_seeds(["A: x. B: y.", "B: y. A: x."])
    assert either.fields == ("A", "B") and either("B: z. A: w.") is None
    # the NI spellings: numbered with a space, lower case
    assert FormFilter.from_seeds(
        ["Sentence 1: a. Sentence 2: b.", "Sentence 1: c. Sentence 2: d."]
    ).fields == (
        "Sentence 1",
        "Sentence 2",
    )
    assert FormFilter.from_seeds(
        ["claim: x.\nperspective: y.", "claim: z.\nperspective: w."]
    ).fields == (
        "claim",
        "perspective",
    )


def test_form_is_off_without_shared_fields():
    assert FormFilter.from_seeds(GEN.seed_inputs).fields == ()
    assert FormFilter.from_seeds(["Fact: one seed cannot tell a field from prose."]).fields == ()
    assert FormFilter.from_seeds(["at 10:30 we met", "http://example.org"]).fields == ()
    f = FormFilter.from_seeds(GEN.seed_inputs)
    assert f("anything at all: even with a colon") is None


def test_form_filter_checks_the_form_of_an_input():
    from sgtui.task import Example, Task

    t = Task(
        "pairs",
        "generation",
        "Name a word the two sentences share.",
        [
            Example("Sentence1: a b. \nSentence2: b c.", "b."),
            Example("Sentence1: d e. \nSentence2: e f.", "e."),
        ],
    )
    small = RunParams.defaults_for("generation", "small")
    ig = InputGenerator(t, small.override(form_filter=True))
    dynamic = ig.round_filters([], [])
    assert ig.check("Sentence1: the sun is hot.", dynamic)[1] == "form"
    assert ig.check("Sentence1: the sun is hot. \nSentence2: hot tea.", dynamic)[1] is None
    # off by default (docs/METHOD.md, "Selectable, off by default")
    default = InputGenerator(t, small)
    assert default.check("Sentence1: the sun is hot.", default.round_filters([], []))[1] is None


def test_annotation_warnings():
    kept = [{"label": "neutral", "input": f"x{i}", "output": "neutral"} for i in range(9)]
    kept.append({"label": "yes", "input": "y", "output": "yes"})
    from sgtui.task import Example, Task

    t = Task(
        "t",
        "classification",
        "i",
        [Example("a", "neutral"), Example("b", "yes")],
        labels=["neutral", "yes"],
    )
    assert "'neutral' to 9 of 10" in annotation_warnings(t, kept)[0]
    g = Task("g", "generation", "i", [Example("a", "b"), Example("c", "d")])
    copies = [{"input": f"text number {i}", "output": f"text number {i}"} for i in range(6)]
    assert "copied its input for 6 of 6" in annotation_warnings(g, copies)[0]
    assert annotation_warnings(g, []) == [
        "no sample survived annotation; there is nothing to train on"
    ]


def test_conditioning_annotator_labels_each_input_with_its_pseudo_label(llama, tmp_path):
    """A real run of the bundled model: `--annotator conditioning` draws no answers; each kept
    input is labelled with the label its prompt asked for, and the classes are balanced."""
    from sgtui.store import Store
    from sgtui.synthesis import create_run, run_synthesis

    store = Store(tmp_path / "c.db")
    params = RunParams.defaults_for("classification", "small").override(
        rounds=2, annotator="conditioning"
    )
    rid = create_run(store, CLS, params, "model.gguf", "llama-cpp")
    summary = run_synthesis(store, rid, llama, lambda e: None)
    annotated = store.annotated(rid)
    assert annotated, "no input survived the input filters"
    for s in annotated:
        assert s["candidates"] == [] and s["pseudo_label"] in CLS.labels
        assert s["label"] == s["output"] == s["pseudo_label"]
    pairs = store.training_pairs(rid)
    labels = [p["label"] if isinstance(p, dict) and "label" in p else None for p in pairs]
    kept = store.annotated(rid, kept_only=True)
    counts = {lab: sum(1 for s in kept if s["label"] == lab) for lab in {s["label"] for s in kept}}
    assert len(set(counts.values())) <= 1, counts  # balanced by the conditioning label
    assert summary["kept"] == len(kept) and labels is not None


def test_channel_annotator_takes_the_label_under_which_the_input_is_likeliest(tmp_path):
    """A real run of the bundled model with `--annotator channel`: every annotated input gets
    the label whose input-generation prompt makes it likeliest (log P(input | label) per
    token, scored by the backend), and each label's score is stored with the sample."""
    import backends
    from sgtui.channel import channel_labels
    from sgtui.paths import bundled_model
    from sgtui.store import Store
    from sgtui.synthesis import create_run, run_synthesis

    gen = backends.load_generator("llama-cpp", str(bundled_model()), n_threads=1)
    try:
        store = Store(tmp_path / "ch.db")
        params = RunParams.defaults_for("classification", "small").override(
            rounds=1, per_round=4, annotator="channel", balance_classes=False
        )
        rid = create_run(store, CLS, params, "model.gguf", "llama-cpp")
        run_synthesis(store, rid, gen, lambda e: None)
        annotated = store.annotated(rid)
        assert annotated, "no input survived the input filters"
        for s in annotated:
            scores = s["votes"]
            assert set(scores) == set(CLS.labels) and s["candidates"] == []
            assert s["label"] == s["output"] == max(scores, key=scores.get)
        # the stored choice is what the channel gives for the input alone
        again = channel_labels(gen, CLS, [annotated[0]["input"]])[0]
        assert again[0] == annotated[0]["label"]
        assert round(again[1][again[0]], 3) == annotated[0]["votes"][again[0]]
    finally:
        gen.close()
