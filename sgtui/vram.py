"""The VRAM planner: how much GPU memory generation and LoRA fine-tuning will take, read from the
model's dimensions before anything is loaded, and the training settings that fit a card.

Every number is a sum of named parts with a stated formula (docs/VRAM.md). The dimensions come
from a GGUF's metadata (the `gguf` package's reader) or a Hugging Face folder's config.json and
safetensors headers, so no weights are read. torch is imported only inside
`detect_gpu_memory`, and only in a child process, so the caller never holds a CUDA context.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import SgtuiError
from .model_meta import gguf_header
from .prompts import meta_messages

GiB = 1 << 30
MiB = 1 << 20

# bitsandbytes NF4 with double quantisation (what both sgtui 4-bit trainers load): 4 bits per
# weight, one 8-bit absmax per block of 64 weights, and one fp32 scale per 256 absmax values
# (Dettmers et al. 2023, QLoRA, section 3): 4 + 8/64 + 32/(64*256) = 4.127 bits. torchao's NF4
# (torchtune) has the same block sizes.
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)

# The CUDA context a process holds once it has touched the GPU: the driver's context, the
# kernel images of torch, cuBLAS and bitsandbytes (loaded lazily since CUDA 11.7) and the
# cuBLAS workspaces. A process that has only run `torch.ones(1, device="cuda")` shows about
# 300-500 MiB in nvidia-smi; we take the upper end. It is not counted by torch's allocator
# statistics (max_memory_allocated / reserved), so published allocator peaks are compared
# without it (docs/VRAM.md).
CUDA_CONTEXT = 512 * MiB

# The fraction of the card the planner leaves free when it fits settings: the caching
# allocator's fragmentation (reserved above allocated) and what a desktop's display server
# holds on the same card. Used only by fit_training, never in a prediction.
HEADROOM = 0.05

MIN_MAX_LEN = 256  # fit_training halves --max-len no lower than this
LORA_TARGET_NAMES = ("q", "k", "v", "o", "gate", "up", "down")


# -- the model's dimensions -------------------------------------------------------------------
@dataclass(frozen=True)
class ModelDims:
    """What memory depends on, read without loading a weight. `linear_params` are the decoder
    layers' projection weights (what 4-bit quantises and LoRA adapts); `embedding_params` the
    token embeddings and the output head (counted once when tied); the rest of `n_params` are
    norms, biases and anything else (kept in 16-bit)."""

    name: str
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    n_params: int
    linear_params: int
    embedding_params: int
    value_dim: int | None = None  # per-head value size, when it differs from head_dim
    gated_mlp: bool = True  # gate, up, down (Llama); False: up, down (GPT-2)
    weight_bytes: int | None = None  # the weights as stored (GGUF tensors, safetensors)
    source: str = ""  # "gguf", "config.json", "published config"

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def v_dim(self) -> int:
        return self.n_kv_heads * (self.value_dim or self.head_dim)

    @property
    def other_params(self) -> int:
        return max(0, self.n_params - self.linear_params - self.embedding_params)

    def lora_params(self, rank: int, targets="all linear") -> int:
        """LoRA A (rank x in) and B (out x rank) for each adapted projection of every layer."""
        h, i = self.hidden, self.intermediate
        shapes = {
            "q": (h, self.q_dim),
            "k": (h, self.kv_dim),
            "v": (h, self.v_dim),
            "o": (self.q_dim, h),
            "gate": (h, i) if self.gated_mlp else (0, 0),
            "up": (h, i),
            "down": (i, h),
        }
        return (
            self.n_layers
            * rank
            * sum(a + b for n, (a, b) in shapes.items() if n in target_names(targets))
        )


def target_names(targets) -> tuple[str, ...]:
    """ "all linear" (sgtui's trainers, Unsloth's notebooks), "attention", or names from
    q, k, v, o, gate, up, down."""
    if targets in ("all linear", "all-linear", None):
        return LORA_TARGET_NAMES
    if targets == "attention":
        return ("q", "k", "v", "o")
    names = tuple(targets.replace(",", " ").split()) if isinstance(targets, str) else tuple(targets)
    bad = [n for n in names if n not in LORA_TARGET_NAMES]
    if bad or not names:
        raise SgtuiError(
            f"unknown LoRA target {', '.join(bad) or '(none)'}",
            fix="use 'all linear', 'attention' or names from " + ", ".join(LORA_TARGET_NAMES),
        )
    return names


def _linear_per_layer(h, i, q_dim, kv_dim, v_dim, gated=True) -> int:
    return h * q_dim + h * kv_dim + h * v_dim + q_dim * h + (3 if gated else 2) * h * i


def dims_from_config(
    name: str,
    *,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    vocab: int,
    tied: bool,
    head_dim: int | None = None,
    extra_linear: int = 0,
    gated_mlp: bool = True,
    source: str = "config.json",
) -> ModelDims:
    """ModelDims from a config's numbers; parameters counted from the shapes (norms included,
    biases left out: under 0.1% for the models here). `extra_linear`: linear weights outside
    the text decoder, such as a vision encoder's (bitsandbytes quantises them too; LoRA and the
    text activations do not touch them)."""
    hd = head_dim or hidden // heads
    linear = (
        layers
        * _linear_per_layer(
            hidden, intermediate, heads * hd, kv_heads * hd, kv_heads * hd, gated_mlp
        )
        + extra_linear
    )
    emb = vocab * hidden * (1 if tied else 2)
    norms = (2 * layers + 1) * hidden
    return ModelDims(
        name,
        layers,
        hidden,
        intermediate,
        heads,
        kv_heads,
        hd,
        vocab,
        tied,
        linear + emb + norms,
        linear,
        emb,
        gated_mlp=gated_mlp,
        source=source,
    )


# Published config.json values (Hugging Face model repositories), used only to reproduce the
# published memory figures in docs/VRAM.md and tests/test_vram.py; sgtui reads the real model's
# own metadata for a plan. name: hidden, intermediate, layers, heads, kv heads, vocab, tied,
# head_dim (None: hidden / heads), linear weights outside the text decoder.
KNOWN_CONFIGS: dict[str, tuple] = {
    "Llama-2-7B": (4096, 11008, 32, 32, 32, 32000, False, None, 0),
    "Mistral-7B-v0.3": (4096, 14336, 32, 32, 8, 32768, False, None, 0),
    "Llama-3.1-8B": (4096, 14336, 32, 32, 8, 128256, False, None, 0),
    "Llama-3.2-3B": (3072, 8192, 28, 24, 8, 128256, True, None, 0),
    # the text decoder's 40 layers (8 of them cross-attention, of the same shapes) and the
    # vision encoder and projector, almost all linear weights: the published 10.7B total
    # minus the decoder's 9.8B
    "Llama-3.2-11B-Vision": (4096, 14336, 40, 32, 8, 128256, False, None, 900_000_000),
    "Llama-3.3-70B": (8192, 28672, 80, 64, 8, 128256, False, None, 0),
    "Qwen2.5-3B": (2048, 11008, 36, 16, 2, 151936, True, None, 0),
    "Qwen2.5-14B": (5120, 13824, 48, 40, 8, 152064, False, None, 0),
    "Qwen2.5-32B": (5120, 27648, 64, 40, 8, 152064, False, None, 0),
    "Phi-4": (5120, 17920, 40, 40, 10, 100352, False, None, 0),
    "Gemma-2-9B": (3584, 14336, 42, 16, 8, 256000, True, 256, 0),
    "Gemma-2-27B": (4608, 36864, 46, 32, 16, 256000, True, 128, 0),
}


def model_dims_for(name: str) -> ModelDims:
    """A published model's dimensions from KNOWN_CONFIGS (for the comparison with published
    memory figures only)."""
    if name not in KNOWN_CONFIGS:
        raise SgtuiError(
            f"no published config for {name!r}", fix="known: " + ", ".join(KNOWN_CONFIGS)
        )
    h, i, layers, heads, kv, vocab, tied, hd, extra = KNOWN_CONFIGS[name]
    return dims_from_config(
        name,
        hidden=h,
        intermediate=i,
        layers=layers,
        heads=heads,
        kv_heads=kv,
        vocab=vocab,
        tied=tied,
        head_dim=hd,
        extra_linear=extra,
        source="published config",
    )


_CACHE: dict[tuple, ModelDims] = {}


def model_dims(model: str | Path) -> ModelDims:
    """The dimensions of a .gguf file or a Hugging Face folder, from metadata alone. Cached per
    (path, size, mtime): the TUI asks again each time the Train page is shown."""
    p = Path(model).expanduser()
    if not p.exists():
        raise SgtuiError(
            "model not found",
            path=str(model),
            fix="pass --model with a .gguf file or a Hugging Face folder",
        )
    probe = p / "config.json" if p.is_dir() else p
    try:
        st = probe.stat()
    except OSError:
        raise SgtuiError(
            "this folder has no config.json, so it is not a Hugging Face model folder",
            path=str(p),
            fix="pass a .gguf file or a folder with config.json",
        ) from None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = _hf_dims(p) if p.is_dir() else _gguf_dims(p)
    return _CACHE[key]


_LINEAR_GGUF = re.compile(
    r"^blk\.\d+\.(attn_(q|k|v|qkv|output)|ffn_(gate|up|down|gate_up))"
    r"\.weight$"
)


def _gguf_dims(p: Path) -> ModelDims:
    """From the GGUF's header alone (model_meta.gguf_header: the vocabulary is skipped, not
    decoded, which is most of what the gguf package's reader spends its seconds on)."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        header = gguf_header(p)
        sizes = {
            name: (
                int(np.prod(shape)) if shape else 1,
                GGML_QUANT_SIZES[GGMLQuantizationType(ttype)],
            )
            for name, shape, ttype in header.tensors
        }
    except (OSError, ValueError, KeyError) as e:  # not a GGUF, truncated, an unknown type
        raise SgtuiError(
            f"cannot read the GGUF metadata ({type(e).__name__}: {e})",
            path=str(p),
            fix="pass a complete .gguf file (re-download it?) or a Hugging Face folder",
        ) from None

    def get(key, default=None):
        value = header.kv.get(key, header.numbers.get(key))
        return default if value is None else value

    arch = get("general.architecture")
    layers, hidden = get(f"{arch}.block_count"), get(f"{arch}.embedding_length")
    heads = get(f"{arch}.attention.head_count")
    if not (arch and layers and hidden and heads):
        raise SgtuiError(
            "the GGUF does not say its layers, width and heads",
            path=str(p),
            fix="pass a model GGUF converted by llama.cpp (not a LoRA adapter)",
        )
    if isinstance(heads, list):  # per-layer counts (some architectures): take the largest
        heads = max(heads)
    kv = get(f"{arch}.attention.head_count_kv", heads)
    kv = max(kv) if isinstance(kv, list) else kv
    ff = get(f"{arch}.feed_forward_length", 4 * hidden)
    ff = max(ff) if isinstance(ff, list) else ff
    hd = get(f"{arch}.attention.key_length") or hidden // heads
    vd = get(f"{arch}.attention.value_length")
    shapes = {name: shape for name, shape, _ in header.tensors}
    vocab = get(f"{arch}.vocab_size") or header.array_lengths.get("tokenizer.ggml.tokens")
    if not vocab and "token_embd.weight" in shapes:
        vocab = int(max(shapes["token_embd.weight"]))
    count = {name: n for name, (n, _) in sizes.items()}
    n_params = sum(count.values())
    linear = sum(n for name, n in count.items() if _LINEAR_GGUF.match(name))
    emb = sum(count[n] for n in ("token_embd.weight", "output.weight") if n in count)
    n_bytes = sum(n // block * type_size for n, (block, type_size) in sizes.values())
    return ModelDims(
        get("general.name") or p.stem,
        int(layers),
        int(hidden),
        int(ff),
        int(heads),
        int(kv),
        int(hd),
        int(vocab or 0),
        "output.weight" not in shapes,
        n_params,
        linear,
        emb,
        value_dim=int(vd) if vd and vd != hd else None,
        gated_mlp=any(n.endswith("ffn_gate.weight") for n in shapes)
        or not any(n.endswith("ffn_up.weight") for n in shapes),
        weight_bytes=n_bytes,
        source="gguf",
    )


def _first(cfg: dict, *keys, default=None):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def _hf_dims(folder: Path) -> ModelDims:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise SgtuiError(
            f"cannot read config.json ({e})",
            path=str(folder / "config.json"),
            fix="pass a Hugging Face model folder with a valid config.json",
        ) from None
    tied = bool(cfg.get("tie_word_embeddings", True))
    text = cfg.get("text_config") or cfg  # multimodal configs nest the decoder's numbers
    hidden = _first(text, "hidden_size", "n_embd", "d_model")
    layers = _first(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(text, "num_attention_heads", "n_head")
    vocab = _first(text, "vocab_size", default=cfg.get("vocab_size"))
    if not (hidden and layers and heads and vocab):
        raise SgtuiError(
            "config.json does not give the hidden size, layers, heads and vocabulary",
            path=str(folder / "config.json"),
            fix="pass a decoder-only language model (a .gguf or HF folder)",
        )
    mtype = str(text.get("model_type", cfg.get("model_type", "")))
    gated = mtype not in ("gpt2", "gpt_neox", "gptj", "phi", "falcon", "bloom", "opt")
    dims = dims_from_config(
        cfg.get("_name_or_path") or folder.name,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=_first(text, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden,
        kv_heads=_first(text, "num_key_value_heads", default=heads),
        vocab=vocab,
        tied=bool(text.get("tie_word_embeddings", tied)),
        head_dim=text.get("head_dim"),
        gated_mlp=gated,
        source="config.json",
    )
    shards = sorted(folder.glob("*.safetensors"))
    if shards and "quantization_config" not in cfg:  # packed 4-bit shapes are not parameters
        counted = _safetensors_counts(shards)
        if counted is not None:
            n, linear, emb, nbytes = counted
            dims = replace(
                dims,
                n_params=n,
                linear_params=linear or dims.linear_params,
                embedding_params=emb or dims.embedding_params,
                weight_bytes=nbytes,
                source="config.json + safetensors",
            )
    return dims


_EMB_HF = re.compile(r"(embed_tokens|wte|word_embeddings|lm_head|embed_out)\.weight$")
_LINEAR_HF = re.compile(
    r"\.(layers|h|blocks)\.\d+\..*(proj|fc\d?|dense\w*|c_attn|c_proj|c_fc|"
    r"query_key_value)\.weight$"
)


def _safetensors_counts(shards) -> tuple[int, int, int, int] | None:
    """(parameters, linear-layer parameters, embedding parameters, data bytes) from the
    safetensors headers; None if one cannot be read."""
    from safetensors import safe_open

    n = linear = emb = nbytes = 0
    try:
        for shard in shards:
            with safe_open(str(shard), framework="numpy") as f:
                for key in f.keys():
                    shape = f.get_slice(key).get_shape()
                    count = 1
                    for d in shape:
                        count *= int(d)
                    n += count
                    if _EMB_HF.search(key):
                        emb += count
                    elif len(shape) == 2 and _LINEAR_HF.search(key):
                        linear += count
            nbytes += shard.stat().st_size
    except Exception:
        return None
    return n, linear, emb, nbytes


# -- predictions ------------------------------------------------------------------------------
@dataclass
class Breakdown:
    """A prediction: named parts in bytes, which add up to `total`, and notes on what was
    assumed."""

    title: str
    components: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.components.values())

    def without_context(self) -> int:
        """The part torch's allocator counts (published peaks are allocator figures)."""
        return self.total - self.components.get("CUDA context", 0)

    def text(self) -> str:
        width = max(len(k) for k in self.components)
        lines = [self.title]
        lines += [f"  {k:<{width}}  {gib(v):>9}" for k, v in self.components.items()]
        lines.append(f"  {'total':<{width}}  {gib(self.total):>9}")
        lines += [f"  ({n})" for n in self.notes]
        return "\n".join(lines)


def gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def predict_generation(
    dims: ModelDims,
    n_ctx: int,
    n_seq: int = 1,
    weight_bytes: int | None = None,
    kv_bytes_per_elem: float = 2,
    n_ubatch: int = 512,
) -> Breakdown:
    """llama.cpp (or any engine) with every layer on the GPU: the weights as stored, the KV
    cache of n_seq sequences of n_ctx tokens each (f16 by default), the compute buffer of one
    micro-batch, the CUDA context."""
    weights = weight_bytes or dims.weight_bytes or 2 * dims.n_params
    kv = int(dims.n_layers * n_ctx * n_seq * (dims.kv_dim + dims.v_dim) * kv_bytes_per_elem)
    # llama.cpp sizes one reusable buffer for its largest graph: a micro-batch of n_ubatch
    # tokens, whose fp32 logits (n_ubatch x vocab), attention scores without flash attention
    # (n_ubatch x cache cells x heads) and MLP activations dominate
    cells = n_ctx * n_seq
    compute = 4 * min(n_ubatch, cells) * (dims.vocab + cells * dims.n_heads + 2 * dims.intermediate)
    return Breakdown(
        f"generation: {n_seq} sequence(s) x {n_ctx} tokens",
        {
            "weights (as stored)": int(weights),
            "KV cache": kv,
            "compute buffer": int(compute),
            "CUDA context": CUDA_CONTEXT,
        },
        [
            f"KV cache = layers x tokens x sequences x (K + V width {dims.kv_dim + dims.v_dim}) x "
            f"{kv_bytes_per_elem:g} bytes"
        ],
    )


@dataclass(frozen=True)
class TrainerTraits:
    """How a training framework holds memory, beyond the model's size (docs/VRAM.md says where
    each was read). Not per-figure corrections: one set per framework."""

    name: str
    frozen_bytes: int  # bytes per non-quantised frozen weight (embeddings, head, norms)
    lora_bytes: int  # LoRA weight + gradient + AdamW's two moments, per parameter
    offload_checkpoints: bool  # checkpointed layer inputs go to CPU RAM
    logit_bytes: float  # bytes per (token x vocabulary) entry at the loss


TRAINERS = {
    # transformers + peft + bitsandbytes (sgtui's peft trainer on CUDA): peft's
    # prepare_model_for_kbit_training casts every 16-bit weight that is not 4-bit to fp32;
    # LoRA weights fp32 (peft's autocast_adapter_dtype), so fp32 gradients and AdamW moments:
    # 4 + 4 + 8 bytes; the loss upcasts the bf16 logits to fp32 and log-softmax keeps an fp32
    # copy for backward: 2 + 4 + 4 bytes per logit
    "peft": TrainerTraits("peft", 4, 16, False, 10),
    # Unsloth: embeddings and head stay 16-bit; LoRA through peft's get_peft_model, so fp32 as
    # above; its "unsloth" gradient checkpointing moves each layer's saved input to CPU RAM;
    # its fused cross-entropy computes the logits in chunks sized to at most half the memory
    # still free (and 4 GiB), so it takes what is left instead of deciding the fit: 0 here
    "unsloth": TrainerTraits("unsloth", 2, 16, True, 0),
    # torchtune's QLoRA recipe (only to reproduce its published figure): the model and LoRA in
    # bf16, AdamW moments in the parameter's dtype: 2 + 2 + 2 + 2 bytes; chunked cross-entropy
    # (8 chunks, compiled): the bf16 logits plus one chunk's fp32 logits and log-softmax
    "torchtune": TrainerTraits("torchtune", 2, 8, False, 2 + (4 + 4) / 8),
}


def layer_activation_bytes(dims: ModelDims, rank: int = 16, n_lora: int = 7) -> int:
    """Bytes one decoder layer saves for backward, per token, in bf16. After Korthikanti et al.
    2022 ("Reducing Activation Recomputation in Large Transformer Models", their 34*s*b*h per
    layer), adapted to RMSNorm, grouped-query attention with a flash/SDPA kernel (no s x s
    scores are kept), a gated MLP and no dropout: each norm's input and output (4h), q, k and v
    after RoPE (q + 2kv), the attention output that o_proj reads (q), and the MLP's gate, up,
    activation and product (4i; 2i without a gate), plus each LoRA's rank-sized intermediate."""
    mlp = (4 if dims.gated_mlp else 2) * dims.intermediate
    per = 4 * dims.hidden + 2 * dims.q_dim + dims.kv_dim + dims.v_dim + mlp + n_lora * rank
    return 2 * per


def predict_training(
    dims: ModelDims,
    *,
    quant_4bit: bool = True,
    batch_size: int = 8,
    max_len: int = 1024,
    checkpointing: bool = True,
    rank: int = 16,
    lora_targets: str = "all linear",
    trainer: str = "peft",
    loss_tokens: int | None = None,
) -> Breakdown:
    """Peak GPU memory of one LoRA training step (every sequence padded to max_len, the worst
    case: sgtui pads each batch only to its longest example). `loss_tokens`: the positions per
    example whose logits the loss computes (sgtui's peft loss: the answer tokens only, at most
    the run's answer budget); None: all of them.

    peak = frozen weights + LoRA state + CUDA context + saved activations + the working set,
    where the working set is the larger of the loss's logits (at the end of the forward pass)
    and one layer's backward (recomputed activations plus two gradient tensors of the MLP's
    width); both happen while the other layers' saved activations are still held."""
    if trainer not in TRAINERS:
        raise SgtuiError(
            f"no memory model for trainer {trainer!r}", fix="use one of " + ", ".join(TRAINERS)
        )
    t = TRAINERS[trainer]
    names = target_names(lora_targets)
    tokens = batch_size * max_len
    frozen16 = dims.n_params - (dims.linear_params if quant_4bit else 0)
    parts: dict[str, int] = {}
    if quant_4bit:
        parts["weights, 4-bit NF4 (layers' projections)"] = int(dims.linear_params * NF4_BITS / 8)
        label = {2: "16-bit", 4: "fp32"}[t.frozen_bytes]
        parts[f"weights, {label} (embeddings, head, norms)"] = frozen16 * t.frozen_bytes
    else:
        parts["weights, 16-bit"] = frozen16 * 2
    lora = dims.lora_params(rank, names)
    if t.lora_bytes == 16:
        parts["LoRA weights (fp32)"] = 4 * lora
        parts["LoRA gradients (fp32)"] = 4 * lora
        parts["AdamW moments (2 x fp32)"] = 8 * lora
    else:
        parts["LoRA weights (bf16)"] = 2 * lora
        parts["LoRA gradients (bf16)"] = 2 * lora
        parts["AdamW moments (2 x bf16)"] = 4 * lora
    per_layer = layer_activation_bytes(dims, rank, len(names))
    grads = 2 * 2 * dims.intermediate  # two bf16 gradients of the MLP's width
    # bitsandbytes dequantises a 4-bit weight to bf16 for each matmul: the largest one is live
    dequant = 2 * dims.hidden * dims.intermediate if quant_4bit else 0
    if checkpointing:
        saved = 0 if t.offload_checkpoints else dims.n_layers * tokens * 2 * dims.hidden
        parts[
            "saved activations: each layer's input"
            + (" (offloaded to CPU RAM)" if t.offload_checkpoints else "")
        ] = saved
        layer = tokens * (per_layer + grads) + dequant
    else:
        parts["saved activations: every layer's tensors"] = dims.n_layers * tokens * per_layer
        layer = tokens * grads + dequant
    at_loss = batch_size * min(max_len, loss_tokens or max_len)
    logits = int(at_loss * dims.vocab * t.logit_bytes)
    if logits >= layer:
        parts["working set: the loss's logits"] = logits
        other = f"one layer's backward {gib(layer)}"
    else:
        parts["working set: one layer's backward"] = layer
        other = f"the loss's logits {gib(logits)}"
    parts["CUDA context"] = CUDA_CONTEXT
    how = "4-bit QLoRA" if quant_4bit else "16-bit LoRA"
    return Breakdown(
        f"training: {how}, {trainer}, batch {batch_size} x {max_len} tokens, rank {rank}, "
        f"checkpointing {'on' if checkpointing else 'off'}",
        parts,
        [
            f"the working set's other candidate: {other}"
            + (
                f"; logits at {min(max_len, loss_tokens)} answer positions per example"
                if loss_tokens and t.logit_bytes
                else ""
            ),
            f"{lora / 1e6:.1f}M LoRA parameters on {', '.join(names)}; activations "
            f"{per_layer / 1024:.0f} KiB per token per layer",
        ],
    )


# -- choosing settings that fit ---------------------------------------------------------------
@dataclass(frozen=True)
class TrainSettings:
    """What fit_training may change (batch_size, max_len, checkpointing) and what it keeps."""

    batch_size: int = 8
    max_len: int = 1024
    checkpointing: bool = True
    quant_4bit: bool = True
    rank: int = 16
    lora_targets: str = "all linear"
    trainer: str = "peft"
    loss_tokens: int | None = None

    @classmethod
    def from_params(cls, params, **kw) -> "TrainSettings":
        """From sgtui.training.TrainParams (or anything with batch_size, max_len, rank)."""
        return cls(batch_size=params.batch_size, max_len=params.max_len, rank=params.rank, **kw)

    def predict(self, dims: ModelDims) -> Breakdown:
        return predict_training(
            dims,
            quant_4bit=self.quant_4bit,
            batch_size=self.batch_size,
            max_len=self.max_len,
            checkpointing=self.checkpointing,
            rank=self.rank,
            lora_targets=self.lora_targets,
            trainer=self.trainer,
            loss_tokens=self.loss_tokens,
        )


@dataclass
class Plan:
    """fit_training's answer: the settings to train with, what changed and why."""

    wanted: TrainSettings
    settings: TrainSettings
    breakdown: Breakdown
    gpu_bytes: int
    fits: bool
    changes: list[str] = field(default_factory=list)
    reason: str | None = None

    def text(self) -> str:
        s = self.settings
        head = (
            f"fits in {gib(self.gpu_bytes)}: "
            if self.fits
            else f"does not fit in {gib(self.gpu_bytes)}: "
        )
        lines = [
            head + f"batch size {s.batch_size}, max length {s.max_len}, gradient "
            f"checkpointing {'on' if s.checkpointing else 'off'} "
            f"(predicted {gib(self.breakdown.total)})"
        ]
        lines += [f"  changed: {c}" for c in self.changes]
        if not self.changes and self.fits:
            lines.append("  nothing changed: the settings asked for fit")
        if self.reason:
            lines.append(f"  {self.reason}")
        return "\n".join(lines)


def fit_training(
    dims: ModelDims, gpu_bytes: int, params: TrainSettings, min_len: int = MIN_MAX_LEN
) -> Plan:
    """The settings closest to `params` whose predicted peak fits in the card, leaving
    HEADROOM free. Lowered in the order that costs the least: gradient checkpointing on
    (slower steps, same results), then the batch size halved down to 1 (the same examples in
    more steps), then max_len halved down to `min_len` (longer examples are dropped: a caller
    that knows its examples' lengths should pass the length it cannot go below)."""
    budget = int(gpu_bytes * (1 - HEADROOM))
    limit = f"more than {gib(budget)} (the {gib(gpu_bytes)} card less {HEADROOM:.0%} headroom)"

    def need(s: TrainSettings) -> int:
        return s.predict(dims).total

    def fixed_part(b: Breakdown) -> int:  # what no setting here changes
        return sum(
            v for k, v in b.components.items() if k.startswith(("weights", "LoRA", "AdamW", "CUDA"))
        )

    first = params.predict(dims)
    if fixed_part(first) > budget:
        return Plan(
            params,
            params,
            first,
            gpu_bytes,
            False,
            [],
            f"the weights, LoRA state and CUDA context alone need "
            f"{gib(fixed_part(first))}, {limit}: use a smaller model or a card with "
            f"more memory",
        )
    s, changes = params, []
    if need(s) > budget and not s.checkpointing:
        before = need(s)
        s = replace(s, checkpointing=True)
        changes.append(f"gradient checkpointing off -> on: off needs {gib(before)}, {limit}")
    for attr, floor, what in (
        ("batch_size", 1, "batch size"),
        ("max_len", min(min_len, params.max_len), "max length"),
    ):
        start = getattr(s, attr)
        tried = []
        while need(s) > budget and getattr(s, attr) > floor:
            tried.append(f"{getattr(s, attr)} needs {gib(need(s))}")
            s = replace(s, **{attr: max(floor, getattr(s, attr) // 2)})
        if getattr(s, attr) != start:
            shown = tried if len(tried) <= 2 else [tried[0], tried[-1]]
            changes.append(f"{what} {start} -> {getattr(s, attr)}: {' and '.join(shown)}, {limit}")
    b = s.predict(dims)
    if b.total <= budget:
        return Plan(params, s, b, gpu_bytes, True, changes)
    return Plan(
        params,
        s,
        b,
        gpu_bytes,
        False,
        changes,
        f"even batch size {s.batch_size} x {s.max_len} tokens with checkpointing needs "
        f"{gib(b.total)}, {limit}: use a smaller model, a lower --rank or a larger card",
    )


# -- the card -----------------------------------------------------------------------------------
_GPU: list[int | None] = []


def detect_gpu_memory() -> int | None:
    """The first visible CUDA card's memory in bytes, or None without one. Asked of nvidia-smi,
    else of torch in a child process: creating a CUDA context here would keep ~0.5 GiB of the
    card held by this (long-lived) process while training runs in another."""
    if _GPU:
        return _GPU[0]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    found: int | None = None
    if visible is None or visible.strip() not in ("", "-1"):
        first = (visible or "0").split(",")[0].strip()
        smi = shutil.which("nvidia-smi")
        if smi and first.isdigit():
            try:
                out = subprocess.run(
                    [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", first],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if out.returncode == 0 and out.stdout.strip().isdigit():
                    found = int(out.stdout.strip()) * MiB
            except (OSError, subprocess.SubprocessError):
                found = None
        if found is None:
            found = _torch_gpu_memory()
    _GPU.append(found)
    return found


def _torch_gpu_memory() -> int | None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    code = (
        "import torch\n"
        "print(torch.cuda.get_device_properties(0).total_memory "
        "if torch.cuda.is_available() else '')"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return int(text) if out.returncode == 0 and text.isdigit() else None


# -- published measurements (docs/VRAM.md; tests/test_vram.py) --------------------------------
UNSLOTH_REQUIREMENTS = (
    "https://unsloth.ai/docs/get-started/fine-tuning-for-beginners/unsloth-requirements"
)
UNSLOTH_CONTEXT = (
    "https://github.com/unslothai/unsloth/blob/"
    "e3162dc5bf88bf4c2b598c74cbcaba0706c4067b/README.md#context-length-benchmarks"
)
TORCHTUNE_README = (
    "https://github.com/pytorch/torchtune/blob/"
    "30b8519e86d2094879576e16ab1f8d21a6f6f9f7/README.md#memory-and-training-speed"
)


@dataclass(frozen=True)
class Published:
    """One published memory figure, the models it can stand for, the settings it was measured
    with (or the closest stated ones), and how to compare: "card" figures are what a card must
    hold (the whole prediction), "allocator" figures are torch allocator peaks (the prediction
    without the CUDA context). `misses`: models whose prediction is known to be more than 15%
    off, each explained in docs/VRAM.md."""

    source: str
    url: str
    label: str  # the row as the source prints it
    figure: str  # the figure as printed
    gib: float  # the figure in GiB ("GB" read as GiB, as both sources print 2**30)
    models: tuple[str, ...]
    settings: TrainSettings
    compare: str = "card"
    misses: tuple[str, ...] = ()


# Unsloth's table gives no settings; its "absolute minimum" is taken as batch 1 of a short
# example (512 tokens), rank 16 on all linear layers (its notebooks' default), Unsloth's own
# checkpointing and loss. The table names sizes, not models: every model of that size with a
# config above is listed.
_UNSLOTH_MIN = TrainSettings(batch_size=1, max_len=512, rank=16, trainer="unsloth")
_UNSLOTH_ROWS = [
    ("3B", "3.5 GB", 3.5, ("Llama-3.2-3B", "Qwen2.5-3B"), ()),
    ("7B", "5 GB", 5, ("Llama-2-7B", "Mistral-7B-v0.3"), ()),
    ("8B", "6 GB", 6, ("Llama-3.1-8B",), ()),
    ("9B", "6.5 GB", 6.5, ("Gemma-2-9B",), ()),
    ("11B", "7.5 GB", 7.5, ("Llama-3.2-11B-Vision",), ()),
    ("14B", "8.5 GB", 8.5, ("Phi-4", "Qwen2.5-14B"), ("Phi-4", "Qwen2.5-14B")),
    ("27B", "22GB", 22, ("Gemma-2-27B",), ("Gemma-2-27B",)),
    ("32B", "26 GB", 26, ("Qwen2.5-32B",), ("Qwen2.5-32B",)),
    ("40B", "30GB", 30, (), ()),
    ("70B", "41 GB", 41, ("Llama-3.3-70B",), ()),
]
# Unsloth's context-length benchmark: Llama 3.1 8B and Llama 3.3 70B Instruct, 4-bit QLoRA on
# all linear layers, rank 32, batch 1, sequences padded to the length: the longest length that
# fit each card, so the prediction at that length should be the card's memory
_UNSLOTH_CONTEXT_ROWS = [
    *(
        (("Llama-3.1-8B", "Llama 3.1 (8B)") + row)
        for row in (
            ("8 GB", 8, 2972),
            ("12 GB", 12, 21848),
            ("16 GB", 16, 40724),
            ("24 GB", 24, 78475),
            ("40 GB", 40, 153977),
            ("48 GB", 48, 191728),
            ("80 GB", 80, 342733),
        )
    ),
    ("Llama-3.3-70B", "Llama 3.3 (70B)", "48 GB", 48, 12106),
    ("Llama-3.3-70B", "Llama 3.3 (70B)", "80 GB", 80, 89389),
]

PUBLISHED: list[Published] = [
    *(
        Published(
            "Unsloth requirements",
            UNSLOTH_REQUIREMENTS,
            f"{size} QLoRA (4-bit)",
            text,
            value,
            models,
            _UNSLOTH_MIN,
            "card",
            misses,
        )
        for size, text, value, models, misses in _UNSLOTH_ROWS
    ),
    *(
        Published(
            "Unsloth context-length benchmark",
            UNSLOTH_CONTEXT,
            f"{label}: {length:,} tokens fit",
            text,
            value,
            (model,),
            TrainSettings(batch_size=1, max_len=length, rank=32, trainer="unsloth"),
        )
        for model, label, text, value, length in _UNSLOTH_CONTEXT_ROWS
    ),
    # torchtune's recipe as it stood when the figure was published: rank 8 on q, k, v, o and
    # the MLP, activation checkpointing on the GPU, chunked cross-entropy, torch.compile, a
    # dataset packed to 2048 tokens, batch 2; peak from torchtune's allocator statistics
    Published(
        "torchtune README",
        TORCHTUNE_README,
        "Llama 3.1 8B QLoRA, 1x 4090",
        "7.4 GiB",
        7.4,
        ("Llama-3.1-8B",),
        TrainSettings(batch_size=2, max_len=2048, rank=8, trainer="torchtune"),
        "allocator",
    ),
]


def compare_published() -> list[dict]:
    """Each published figure against the prediction for each model it can stand for."""
    rows = []
    for pub in PUBLISHED:
        for model in pub.models or (None,):
            row = {"published": pub, "model": model, "predicted": None, "error": None}
            if model is not None:
                b = pub.settings.predict(model_dims_for(model))
                got = b.total if pub.compare == "card" else b.without_context()
                row.update(predicted=got / GiB, error=got / (pub.gib * GiB) - 1)
            rows.append(row)
    return rows


def published_table() -> list[str]:
    """The comparison as markdown table rows, the form docs/VRAM.md prints them in."""
    out = []
    for r in compare_published():
        pub = r["published"]
        if r["model"] is None:
            out.append(f"| {pub.source} | {pub.label} | {pub.figure} | (no model named) | - | - |")
            continue
        flag = " (miss)" if r["model"] in pub.misses else ""
        out.append(
            f"| {pub.source} | {pub.label} | {pub.figure} | {r['model']} | "
            f"{r['predicted']:.2f} GiB | {r['error'] * 100:+.1f}%{flag} |"
        )
    return out


def prompt_tokens(task) -> int:
    """An estimate of the longest training prompt of `task` in tokens, before any answer: the
    meta prompt (prompts.meta_messages) around its longest example input, at 3 characters a
    token (English runs about 4, so this errs long) plus 8 tokens a message for the template's
    markers. fit_training lowers max_len no further than this plus the answer budget, since a
    shorter max_len would drop every example."""
    longest = max((e.input for e in task.examples), key=len, default="")
    messages = meta_messages(task, longest)
    return sum(len(m.content) for m in messages) // 3 + 8 * len(messages)


def card_memory() -> tuple[int | None, str]:
    """(bytes, where from) of the card to plan for: SGTUI_GPU_MEM GB when set (a person sharing a
    card caps it so; training reads it too), else the detected card, else (None, why)."""
    given = os.environ.get("SGTUI_GPU_MEM", "").strip()
    if given:
        try:
            return int(float(given) * GiB), "SGTUI_GPU_MEM"
        except ValueError:
            raise SgtuiError(
                f"SGTUI_GPU_MEM must be a number of GB (got {given!r})",
                fix="set it to the memory training may use, e.g. 7.5",
            ) from None
    found = detect_gpu_memory()
    return (found, "detected") if found else (None, "no GPU seen")
