"""Training throughput: the project's LoRA path against a plain transformers Trainer.

Both train the same LoRA (rank 16, alpha 32, all linear layers, lr 2e-4) on the same rendered
examples of the same model (the bundled SmolLM2, dequantised from its GGUF), batch size 8:

- `sgtui`: backends.training.PeftTrainer, what `sgtui train` runs: length-grouped batches, the
  shared few-shot prefix evaluated once per batch, logits only at answer positions, bf16
  autocast only where this CPU runs bf16 faster than fp32;
- `trainer-fp32`: transformers.Trainer with its defaults (fp32, random batches padded to the
  longest, loss over the full logits) and DataCollatorForSeq2Seq.

Tokens/s counts the examples' real tokens (no padding) over the training loop's wall time.
Each path runs in its own process so peak RSS is its own.

    .venv/bin/python bench/train.py --examples 64 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def texts(args) -> tuple[list[tuple[str, str]], str]:
    """(prompt, answer) pairs rendered as training renders a run's kept samples."""
    from sgtui.paths import bundled_model, shared_ni
    from sgtui.task import load_task
    from sgtui.training import chat_format, render_pairs

    if args.task:
        folder = Path(args.task)
    else:
        ni = shared_ni()
        if ni is None:
            sys.exit("the NI tasks (../shared/ni) are not beside the project; pass --task")
        folder = ni / "task1195"
    task = load_task(folder)
    rows = [
        json.loads(x) for x in (folder / "validation.jsonl").read_text().splitlines() if x.strip()
    ][: args.examples]
    fmt = chat_format(str(bundled_model()))
    return render_pairs(
        task, [(r["input"], r["output"]) for r in rows], fmt
    ), f"{len(rows)} validation rows of {folder.name} as (input, answer) pairs, few-shot prompt"


def run_sgtui(args, pairs) -> dict:
    from backends.training import PeftTrainer, TrainSpec
    from sgtui.paths import bundled_model
    from sgtui.training import TrainParams, chat_format

    fmt = chat_format(str(bundled_model()))
    out = Path(tempfile.mkdtemp(prefix="bench-train-"))
    trainer = PeftTrainer(cuda=False, precision=args.precision)
    spec = TrainSpec(
        str(bundled_model()),
        pairs,
        TrainParams(epochs=args.epochs),
        out / "adapter",
        out / "checkpoints",
        add_bos=fmt.add_bos,
    )
    events: list[dict] = []
    t = time.perf_counter()
    result = trainer.train(spec, events.append)
    wall = time.perf_counter() - t
    start = next(e for e in events if e["event"] == "start")
    progress = [e for e in events if e["event"] == "progress"]
    steps = [e["loss"] for e in progress]
    return {
        "path": "sgtui",
        "precision": start["precision"],
        "steps": result.steps,
        "examples": result.n_examples,
        "tokens_per_s": result.tokens_per_s,
        "final_loss": steps[-1],
        "wall_with_load_s": round(wall, 1),
    }


def run_trainer(args, pairs) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from backends.training import encode, hf_folder
    from sgtui.paths import bundled_model
    from sgtui.training import TrainParams, chat_format

    p = TrainParams(epochs=args.epochs)
    folder = hf_folder(str(bundled_model()))
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    data, _ = encode(tok, pairs, p.max_len, chat_format(str(bundled_model())).add_bos)
    rows = [
        {"input_ids": e.input_ids, "labels": e.labels, "attention_mask": [1] * len(e.input_ids)}
        for e in data
    ]
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    torch.manual_seed(p.seed)
    model = get_peft_model(
        model,
        LoraConfig(
            r=p.rank,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    out = tempfile.mkdtemp(prefix="bench-trainer-")
    targs = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=p.batch_size,
        num_train_epochs=p.epochs,
        learning_rate=p.lr,
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        use_cpu=True,
        seed=p.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=rows,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True),
        callbacks=[Losses()],
    )
    metrics = trainer.train().metrics
    tokens = sum(len(e.input_ids) for e in data) * p.epochs
    return {
        "path": "trainer-fp32",
        "precision": "fp32",
        "steps": trainer.state.global_step,
        "examples": len(data),
        "tokens_per_s": tokens / metrics["train_runtime"],
        "final_loss": losses[-1] if losses else float("nan"),
    }


def worker(path: str, args) -> dict:
    pairs, _ = texts(args)
    r = run_sgtui(args, pairs) if path == "sgtui" else run_trainer(args, pairs)
    r["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return r


def machine() -> str:
    from machine import cpu_model  # bench/machine.py

    cpu = cpu_model()
    import torch

    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} torch threads, no GPU"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", help="an NI task folder (default ../shared/ni/task1195)")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="the sgtui path's precision (auto: bf16 only where it is faster)",
    )
    ap.add_argument("--paths", default="trainer-fp32,sgtui")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "train.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return 0
    runs = []
    for path in args.paths.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", path]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
        if out.returncode != 0:
            sys.exit(f"{path} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append(r)
        print(
            f"{path:13s} {r['precision']:14s} {r['steps']:4d} steps  "
            f"{r['tokens_per_s']:8.1f} tok/s  rss {r['peak_rss_mib']:6.0f} MiB  "
            f"loss {r['final_loss']:.3f}",
            flush=True,
        )
    _, data = texts(args)
    result = {
        "machine": machine(),
        "data": data,
        "command": "python bench/train.py " + " ".join(sys.argv[1:]),
        "runs": runs,
    }
    Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
