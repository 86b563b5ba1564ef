"""Trainer backends: LoRA fine-tuning of a causal LM on (prompt, answer) texts.

Two backends behind one small interface, chosen automatically (`select_trainer`):

- "unsloth": Unsloth's FastLanguageModel, 4-bit QLoRA, when CUDA and unsloth are importable;
- "peft": transformers + peft LoRA everywhere else: bitsandbytes 4-bit on CUDA when installed,
  bf16 autocast on a CPU where bf16 is measurably faster than fp32, fp32 otherwise; sdpa
  attention (flash-attention-2 on CUDA when installed).

Both share one training loop (`fit`): loss only on answer tokens and EOS, length-grouped
batches, linear LR decay without warmup (the HF Trainer default the paper used), an epoch
checkpoint (adapter safetensors + optimizer state as safetensors + JSON; no pickle) that a
killed training resumes from. torch, transformers, peft and unsloth are imported only inside.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from sgtui.errors import SgtuiError
from sgtui.paths import home

from .llama_cpp import check_gguf

Emit = Callable[[dict], None]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTER_FILE = "adapter_model.safetensors"
TRAINING_INFO = "sgtui_training.json"


@dataclass
class TrainSpec:
    """One training: the base model, the rendered texts and where results go."""

    base_model: str
    texts: list[tuple[str, str]]  # (prompt, answer + EOS text)
    params: Any  # sgtui.training.TrainParams
    out_dir: Path  # the final adapter folder
    checkpoints: Path  # epoch-<k> folders
    add_bos: bool = False  # prepend BOS to the prompt, as the generator does
    resume: bool = False
    trust_remote_code: bool = False
    cache_dir: Path | None = None  # where a GGUF base is dequantised to a HF folder once


@dataclass
class TrainResult:
    adapter: Path
    steps: int
    n_examples: int
    dropped: int
    losses: list[float] = field(default_factory=list)
    tokens_per_s: float = 0.0


@runtime_checkable
class Trainer(Protocol):
    name: str
    uses_cuda: bool
    quantized_4bit: bool
    supports_resume: bool

    def prepare(self) -> None:
        """Import what must come first (unsloth patches transformers on import)."""
        ...

    def train(self, spec: TrainSpec, emit: Emit) -> TrainResult: ...


# -- choosing a backend -----------------------------------------------------------------------
def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU at all (AVX512 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        cap = torch.backends.cpu.get_cpu_capability()
        return cap.startswith("AVX512") or cap.startswith("AMX")


_BF16_FASTER: bool | None = None


def cpu_bf16_faster() -> bool:
    """Whether bf16 matmuls beat fp32 here, by a quick interleaved timing (~0.5 s). oneDNN
    "supports" bf16 on any AVX512 CPU, but without the AVX512-BF16 or AMX instructions it
    emulates them and a bf16 matmul can be several times slower than fp32."""
    global _BF16_FASTER
    if _BF16_FASTER is None:
        _BF16_FASTER = cpu_bf16_supported() and _bf16_speedup() > 1.15
    return _BF16_FASTER


def _bf16_speedup(trials: int = 5) -> float:
    import torch

    a, b = torch.randn(256, 576), torch.randn(576, 1536)
    ah, bh = a.bfloat16(), b.bfloat16()
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for i in range(trials + 1):
        for name, (x, y) in (("fp32", (a, b)), ("bf16", (ah, bh))):
            t = time.perf_counter()
            torch.mm(x, y)
            if i:  # the first round warms up
                best[name] = min(best[name], time.perf_counter() - t)
    return best["fp32"] / best["bf16"]


def names() -> list[str]:
    return ["unsloth", "peft"]


def select_trainer(choice: str = "auto", precision: str = "auto") -> Trainer:
    """unsloth when CUDA and unsloth are there; peft otherwise. A named choice that cannot run
    here is refused with the reason."""
    cuda = cuda_available()
    has_unsloth = find_spec("unsloth") is not None
    if choice == "unsloth" or (choice == "auto" and cuda and has_unsloth):
        if not cuda:
            raise SgtuiError(
                "the unsloth trainer needs a CUDA GPU, and torch sees none",
                fix="use --trainer peft (or auto)",
            )
        if not has_unsloth:
            raise SgtuiError(
                "the unsloth trainer needs the python package 'unsloth'",
                fix="pip install 'sgtui[gpu]', or use --trainer peft",
            )
        return UnslothTrainer()
    if choice not in ("auto", "peft"):
        raise SgtuiError(f"unknown trainer {choice!r}", fix="use auto, unsloth or peft")
    return PeftTrainer(cuda=cuda, precision=precision)


# -- base model -------------------------------------------------------------------------------
def default_cache() -> Path:
    return Path(os.environ.get("SGTUI_CACHE") or home() / "cache")


def hf_folder(
    model_path: str | Path, cache_dir: Path | None = None, trust_remote_code: bool = False
) -> Path:
    """A Hugging Face folder for the base model. A GGUF file is dequantised by transformers once
    and kept (safetensors) under the cache: reading a GGUF through transformers takes a minute
    or more, the saved folder about a second."""
    p = Path(model_path)
    if p.is_dir():
        if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
            raise SgtuiError(
                "this Hugging Face folder holds no weights",
                path=str(p),
                fix="point --model at a folder with the model's weights",
            )
        return p
    check_gguf(p)
    st = p.stat()
    key = hashlib.sha256(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = cache_dir or default_cache()
    dest = root / "hf" / f"{p.stem}-{key}"
    if (dest / "config.json").is_file() and (dest / "source.json").is_file():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # fp32 keeps the dequantised values exact for small models; bf16 halves a large one
    dtype = torch.float32 if st.st_size < 1.5e9 else torch.bfloat16
    try:
        tok = AutoTokenizer.from_pretrained(
            str(p.parent), gguf_file=p.name, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(p.parent), gguf_file=p.name, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise SgtuiError(
            f"transformers could not read this GGUF ({str(e).splitlines()[0]})",
            path=str(p),
            fix="pass --model with the model's Hugging Face folder instead",
        ) from e
    _forget_gguf_quantizer(model)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "source.json").write_text(json.dumps({"gguf": p.name, "size": st.st_size}))
    try:
        tmp.rename(dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _forget_gguf_quantizer(model) -> None:
    """A model read from GGUF is marked as gguf-quantized and transformers refuses to save it;
    its weights are plain dequantised tensors, so the mark can go."""
    model.hf_quantizer = None
    for cfg in (model.config, getattr(getattr(model, "base_model", None), "config", None)):
        if cfg is not None and hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")


# -- data -------------------------------------------------------------------------------------
@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # -100 on the prompt: loss only on answer tokens and EOS


def encode(
    tokenizer, texts: Sequence[tuple[str, str]], max_len: int, add_bos: bool = False
) -> tuple[list[Encoded], int]:
    """Tokenise prompt and answer separately, as at inference (the prompt is tokenised alone,
    then the answer is generated after it). Returns the examples and how many were dropped for
    being longer than max_len."""
    out: list[Encoded] = []
    dropped = 0
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    for prompt, answer in texts:
        p = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(p) + len(a) > max_len:
            dropped += 1
            continue
        out.append(Encoded(p + a, [-100] * len(p) + a))
    return out, dropped


def length_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffle, sort by length within windows of 16 batches, cut, shuffle the batches: little
    padding, still a different order every epoch. Always ceil(n / batch_size) batches."""
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = batch_size * 16
    batches: list[list[int]] = []
    for s in range(0, len(idx), window):
        part = sorted(idx[s : s + window], key=lambda i: lengths[i])
        batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Encoded], pad_id: int):
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return ids, mask, labels


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


