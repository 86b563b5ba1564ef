"""The VRAM planner (sgtui/vram.py, `sgtui plan`): dimensions read from real metadata, the
formulas, the comparison with published measurements that docs/VRAM.md prints, and the
settings chosen to fit a small card."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sgtui import vram
from sgtui.errors import SgtuiError
from sgtui.vram import GiB, TrainSettings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "VRAM.md"

# SmolLM2-135M-Instruct's config.json (HuggingFaceTB/SmolLM2-135M-Instruct)
SMOLLM2 = dict(
    hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152, tied=True
)


@pytest.fixture(scope="module")
def smol(bundled_model):
    return vram.model_dims(bundled_model)


# -- dimensions -------------------------------------------------------------------------------
def test_bundled_gguf_dims_match_smollm2_config(smol, bundled_model):
    assert (smol.n_layers, smol.hidden, smol.intermediate) == (30, 576, 1536)
    assert (smol.n_heads, smol.n_kv_heads, smol.head_dim, smol.vocab) == (9, 3, 64, 49152)
    assert smol.tied_embeddings and smol.gated_mlp and smol.source == "gguf"
    # the tensor count of the GGUF is exactly what the config's shapes give
    from_config = vram.dims_from_config("SmolLM2", **SMOLLM2)
    assert smol.linear_params == from_config.linear_params == 106_168_320
    assert smol.embedding_params == from_config.embedding_params == 49152 * 576
    assert smol.n_params == from_config.n_params == 134_515_008
    assert 0 < smol.weight_bytes < Path(bundled_model).stat().st_size
    assert vram.model_dims(bundled_model) is smol  # cached: the vocabulary is parsed once


def test_hf_folder_dims_from_config_and_safetensors_headers(tmp_path):
    from safetensors.numpy import save_file

    h, i, v, layers = 16, 40, 64, 2
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": h,
                "intermediate_size": i,
                "vocab_size": v,
                "num_hidden_layers": layers,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "tie_word_embeddings": False,
            }
        )
    )
    shapes = {
        "model.embed_tokens.weight": (v, h),
        "lm_head.weight": (v, h),
        "model.norm.weight": (h,),
    }
    for n in range(layers):
        pre = f"model.layers.{n}."
        shapes.update(
            {
                pre + "self_attn.q_proj.weight": (h, h),
                pre + "self_attn.k_proj.weight": (8, h),
                pre + "self_attn.v_proj.weight": (8, h),
                pre + "self_attn.o_proj.weight": (h, h),
                pre + "mlp.gate_proj.weight": (i, h),
                pre + "mlp.up_proj.weight": (i, h),
                pre + "mlp.down_proj.weight": (h, i),
                pre + "input_layernorm.weight": (h,),
                pre + "post_attention_layernorm.weight": (h,),
            }
        )
    save_file(
        {k: np.zeros(s, np.float32) for k, s in shapes.items()}, str(tmp_path / "model.safetensors")
    )
    d = vram.model_dims(tmp_path)
    assert d.source == "config.json + safetensors"
    assert d.n_params == sum(int(np.prod(s)) for s in shapes.values())
    assert d.linear_params == layers * (2 * h * h + 2 * 8 * h + 3 * h * i)
    assert d.embedding_params == 2 * v * h and not d.tied_embeddings
    assert (d.n_layers, d.n_kv_heads, d.head_dim) == (2, 2, 4)
    # without weights, the same counts come from the config alone
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "config.json").touch()  # a new mtime: not the cached answer
    alone = vram.model_dims(tmp_path)
    assert alone.source == "config.json"
    assert (alone.linear_params, alone.embedding_params) == (d.linear_params, d.embedding_params)


def test_unreadable_models_are_user_errors(tmp_path):
    with pytest.raises(SgtuiError, match="model not found"):
        vram.model_dims(tmp_path / "missing.gguf")
    with pytest.raises(SgtuiError, match="no config.json"):
        vram.model_dims(tmp_path)
    bad = tmp_path / "notes.gguf"
    bad.write_text("not a gguf file")
    with pytest.raises(SgtuiError, match="cannot read the GGUF metadata") as e:
        vram.model_dims(bad)
    assert e.value.path == str(bad) and e.value.fix


def test_known_configs_have_their_published_sizes():
    sizes = {
        "Llama-2-7B": 6.74,
        "Mistral-7B-v0.3": 7.25,
        "Llama-3.1-8B": 8.03,
        "Llama-3.2-3B": 3.21,
        "Llama-3.2-11B-Vision": 10.67,
        "Llama-3.3-70B": 70.55,
        "Qwen2.5-3B": 3.09,
        "Qwen2.5-14B": 14.77,
        "Qwen2.5-32B": 32.76,
        "Phi-4": 14.66,
        "Gemma-2-9B": 9.24,
        "Gemma-2-27B": 27.23,
    }
    assert set(sizes) == set(vram.KNOWN_CONFIGS)
    for name, billions in sizes.items():
        assert vram.model_dims_for(name).n_params / 1e9 == pytest.approx(billions, abs=0.01)


# -- formulas ---------------------------------------------------------------------------------
def test_generation_kv_cache_formula():
    d = vram.model_dims_for("Llama-3.1-8B")
    b = vram.predict_generation(d, n_ctx=8192, n_seq=1)
    # 2 (K and V) x 32 layers x 8192 tokens x 8 KV heads x 128 x 2 bytes = 1 GiB exactly
    assert b.components["KV cache"] == GiB
    assert vram.predict_generation(d, 4096, n_seq=4).components["KV cache"] == 2 * GiB
    assert b.components["weights (as stored)"] == 2 * d.n_params  # no file: 16-bit
    assert b.total == sum(b.components.values())


def test_training_components():
    d = vram.model_dims_for("Llama-3.1-8B")
    peft = vram.predict_training(d, batch_size=2, max_len=2048, checkpointing=True)
    c = peft.components
    assert c["weights, 4-bit NF4 (layers' projections)"] == int(d.linear_params * 4.126953125 / 8)
    # peft's prepare_model_for_kbit_training keeps embeddings and head in fp32
    assert c["weights, fp32 (embeddings, head, norms)"] == 4 * (d.n_params - d.linear_params)
    lora = d.lora_params(16)
    assert lora == 32 * 16 * (8192 + 5120 + 5120 + 8192 + 3 * (4096 + 14336))
    assert c["AdamW moments (2 x fp32)"] == 8 * lora
    assert c["saved activations: each layer's input"] == 32 * 2 * 2048 * 4096 * 2
    assert peft.total == sum(c.values())
    # without checkpointing every layer keeps all its tensors: several times more
    off = vram.predict_training(d, batch_size=2, max_len=2048, checkpointing=False)
    assert (
        off.components["saved activations: every layer's tensors"]
        > 10 * c["saved activations: each layer's input"]
    )
    # Unsloth: 16-bit embeddings, checkpoints in CPU RAM, no logits buffer of its own
    uns = vram.predict_training(d, batch_size=2, max_len=2048, trainer="unsloth")
    assert uns.components["saved activations: each layer's input (offloaded to CPU RAM)"] == 0
    assert uns.total < peft.total
    sixteen = vram.predict_training(d, quant_4bit=False, batch_size=1, max_len=512)
    assert sixteen.components["weights, 16-bit"] == 2 * d.n_params
    text = peft.text()
    for name in c:
        assert name in text
    assert "total" in text and "GiB" in text


# -- published figures ------------------------------------------------------------------------
def test_predictions_within_15_percent_of_published_figures_except_documented_misses():
    rows = [r for r in vram.compare_published() if r["model"] is not None]
    assert len(rows) >= 20
    for r in rows:
        within = abs(r["error"]) <= 0.15
        missed = r["model"] in r["published"].misses
        assert within != missed, (r["published"].label, r["model"], r["error"])
    misses = [(r["published"].label, r["model"]) for r in rows if abs(r["error"]) > 0.15]
    assert len(misses) == 4  # docs/VRAM.md explains each one


def test_docs_print_the_comparison_table_the_code_computes():
    doc = DOC.read_text()
    for line in vram.published_table():
        assert line in doc, line
    for pub in vram.PUBLISHED:
        assert pub.url in doc and pub.figure in doc
    for name, value in (("NF4_BITS", "4.127"), ("CUDA_CONTEXT", "512 MiB"), ("HEADROOM", "5%")):
        assert value in doc, name


# -- fitting ----------------------------------------------------------------------------------
def test_fit_lowers_settings_in_order_and_says_why():
    d = vram.model_dims_for("Llama-3.1-8B")
    wanted = TrainSettings(batch_size=8, max_len=2048, checkpointing=False)
    plan = vram.fit_training(d, 12 * GiB, wanted)
    assert plan.fits and plan.wanted == wanted
    s = plan.settings
    assert s.checkpointing and s.batch_size < 8
    assert plan.breakdown.total <= 12 * GiB * (1 - vram.HEADROOM)
    assert plan.changes[0].startswith("gradient checkpointing off -> on: off needs ")
    assert plan.changes[1].startswith(f"batch size 8 -> {s.batch_size}: 8 needs ")
    assert "12.00 GiB card" in plan.changes[1]
    # the largest batch size that fits: twice it does not
    bigger = TrainSettings(batch_size=2 * s.batch_size, max_len=s.max_len, checkpointing=True)
    assert bigger.predict(d).total > 12 * GiB * (1 - vram.HEADROOM)
    assert "changed: batch size 8 -> " in plan.text()


def test_fit_changes_nothing_when_the_settings_fit():
    d = vram.model_dims_for("Llama-3.2-3B")
    plan = vram.fit_training(d, 80 * GiB, TrainSettings(batch_size=4, max_len=1024))
    assert plan.fits and not plan.changes and plan.settings == plan.wanted
    assert "nothing changed" in plan.text()


def test_fit_lowers_max_len_after_batch_size_and_refuses_the_impossible():
    d = vram.model_dims_for("Llama-3.1-8B")
    wanted = TrainSettings(batch_size=4, max_len=8192, trainer="unsloth")
    plan = vram.fit_training(d, 8 * GiB, wanted)
    assert plan.fits and (plan.settings.batch_size, plan.settings.max_len) == (1, 4096)
    assert [c.split(":")[0] for c in plan.changes] == [
        "batch size 4 -> 1",
        "max length 8192 -> 4096",
    ]
    # a floor the caller's examples need
    floor = vram.fit_training(d, 7 * GiB, wanted, min_len=4096)
    assert not floor.fits and floor.settings.max_len == 4096
    assert floor.reason.startswith("even batch size 1 x 4096 tokens with checkpointing needs")
    # the weights alone exceed the card: nothing here could help
    big = vram.fit_training(vram.model_dims_for("Llama-3.3-70B"), 8 * GiB, TrainSettings())
    assert not big.fits and "alone need" in big.reason
    assert big.settings == big.wanted and not big.changes
    assert "does not fit in 8.00 GiB" in big.text()
    # the weights fit but even the smallest step does not
    tight = vram.fit_training(d, 9 * GiB, TrainSettings(trainer="peft"))
    assert not tight.fits and tight.reason.startswith("even batch size 1 x 256 tokens")


def test_fit_on_the_bundled_model_and_a_tiny_card(smol):
    plan = vram.fit_training(smol, int(1.2 * GiB), TrainSettings(batch_size=16, max_len=1024))
    assert plan.fits and plan.settings.batch_size < 16
    assert plan.breakdown.total <= 1.2 * GiB * (1 - vram.HEADROOM)


def test_detect_gpu_memory_holds_no_cuda_context_here(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    vram._GPU.clear()
    assert vram.detect_gpu_memory() is None  # no card visible: nothing is asked
    vram._GPU.clear()
    # asked for real (nvidia-smi, else torch in a child): torch never enters this process
    code = (
        "import sys, sgtui.vram as v; n = v.detect_gpu_memory(); "
        "print(n is None or n > 2**30, 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert out.stdout.split() == ["True", "False"]


def test_core_imports_neither_textual_argparse_torch_nor_the_cli():
    code = (
        "import sys, sgtui.vram; print([m for m in ('textual', 'argparse', 'torch', "
        "'sgtui.cli', 'sgtui.cli_plan') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


# -- the command ------------------------------------------------------------------------------
def _plan_args(*argv):
    from sgtui.cli_plan import add_plan_command

    ap = argparse.ArgumentParser(prog="sgtui")
    add_plan_command(ap.add_subparsers(dest="command"))
    return ap.parse_args(["plan", *argv])


def test_cmd_plan_prints_the_parts_and_the_settings_that_fit(capsys, smol):
    from sgtui.cli_plan import cmd_plan

    args = _plan_args(
        str(ROOT / "data" / "tasks" / "sentiment.toml"),
        "--gpu-mem",
        "2",
        "--batch-size",
        "16",
        "--trainer",
        "peft",
    )
    assert cmd_plan(args) == 0
    out = capsys.readouterr().out
    assert "30 layers, hidden 576, 9 heads (3 KV), vocabulary 49152" in out
    assert "card: 2.00 GiB (--gpu-mem)" in out
    for part in (
        "KV cache",
        "compute buffer",
        "weights, 4-bit NF4",
        "LoRA gradients (fp32)",
        "AdamW moments",
        "saved activations",
        "working set",
        "CUDA context",
    ):
        assert part in out
    assert "logits at 501 answer positions per example" in out
    assert "fits in 2.00 GiB: batch size 4, max length 1024" in out
    assert "changed: batch size 16 -> 4: 16 needs " in out


def test_cmd_plan_without_a_card_asks_for_one(capsys, monkeypatch, smol):
    from sgtui.cli_plan import cmd_plan

    monkeypatch.setattr(vram, "detect_gpu_memory", lambda: None)
    assert (
        cmd_plan(
            _plan_args(str(ROOT / "data" / "tasks" / "sentiment.toml"), "--trainer", "unsloth")
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "no GPU seen: give --gpu-mem GB" in out
    assert "(offloaded to CPU RAM)" in out and "fits in" not in out


def test_cmd_plan_refuses_bad_input(smol):
    from sgtui.cli_plan import cmd_plan

    task = str(ROOT / "data" / "tasks" / "sentiment.toml")
    with pytest.raises(SgtuiError, match="--gpu-mem must be a number of GB above 0"):
        cmd_plan(_plan_args(task, "--gpu-mem", "0"))
    with pytest.raises(SgtuiError, match="--batch-size must be at least 1"):
        cmd_plan(_plan_args(task, "--batch-size", "0", "--gpu-mem", "8"))
    with pytest.raises(SgtuiError, match="there is no run 7"):
        cmd_plan(_plan_args("7", "--gpu-mem", "8"))
