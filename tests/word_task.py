"""The task the training and export tests share: every answer is the same unusual word, which a
LoRA on the bundled model learns in a handful of steps; a run of it written straight into a
store; and greedy decoding through transformers to see what a model says.

A plain module, not a test module: tests import it (the fixtures built on it are in
conftest.py)."""

from __future__ import annotations

from sgtui.store import Store
from sgtui.task import parse_task

WORD = "flibbertigibbet"
WORD_TASK = {
    "name": "colour-thing",
    "type": "generation",
    "instruction": "Name a thing of this colour.",
    "examples": [{"input": "red", "output": "apple"}, {"input": "blue", "output": "sky"}],
}
# Flags for a short run whose test is about plumbing (a model by name, a server, a base model),
# not about which samples pass: every filter off and any vote winner kept, so the run has
# training pairs whatever a given CPU's llama.cpp build happens to sample.
KEEP_EVERY_SAMPLE = [
    "--no-small-filters",
    "--no-noise-filter",
    "--no-answer-filters",
    "--no-input-dependence",
    "--no-input-length-filter",
    "--no-output-length-filter",
    "--min-frequency",
    "0",
    "--min-agreement",
    "0",
]
COLOURS = ["green", "yellow", "black", "white", "purple", "orange", "pink", "brown"]


def make_run(
    store: Store,
    pairs,
    task_dict=WORD_TASK,
    model: str = "model.gguf",
    status: str = "kept",
    filt: str | None = None,
) -> int:
    task = parse_task(task_dict, "test")
    run_id = store.create_run(task, store.add_task(task), {}, model, "llama-cpp")
    for i, (x, y) in enumerate(pairs):
        store.add_sample(
            run_id,
            round=0,
            slot=i,
            stage="annotated" if status == "kept" else "inputs",
            status=status,
            filter=filt,
            input=x,
            output=y,
        )
    return run_id


def greedy(model, tok, prompt: str, n: int = 8) -> str:
    import torch

    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(
            **ids,
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=tok.pad_token_id or tok.eos_token_id,
        )
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