MIN_SHARED_PREFIX = 32  # shorter common prefixes are evaluated per example


def plain_loss(model, examples: Sequence[Encoded], pad_id: int, device: str):
    """The textbook step: the whole padded batch through the model, transformers' loss."""
    ids, mask, labels = (t.to(device) for t in collate(examples, pad_id))
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss, int(mask.sum())


def answer_loss(model, examples: Sequence[Encoded], pad_id: int, device: str):
    """The same loss as `plain_loss`, with less work (docs/PERFORMANCE.md):

    - every example of a batch starts with the same few-shot prompt (instruction,
      demonstrations, template), so that common token prefix runs through the model once and
      its keys and values are repeated for each example; gradients flow through it as usual;
    - the vocabulary projection and cross-entropy run only at positions that predict an answer
      token, not at every prompt position.
    Returns (mean loss over answer tokens, the examples' tokens, padding not counted)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    seqs = [e.input_ids for e in examples]
    first_answer = min(next(i for i, t in enumerate(e.labels) if t != -100) for e in examples)
    # the prefix ends before the token that predicts the first answer token
    n = min(common_prefix_len(seqs), first_answer - 1) if len(examples) > 1 else 0
    past = None
    # gradient checkpointing (4-bit QLoRA on CUDA) turns the cache off: no sharing there
    checkpointing = getattr(base, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers before 5
        checkpointing = getattr(base, "is_gradient_checkpointing", False)
    if n >= MIN_SHARED_PREFIX and not checkpointing:
        prefix = torch.tensor([seqs[0][:n]], dtype=torch.long, device=device)
        past = decoder(input_ids=prefix, use_cache=True).past_key_values
    if past is None:
        n = 0
    else:
        past.batch_repeat_interleave(len(examples))
    ids, mask, labels = (
        t.to(device)
        for t in collate([Encoded(e.input_ids[n:], e.labels[n:]) for e in examples], pad_id)
    )
    if past is not None:
        mask = torch.cat([torch.ones((len(examples), n), dtype=mask.dtype, device=device), mask], 1)
    hidden = decoder(
        input_ids=ids, attention_mask=mask, past_key_values=past, use_cache=past is not None
    ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep]).float()
    loss = torch.nn.functional.cross_entropy(logits, targets[keep])
    return loss, sum(len(s) for s in seqs)


# -- checkpoints ------------------------------------------------------------------------------
def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = []
    for d in checkpoints.glob("epoch-*"):
        if (d / "state.json").is_file() and (d / ADAPTER_FILE).is_file():
            try:
                found.append((int(d.name.split("-", 1)[1]), d))
            except ValueError:
                continue
    return max(found)[1] if found else None


def save_optimizer(optimizer, folder: Path) -> None:
    """Optimizer state as safetensors (tensors) + JSON (groups and scalars): nothing pickled."""
    import torch
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(
        json.dumps({"param_groups": sd["param_groups"], "scalars": scalars})
    )


def load_optimizer(optimizer, folder: Path) -> None:
    from safetensors.torch import load_file

    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for key, t in load_file(str(folder / "optimizer.safetensors")).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _save_adapter(model, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Swap a finished folder into place, so a kill mid-save never leaves a half folder under
    the real name."""
    old = dest.parent / f".{dest.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


