"""Export: the peft folder, a merged Hugging Face folder, and a llama.cpp LoRA GGUF.

The GGUF adapter is checked two ways: a random adapter must give llama.cpp the same logits as
transformers + peft (which only holds with the q/k row permutation, checked too), and a trained
adapter must make llama.cpp say the word it was trained to say.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from word_task import WORD, WORD_TASK, greedy, make_run

from sgtui.errors import SgtuiError
from sgtui.store import Store
from sgtui.task import parse_task

pytestmark = pytest.mark.usefixtures("shared_cache")


def _llama_logits(base: str, lora: str | None, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(model_path=base, lora_path=lora, logits_all=True, verbose=False, n_ctx=256)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


@pytest.mark.slow
def test_gguf_adapter_gives_llama_cpp_the_peft_logits(
    tmp_path, bundled_model, hf_base, random_lora, monkeypatch
):
    import torch
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from sgtui import export

    tok = AutoTokenizer.from_pretrained(str(hf_base))
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]

    def corr(peft_model, gguf_path) -> float:
        with torch.no_grad():
            ref = peft_model(torch.tensor([ids])).logits[0].numpy()
        got = _llama_logits(bundled_model, str(gguf_path), ids)
        return float(np.corrcoef(ref.ravel(), got.ravel())[0, 1])

    # every linear module adapted, enough to change the logits a lot (more makes the network
    # chaotic, and then llama.cpp's quantised activations alone move its logits)
    full = random_lora(tmp_path / "full", 0.2)
    with torch.no_grad(), full.disable_adapter():
        plain = full(torch.tensor([ids])).logits[0].numpy()
    with torch.no_grad():
        adapted = full(torch.tensor([ids])).logits[0].numpy()
    effect = np.corrcoef(plain.ravel(), adapted.ravel())[0, 1]
    assert effect < 0.8, effect
    path = export.export_gguf(tmp_path / "full", bundled_model, tmp_path / "full.gguf")
    match = corr(full, path)
    assert match > 0.99, match

    # the file is what llama.cpp's loader checks for
    reader = GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == 16.0
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    assert len(shapes) == 30 * 7 * 2
    assert shapes["blk.0.attn_q.weight.lora_a"] == [576, 8]  # ne: [in, r]
    assert shapes["blk.0.attn_q.weight.lora_b"] == [8, 576]  # ne: [r, out]
    assert shapes["blk.29.ffn_down.weight.lora_a"] == [1536, 8]
    assert shapes["blk.7.attn_k.weight.lora_b"] == [8, 192]

    # q/k alone: right only with the converter's row permutation applied to lora_B
    qk = random_lora(tmp_path / "qk", 0.5, ["q_proj", "k_proj"])
    good = corr(qk, export.export_gguf(tmp_path / "qk", bundled_model, tmp_path / "qk.gguf"))
    monkeypatch.setattr(export, "_PERMUTED_QK", set())
    bad = corr(qk, export.export_gguf(tmp_path / "qk", bundled_model, tmp_path / "qk-raw.gguf"))
    assert good > 0.99 and bad < 0.95, (good, bad)


@pytest.mark.slow
def test_export_round_trip_after_training(trained, tmp_path, bundled_model, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import backends
    from backends.base import SamplingParams
    from backends.chat import render_template
    from sgtui.cli import main
    from sgtui.export import export_run
    from sgtui.prompts import meta_messages

    db, run_id, adapter = trained.db, trained.run_id, trained.adapter
    store = Store(db)

    # gguf, through the CLI: llama.cpp with the adapter now says the word, the base does not
    gguf_path = tmp_path / "adapter.gguf"
    assert (
        main(["export", str(run_id), "--format", "gguf", "--db", str(db), "--out", str(gguf_path)])
        == 0
    )
    assert store.artifacts(run_id, "export-gguf")[-1]["path"] == str(gguf_path)
    assert gguf_path.is_file() and str(gguf_path) in capsys.readouterr().out
    task = parse_task(WORD_TASK)
    answers = {}
    for lora in (None, str(gguf_path)):
        gen = backends.load_generator("llama-cpp", bundled_model, lora_path=lora)
        try:
            prompts = [gen.render_chat(meta_messages(task, x)) for x in ("grey", "violet")]
            answers[lora] = [c.text for c in gen.generate(prompts, SamplingParams(max_tokens=10))]
        finally:
            gen.close()
    assert not any(WORD in a for a in answers[None]), answers
    assert all(a.strip().startswith(WORD) for a in answers[str(gguf_path)]), answers

    # adapter: a copy of the peft folder
    copy = export_run(store, run_id, "adapter", tmp_path / "copy")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (copy / name).read_bytes() == (adapter / name).read_bytes()

    # merged: a plain HF folder (safetensors, no pickle) that says the word on its own
    merged = export_run(store, run_id, "merged", tmp_path / "merged")
    assert list(merged.glob("*.safetensors")) and not list(merged.glob("*.bin"))
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(merged))
    model = AutoModelForCausalLM.from_pretrained(str(merged))
    prompt = render_template(
        tok.chat_template, meta_messages(task, "grey"), tok.bos_token or "", tok.eos_token
    )
    assert greedy(model, tok, prompt).strip().startswith(WORD)
    kinds = [a["kind"] for a in store.artifacts(run_id)]
    assert {"adapter", "export-gguf", "export-adapter", "export-merged"} <= set(kinds)


def test_export_without_an_adapter_is_refused(tmp_path):
    from sgtui.export import export_run

    store = Store(tmp_path / "n.db")
    run_id = make_run(store, [("green", WORD)])
    with pytest.raises(SgtuiError, match="no trained adapter") as err:
        export_run(store, run_id, "gguf")
    assert f"sgtui train {run_id}" in err.value.render()


def test_gguf_export_checks_the_base_model(tmp_path, bundled_model):
    """A LoRA on a tensor the base GGUF does not have (SmolLM2 ties its output layer) is refused
    instead of writing a file llama.cpp would reject."""
    from safetensors.numpy import save_file

    from sgtui.export import export_gguf

    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4})
    )
    save_file(
        {
            "base_model.model.lm_head.lora_A.weight": np.zeros((2, 576), np.float32),
            "base_model.model.lm_head.lora_B.weight": np.zeros((49152, 2), np.float32),
        },
        str(folder / "adapter_model.safetensors"),
    )
    with pytest.raises(SgtuiError, match="no tensor 'output.weight'"):
        export_gguf(folder, bundled_model, tmp_path / "odd.gguf")
    assert not (tmp_path / "odd.gguf").exists()
