"""`sgtui export RUN --format ollama`: a folder with the LoRA GGUF and a Modelfile.

No Ollama here: the Modelfile is parsed, and llama.cpp is given what Ollama would give the model
(the same base, the same adapter, the TEMPLATE with the input in place, the stops) and must
answer as the evaluation did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from word_task import COLOURS, WORD, WORD_TASK

from sgtui import modelfile
from sgtui.store import Store
from sgtui.task import parse_task
from sgtui.training import ChatFormat

pytestmark = pytest.mark.usefixtures("shared_cache")

ROOT = Path(__file__).resolve().parent.parent

# the families' templates, cut down to what a one-system, several-turn conversation uses
TEMPLATES = {
    "llama3": "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
    "'<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>"
    "\n\n' }}{% endif %}",
    "gemma": "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == "
    "'assistant' else 'user' %}{{ '<start_of_turn>' + role + '\n' + m['content'] | trim "
    "+ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<start_of_turn>model\n' }}{% endif %}",
    "phi3": "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
    "mistral": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}"
    "{{ ' ' + m['content'] + eos_token }}{% else %}{{ '[INST] ' + m['content'] + "
    "' [/INST]' }}{% endif %}{% endfor %}",
}


def task():
    return parse_task(
        {
            "name": "Formal Rewrite!",
            "type": "generation",
            "instruction": "Rewrite {{it}} formally.",
            "examples": [
                {"input": "gonna be late", "output": "I will be late."},
                {"input": "u ok?", "output": "Are you well?"},
                {"input": "thx", "output": "Thank you."},
            ],
        }
    )


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_each_known_family_gets_its_stops_and_the_prompt_as_trained(family, tmp_path):
    fmt = ChatFormat(TEMPLATES[family], "<s>", "</s>", add_bos=True)
    base = tmp_path / "base.gguf"
    m = modelfile.build(task(), fmt, base)
    assert m.family == family and not m.notes
    parsed = modelfile.parse(m.text())
    assert parsed["FROM"] == [str(base.resolve())] and parsed["ADAPTER"] == ["./adapter.gguf"]
    stops = [json.loads(p.split(" ", 1)[1]) for p in parsed["PARAMETER"] if p.startswith("stop ")]
    assert stops[0] == "</s>" and set(modelfile.FAMILIES[family][1]) <= set(stops)
    assert "temperature 0" in parsed["PARAMETER"]
    # what Ollama renders for an input is byte for byte the training / evaluation prompt
    from sgtui.prompts import meta_messages

    (template,) = parsed["TEMPLATE"]
    assert template.count(modelfile.PROMPT) == 1
    for text in ("so late lol", "a {{weird}} one"):
        assert modelfile.prompt_for(template, text) == fmt.render(meta_messages(task(), text))


def test_no_template_uses_sgtuis_layout_and_an_unknown_one_says_so(tmp_path):
    from sgtui.prompts import meta_messages

    plain = modelfile.build(task(), ChatFormat(None, "<s>", "</s>"), tmp_path / "b.gguf")
    assert plain.family == "completion" and "\nInput:" in plain.stops and not plain.notes
    assert plain.template.endswith("Input: [input] = {{ .Prompt }}\nOutput:\n")
    assert modelfile.prompt_for(plain.template, "hey") == ChatFormat(None, "<s>", "</s>").render(
        meta_messages(task(), "hey")
    )
    odd = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### bot:"
    unknown = modelfile.build(task(), ChatFormat(odd, "", "<end>"), tmp_path / "b.gguf")
    assert unknown.family is None and unknown.stops == ["<end>"]
    assert "no family sgtui knows" in unknown.notes[0] and unknown.template is not None
    refusing = "{{ raise_exception('only user and assistant roles are supported') }}"
    none = modelfile.build(task(), ChatFormat(refusing, "", "<end>"), tmp_path / "b.gguf")
    assert none.template is None and "TEMPLATE" not in modelfile.parse(none.text())
    assert "written without a TEMPLATE" in none.notes[-1] and "only user and" in none.notes[-1]


def test_a_path_with_spaces_is_quoted_and_names_are_ollama_names(tmp_path):
    m = modelfile.build(task(), ChatFormat(None, "", "</s>"), tmp_path / "my models" / "b.gguf")
    assert f'FROM "{tmp_path / "my models" / "b.gguf"}"' in m.text()
    assert modelfile.model_name("Formal Rewrite!") == "sgtui-formal-rewrite"
    assert modelfile.model_name("???") == "sgtui-task"


def test_ollama_export_needs_a_gguf_base(trained, tmp_path):
    from sgtui.errors import SgtuiError
    from sgtui.export import export_run

    with pytest.raises(SgtuiError, match="needs the base model as a GGUF") as e:
        export_run(Store(trained.db), trained.run_id, "ollama", tmp_path / "o", base=str(tmp_path))
    assert "--base" in e.value.fix and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_ollama_export_answers_as_the_evaluation_did(trained, tmp_path, bundled_model, capsys):
    """Ten rows: the evaluation's greedy answers with the adapter, and llama.cpp given the
    Modelfile's base, adapter, rendered TEMPLATE and stops, are the same strings."""
    from llama_cpp import Llama

    import backends
    from sgtui.cli import main
    from sgtui.evaluation import evaluate

    out = tmp_path / "ollama"
    assert (
        main(
            [
                "export",
                str(trained.run_id),
                "--format",
                "ollama",
                "--db",
                str(trained.db),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"ollama create sgtui-colour-thing -f {out / 'Modelfile'}" in printed
    parsed = modelfile.parse((out / "Modelfile").read_text())
    (base,), (adapter,), (template,) = parsed["FROM"], parsed["ADAPTER"], parsed["TEMPLATE"]
    assert Path(base) == Path(bundled_model).resolve()
    adapter_path = out / adapter
    assert adapter_path.read_bytes()[:4] == b"GGUF"
    stops = [json.loads(p.split(" ", 1)[1]) for p in parsed["PARAMETER"] if p.startswith("stop ")]
    assert "<|im_end|>" in stops

    rewrites = [
        json.loads(line)["input"]
        for line in (ROOT / "data" / "tasks" / "formal-rewrite.eval.jsonl").read_text().splitlines()
    ]
    rows = [{"input": x, "output": WORD} for x in COLOURS[:5] + rewrites[:5]]
    gen = backends.load_generator("llama-cpp", bundled_model, lora_path=str(adapter_path))
    try:
        result = evaluate(gen, parse_task(WORD_TASK), rows)
    finally:
        gen.close()
    llm = Llama(
        model_path=base, lora_path=str(adapter_path), n_ctx=1024, verbose=False, n_threads=1
    )
    try:
        answers = [
            llm.create_completion(
                modelfile.prompt_for(template, r["input"]),
                max_tokens=result.max_tokens,
                temperature=0.0,
                top_k=1,
                stop=stops,
            )["choices"][0]["text"].strip()
            for r in rows
        ]
    finally:
        llm.close()
    predictions = [item["prediction"] for item in result.items]
    assert answers == predictions
    # the adapter is in use: the colours get the trained word, and not every answer is the same
    assert all(p.startswith(WORD) for p in predictions[:5]) and len(set(predictions)) > 1