# -- the loop ---------------------------------------------------------------------------------
@dataclass
class Device:
    name: str  # "cpu" | "cuda"
    amp_dtype: Any = None  # torch dtype for autocast, or None
    label: str = "fp32"


def fit(
    model,
    tokenizer,
    spec: TrainSpec,
    device: Device,
    emit: Emit,
    backend: str,
    step_loss=answer_loss,
) -> TrainResult:
    """Train the LoRA weights of `model` (a peft model) on spec.texts. `step_loss` computes a
    batch's loss: `answer_loss` (shared prefix, answer-only logits) or `plain_loss`."""
    import contextlib

    import torch

    p = spec.params
    data, dropped = encode(tokenizer, spec.texts, p.max_len, spec.add_bos)
    if not data:
        raise SgtuiError(
            f"all {len(spec.texts)} training examples are longer than --max-len "
            f"{p.max_len} tokens, so training did not start",
            fix="raise --max-len, or shorten the task's examples",
        )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    steps_per_epoch = math.ceil(len(data) / p.batch_size)
    total = steps_per_epoch * p.epochs
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=p.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if device.amp_dtype == torch.float16 else None
    start_epoch, step = 0, 0
    if spec.resume:
        ck = latest_checkpoint(spec.checkpoints)
        if ck is not None:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            state = json.loads((ck / "state.json").read_text())
            set_peft_model_state_dict(model, load_file(str(ck / ADAPTER_FILE), device=device.name))
            load_optimizer(opt, ck)
            start_epoch, step = int(state["epoch"]), int(state["step"])
            emit({"event": "resumed", "checkpoint": str(ck), "epoch": start_epoch, "step": step})
    emit(
        {
            "event": "start",
            "backend": backend,
            "device": device.name,
            "precision": device.label,
            "examples": len(data),
            "dropped": dropped,
            "total_steps": total,
            "steps_per_epoch": steps_per_epoch,
            "epochs": p.epochs,
            "start_step": step,
            "trainable_params": sum(q.numel() for q in trainable),
        }
    )
    lengths = [len(e.input_ids) for e in data]
    amp = (
        torch.autocast(device.name, dtype=device.amp_dtype)
        if device.amp_dtype is not None
        else contextlib.nullcontext()
    )
    losses: list[float] = []
    t0, tokens_seen, steps_here = time.monotonic(), 0, 0
    model.train()
    for epoch in range(start_epoch, p.epochs):
        # a fixed seed per epoch: a resumed epoch sees the same order and dropout as a fresh one
        torch.manual_seed(p.seed + epoch)
        for batch in length_batches(lengths, p.batch_size, p.seed + epoch):
            for g in opt.param_groups:  # linear decay to 0, no warmup (HF Trainer default)
                g["lr"] = p.lr * (1 - step / total)
            with amp:
                loss, n_tokens = step_loss(model, [data[i] for i in batch], pad_id, device.name)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if p.grad_clip:
                torch.nn.utils.clip_grad_norm_(trainable, p.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            steps_here += 1
            tokens_seen += n_tokens
            losses.append(float(loss.detach()))
            elapsed = time.monotonic() - t0
            emit(
                {
                    "event": "progress",
                    "step": step,
                    "epoch": round(step / steps_per_epoch, 4),
                    "loss": losses[-1],
                    "tokens_per_s": tokens_seen / max(elapsed, 1e-9),
                    "eta_s": (total - step) * elapsed / steps_here,
                    "total_steps": total,
                    "epoch_end": step % steps_per_epoch == 0,
                }
            )
        ck = spec.checkpoints / f"epoch-{epoch + 1}"
        tmp = spec.checkpoints / f".epoch-{epoch + 1}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_adapter(model, tmp)
        save_optimizer(opt, tmp)
        (tmp / "state.json").write_text(
            json.dumps(
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "total_steps": total,
                    "params": p.to_dict(),
                    "base_model": spec.base_model,
                    "examples": len(data),
                    "dropped": dropped,
                }
            )
        )
        _replace_dir(tmp, ck)
        emit({"event": "checkpoint", "epoch": epoch + 1, "step": step, "path": str(ck)})
    tmp = spec.out_dir.parent / f".{spec.out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_adapter(model, tmp)
    (tmp / TRAINING_INFO).write_text(
        json.dumps(
            {
                "base_model": spec.base_model,
                "backend": backend,
                "precision": device.label,
                "params": p.to_dict(),
                "examples": len(data),
                "dropped": dropped,
                "steps": step,
            },
            indent=1,
        )
    )
    _replace_dir(tmp, spec.out_dir)
    elapsed = time.monotonic() - t0
    return TrainResult(
        spec.out_dir,
        step,
        len(data),
        dropped,
        losses,
        tokens_seen / elapsed if elapsed > 0 else 0.0,
    )


