"""The LoRA GGUF export on each architecture sgtui can train: llama, mistral, qwen2, qwen3,
gemma2, gemma3 (text) and phi3.

For each, a tiny random Hugging Face model (tests/tiny_models.py) is converted by llama.cpp's
own convert_hf_to_gguf.py to an f32 GGUF, a random LoRA on every linear layer is exported by
sgtui, and llama.cpp must give the logits that transformers + peft give on the same tokens:
first without the adapter (the conversion and llama.cpp's graph agree), then with it (the
export's tensor names, shapes, q/k permutation and fused tensors are right). The adapter moves
the logits by far more than the tolerance, so a mistake in it cannot pass unnoticed.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
from tiny_models import ARCHS

pytestmark = pytest.mark.slow

TEXT = "The quick brown fox jumps over the lazy dog, then naps in the sun."
# Largest |logit difference| of llama.cpp (f32 weights, f32 KV cache) against transformers (f32,
# eager attention), logits spread ~1.6 (std): measured at most 2e-5 with SiLU MLPs, 3e-3 with
# gemma's GELU, which ggml's CPU backend looks up in a float16 table. The bounds leave room for
# other CPUs' summation order and stay far below what the adapter changes (asserted over 1).
TOL = {"gelu": 1e-2, "silu": 5e-4}


@pytest.fixture(scope="session")
def llama_cpp_src(hf_cache_dir):
    src = tiny_models.llama_cpp_source(hf_cache_dir)
    if isinstance(src, str):
        pytest.skip(f"llama.cpp's convert_hf_to_gguf.py is not available: {src}")
    return src


@pytest.fixture(scope="session")
def tokenizer(bundled_model, hf_cache_dir):
    return tiny_models.tokenizer_dir(bundled_model, hf_cache_dir)


@pytest.fixture(scope="session")
def ids(tokenizer) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))(TEXT)["input_ids"]


@pytest.fixture(scope="session")
def converted(tmp_path_factory, llama_cpp_src, tokenizer) -> dict[str, tuple]:
    """Architecture -> (Hugging Face folder, base GGUF, conversion error or None); all
    converted in one go."""
    root = tmp_path_factory.mktemp("architectures")
    jobs = {
        a.name: (tiny_models.build(a, tokenizer, root / a.name), root / f"{a.name}.gguf")
        for a in ARCHS
    }
    errors = tiny_models.convert(llama_cpp_src, list(jobs.values()))
    return {name: (hf, out, errors.get(out)) for name, (hf, out) in jobs.items()}


def _random_lora(model, out):
    """A LoRA on every linear layer with random B matrices (peft starts B at zero)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(tiny_models.SEED)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    gen = torch.Generator().manual_seed(tiny_models.SEED)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    peft_model.save_pretrained(str(out))
    return peft_model.eval()


def _llama_logits(base: str, lora: str | None, ids: list[int]) -> np.ndarray:
    from llama_cpp import GGML_TYPE_F32, Llama

    llm = Llama(
        model_path=base,
        lora_path=lora,
        logits_all=True,
        verbose=False,
        n_ctx=64,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


@pytest.mark.parametrize("arch", ARCHS, ids=[a.name for a in ARCHS])
def test_adapter_gives_llama_cpp_the_peft_logits(arch, tmp_path, converted, ids, record_property):
    import torch
    from gguf import GGUFReader

    from sgtui.export import base_info, export_gguf

    hf_dir, base, error = converted[arch.name]
    if error:
        pytest.fail(error)
    assert base_info(base).arch == arch.gguf_arch  # read once, export_gguf reuses it
    model = tiny_models.load(hf_dir)

    peft_model = _random_lora(model, tmp_path / "adapter")
    with torch.no_grad():
        adapted = peft_model(torch.tensor([ids])).logits[0].numpy()
        with peft_model.disable_adapter():
            plain = peft_model(torch.tensor([ids])).logits[0].numpy()
    path = export_gguf(tmp_path / "adapter", base, tmp_path / "adapter.gguf")

    base_diff = float(np.abs(_llama_logits(str(base), None, ids) - plain).max())
    lora_diff = float(np.abs(_llama_logits(str(base), str(path), ids) - adapted).max())
    effect = float(np.abs(adapted - plain).max())
    record_property("max_abs_diff", {"base": base_diff, "lora": lora_diff, "effect": effect})
    print(
        f"{arch.name}: base {base_diff:.2e}, with adapter {lora_diff:.2e}, "
        f"adapter effect {effect:.2f}, logit spread {float(plain.std()):.2f}"
    )
    tol = TOL["gelu" if arch.name.startswith("gemma") else "silu"]
    assert base_diff < tol, f"the conversion or llama.cpp's {arch.gguf_arch} graph differs"
    assert effect > 1.0, effect
    assert lora_diff < tol, f"the exported adapter does not give peft's logits ({lora_diff})"

    # every adapted module is in the file, and the HF folder's config.json leads to the same file
    # (the architecture name and head counts come from there when no base GGUF is given)
    lora = GGUFReader(str(path))
    n_modules = sum(1 for n, _ in peft_model.named_modules() if n.endswith(".lora_A"))
    assert len(lora.tensors) == 2 * n_modules
    from_hf = GGUFReader(str(export_gguf(tmp_path / "adapter", hf_dir, tmp_path / "hf.gguf")))
    assert from_hf.fields["general.architecture"].contents() == arch.gguf_arch
    assert [t.name for t in from_hf.tensors] == [t.name for t in lora.tensors]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(from_hf.tensors, lora.tensors))
