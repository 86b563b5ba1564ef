"""A model without a chat template (a base model, or a GGUF whose conversion dropped it): the
completion layout ("Input: ..." / "Output:\n..."), with stops where the next turn starts, the
same bytes in training and inference, and llama.cpp's log kept off the terminal.

The model is the bundled GGUF with its chat template removed by the gguf package's own
gguf-new-metadata, so it renders prompts as a base model does here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from word_task import KEEP_EVERY_SAMPLE

from backends.base import SamplingParams
from backends.chat import COMPLETION_TURN_STOPS, render_completion, with_turn_stops

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def no_template(tmp_path_factory, bundled_model) -> str:
    out = tmp_path_factory.mktemp("base") / "no-template.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--force",
            "--remove-metadata",
            "tokenizer.chat_template",
            bundled_model,
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return str(out)


def test_turn_stops_are_added_only_without_a_template():
    p = SamplingParams(stop=("###",))
    assert with_turn_stops(p, "{{ messages }}") is p
    assert with_turn_stops(p, None).stop == ("###", *COMPLETION_TURN_STOPS)
    assert with_turn_stops(with_turn_stops(p, None), None).stop == ("###", *COMPLETION_TURN_STOPS)


def test_the_cue_is_where_the_demonstrations_put_their_answers():
    """The training text (prompt, then the answer) is how the layout writes a demonstration:
    the cue a base model sees at inference is the one it saw before every example answer."""
    from backends.base import ChatMessage
    from sgtui.prompts import meta_messages
    from sgtui.task import parse_task
    from sgtui.training import ChatFormat, render_pairs

    task = parse_task(
        {
            "name": "t",
            "type": "generation",
            "instruction": "Say it formally.",
            "examples": [
                {"input": "thx", "output": "Thank you."},
                {"input": "hi", "output": "Good day."},
            ],
        }
    )
    ((prompt, answer),) = render_pairs(task, [("yo", " Hello. ")], ChatFormat(None, "", "</s>"))
    assert prompt.endswith(
        "Input: [input] = hi\nOutput:\nGood day.\n\nInput: [input] = yo\nOutput:\n"
    )
    assert answer == "Hello.</s>"
    shown = render_completion(
        [*meta_messages(task, "yo"), ChatMessage("assistant", "Hello.")],
        add_generation_prompt=False,
    )
    assert shown.startswith(prompt + "Hello.")


@pytest.mark.parametrize("backend", ["llama-cpp", "llama-cpp-sequential"])
def test_an_answer_stops_where_the_next_turn_starts(no_template, backend):
    """After a finished answer a model's likeliest continuation is the next "Input:" turn, which
    is what a base model runs on into. With a template the backend adds no stop (checked by
    pretending there is one), without one the text ends before the turn."""
    import backends
    from backends.base import ChatMessage

    gen = backends.load_generator(backend, no_template, n_threads=1)
    try:
        assert gen.chat_template is None
        turns = []
        for q, a in [
            ("Say the colour of the sky.", "Blue."),
            ("Say the colour of grass.", "Green."),
        ] * 3:
            turns += [ChatMessage("user", q), ChatMessage("assistant", a)]
        # as the model leaves it just after an answer
        prompt = gen.render_chat(turns, add_generation_prompt=False).rstrip("\n")
        assert prompt.endswith("Input: Say the colour of grass.\nOutput:\nGreen.")
        params = SamplingParams(temperature=0.0, max_tokens=30)
        (stopped,) = [c.text for c in gen.generate([prompt], params)]
        gen.chat_template = "a template of its own"  # as if the model had one: no added stop
        (ran_on,) = [c.text for c in gen.generate([prompt], params)]
    finally:
        gen.close()
    assert ran_on.lstrip("\n").startswith("Input:"), ran_on  # it runs on into the next turn
    assert "Input:" not in stopped, stopped


@pytest.mark.slow
def test_a_run_on_it_keeps_samples_and_prints_no_llama_log(no_template, tmp_path):
    env = {**os.environ, "SGTUI_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgtui",
            "generate",
            str(ROOT / "data" / "tasks" / "formal-rewrite.toml"),
            "--model",
            no_template,
            "--rounds",
            "1",
            "--per-round",
            "3",
            *KEEP_EVERY_SAMPLE,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout + out.stderr
    assert "llama_" not in printed and "ggml_" not in printed, printed[-2000:]
    run_log = tmp_path / "home" / "sgtui.db.runs" / "run-1" / "llama.log"
    load_log = tmp_path / "home" / "llama.log"
    assert "llama_" in load_log.read_text()  # the model load's lines, in the data folder
    assert run_log.is_file()
    from sgtui.store import Store

    rows = Store(tmp_path / "home" / "sgtui.db").training_pairs(1)
    assert rows, printed[-2000:]
    assert not any("Input:" in r["output"] or "Output:" in r["output"] for r in rows)