# -- transformers + peft ----------------------------------------------------------------------
def _attn_implementation(cuda: bool) -> str:
    if cuda and find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


class PeftTrainer:
    """transformers + peft LoRA. CPU: bf16 autocast where supported, else fp32. CUDA: 4-bit
    QLoRA with bitsandbytes when installed, else bf16 LoRA."""

    name = "peft"
    supports_resume = True

    def __init__(self, cuda: bool = False, precision: str = "auto"):
        self.uses_cuda = cuda
        self.quantized_4bit = cuda and find_spec("bitsandbytes") is not None
        self.precision = precision
        # gradient checkpointing: always with 4-bit (prepare_model_for_kbit_training); for
        # 16-bit on CUDA when the memory plan turns it on (train_worker.fit_to_card)
        self.checkpointing = self.quantized_4bit

    def prepare(self) -> None:
        return None

    def device(self) -> Device:
        import torch

        if self.uses_cuda:
            bf16 = torch.cuda.is_bf16_supported()
            if self.precision == "fp32":
                return Device("cuda", None, "fp32")
            return Device(
                "cuda", torch.bfloat16 if bf16 else torch.float16, "bf16" if bf16 else "fp16"
            )
        if self.precision == "bf16" or (self.precision == "auto" and cpu_bf16_faster()):
            return Device("cpu", torch.bfloat16, "bf16 autocast")
        return Device("cpu", None, "fp32")

    def load(self, spec: TrainSpec):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = hf_folder(spec.base_model, spec.cache_dir, spec.trust_remote_code)
        kwargs: dict = {
            "trust_remote_code": spec.trust_remote_code,
            "attn_implementation": _attn_implementation(self.uses_cuda),
        }
        if self.uses_cuda:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            kwargs.update(dtype=dtype, device_map={"": 0})
            if self.quantized_4bit:
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=dtype,
                )
        else:
            kwargs["dtype"] = torch.float32
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=spec.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        if self.quantized_4bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        elif self.checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()  # the frozen embeddings give no gradient
        model.config.use_cache = False
        p = spec.params
        torch.manual_seed(p.seed)  # the LoRA A initialisation
        config = LoraConfig(
            r=p.rank,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules="all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config), tok

    def train(self, spec: TrainSpec, emit: Emit) -> TrainResult:
        model, tok = self.load(spec)
        return fit(
            model,
            tok,
            spec,
            self.device(),
            emit,
            "peft+bnb-4bit" if self.quantized_4bit else "peft",
        )


# -- unsloth ----------------------------------------------------------------------------------
class UnslothTrainer:
    """Unsloth FastLanguageModel: 4-bit QLoRA with Unsloth's defaults and its gradient
    checkpointing. Needs CUDA; unsloth is imported first, as it asks."""

    name = "unsloth"
    uses_cuda = True
    quantized_4bit = True
    supports_resume = True

    def prepare(self) -> None:
        import unsloth  # noqa: F401  (patches transformers; must precede its import)

    def train(self, spec: TrainSpec, emit: Emit) -> TrainResult:
        self.prepare()
        import torch
        from unsloth import FastLanguageModel

        folder = hf_folder(spec.base_model, spec.cache_dir, spec.trust_remote_code)
        p = spec.params
        model, tok = FastLanguageModel.from_pretrained(
            model_name=str(folder),
            max_seq_length=p.max_len,
            dtype=None,
            load_in_4bit=True,
            trust_remote_code=spec.trust_remote_code,
        )
        model = FastLanguageModel.get_peft_model(
            model,
            r=p.rank,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules=LORA_TARGETS,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=p.seed,
        )
        FastLanguageModel.for_training(model)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        bf16 = torch.cuda.is_bf16_supported()
        device = Device(
            "cuda",
            torch.bfloat16 if bf16 else torch.float16,
            "4-bit + " + ("bf16" if bf16 else "fp16"),
        )
        # Unsloth patches the forward pass and its loss; keep its own path
        return fit(model, tok, spec, device, emit, "unsloth", step_loss=plain_loss)
