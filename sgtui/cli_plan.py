"""`sgtui plan TASK|RUN`: the GPU memory generation and training will take, per part, and the
training settings that fit the card (sgtui/vram.py; formulas and checks in docs/VRAM.md).
Nothing is loaded: the model's dimensions come from its metadata."""

from __future__ import annotations

import math
from importlib.util import find_spec

from . import vram
from .cli_args import add_model_args, record_id, store_of
from .config import RunParams
from .errors import SgtuiError
from .models import resolve_model
from .paths import bundled_model
from .store import task_of
from .task import load_task_spec
from .training import TrainParams
from .vram import (
    MIN_MAX_LEN,
    GiB,
    TrainSettings,
    fit_training,
    gib,
    model_dims,
    predict_generation,
    prompt_tokens,
)

GEN_CTX = 4096  # the llama.cpp generator's context (backends/llama_cpp.py)


def add_plan_command(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="predict GPU memory for generation and training, and the "
        "training settings that fit the card",
        description="Per-part predictions of peak GPU memory, read from the "
        "model's GGUF metadata or config.json (nothing is loaded), "
        "and the batch size, maximum length and checkpointing that "
        "fit the card. Formulas and checks: docs/VRAM.md.",
    )
    p.add_argument(
        "target",
        metavar="TASK|RUN",
        help="a task file, NI task folder or NI task id, or a run id (its model)",
    )
    add_model_args(p)
    p.add_argument(
        "--gpu-mem",
        type=float,
        metavar="GB",
        help="the card's memory in GB as cards are sold (8 = 8192 MiB); default: the detected card",
    )
    p.add_argument("--batch-size", type=int, metavar="N", help="wanted batch size (default 8)")
    p.add_argument(
        "--max-len",
        type=int,
        metavar="N",
        help="wanted maximum example length in tokens (default 1024)",
    )
    p.add_argument(
        "--trainer",
        choices=("unsloth", "peft"),
        help="the trainer to plan for (default: unsloth when installed, else peft "
        "with bitsandbytes, as training chooses on a GPU)",
    )


def _model_and_answer_budget(args) -> tuple[str, int, int]:
    """The model a plan is for (--model, else the run's model, else the bundled one, as
    `sgtui generate` and `sgtui train` choose), the longest answer training can see (the
    annotation budget, --ann-max-tokens, plus the EOS), and the task's prompt length
    (vram.prompt_tokens)."""
    target = args.target.strip()
    if target.isdigit():
        run = store_of(args.db).run(record_id(target))
        budget = run["params"].get("ann_max_tokens", RunParams.ann_max_tokens)
        task = task_of(run)
        return (
            resolve_model(args.model) if args.model else run["model"],
            budget + 1,
            prompt_tokens(task),
        )
    task = load_task_spec(target)
    budget = RunParams.defaults_for(task.type).ann_max_tokens + 1
    if args.model:
        return resolve_model(args.model), budget, prompt_tokens(task)
    return str(bundled_model()), budget, prompt_tokens(task)


def _card_bytes(args) -> tuple[int | None, str]:
    if args.gpu_mem is not None:
        if not (math.isfinite(args.gpu_mem) and args.gpu_mem > 0):
            raise SgtuiError(
                f"--gpu-mem must be a number of GB above 0 (got {args.gpu_mem})",
                fix="give the card's memory, e.g. --gpu-mem 8",
            )
        n = int(args.gpu_mem * GiB)
        return n, f"card: {gib(n)} (--gpu-mem)"
    n = vram.detect_gpu_memory()
    if n is None:
        return None, "card: no GPU seen: give --gpu-mem GB to choose settings that fit"
    return n, f"card: {gib(n)} (detected)"


def cmd_plan(args) -> int:
    model, answer_tokens, prompt = _model_and_answer_budget(args)
    params = TrainParams().override(batch_size=args.batch_size, max_len=args.max_len)
    dims = model_dims(model)
    trainer = args.trainer or ("unsloth" if find_spec("unsloth") else "peft")
    # both 4-bit trainers turn gradient checkpointing on (backends/training.py); the peft
    # trainer's loss computes logits at the answer tokens only (backends.training.answer_loss)
    wanted = TrainSettings.from_params(
        params,
        checkpointing=True,
        quant_4bit=True,
        trainer=trainer,
        loss_tokens=answer_tokens if trainer == "peft" else None,
    )
    print(f"model: {dims.name} ({model})")
    print(
        f"  {dims.n_layers} layers, hidden {dims.hidden}, {dims.n_heads} heads "
        f"({dims.n_kv_heads} KV), vocabulary {dims.vocab}, {dims.n_params / 1e6:,.1f}M "
        f"parameters; read from {dims.source}"
    )
    card, card_text = _card_bytes(args)
    print(card_text)
    print()
    print(predict_generation(dims, GEN_CTX).text())
    print()
    print(wanted.predict(dims).text())
    print()
    if card is None:
        return 0
    # max_len is lowered no further than the task's prompt and answer: below, nothing trains
    floor = min(params.max_len, max(MIN_MAX_LEN, prompt + answer_tokens))
    print(fit_training(dims, card, wanted, min_len=floor).text())
    return 0
