"""Fine-tuning: training data, parameters, the child process, kill + resume, the GPU path.

The slow tests train the bundled SmolLM2 for a few steps on pairs whose answer is always the
same unusual word (tests/word_task.py), which a LoRA learns in a handful of steps. A GGUF base
is dequantised to a Hugging Face folder once per session (the hf_cache_dir fixture), and the
kill-and-resume training runs once per session (the trained fixture, tests/conftest.py).
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import pytest
from word_task import COLOURS, WORD, WORD_TASK, greedy, make_run

from sgtui.errors import SgtuiError
from sgtui.store import Store
from sgtui.task import parse_task

pytestmark = pytest.mark.usefixtures("shared_cache")


# -- parameters and batching (fast) -----------------------------------------------------------
def test_defaults_and_argv_round_trip():
    import json

    from sgtui.train_worker import build_parser
    from sgtui.training import TrainParams

    p = TrainParams()
    assert (p.rank, p.alpha, p.dropout, p.lr, p.epochs, p.batch_size, p.max_len, p.seed) == (
        16,
        32,
        0.0,
        2e-4,
        3,
        8,
        1024,
        42,
    )
    q = p.override(epochs=1, lr=1e-3, seeds_only=True)
    args = build_parser().parse_args(
        ["--db", "x.db", "--run", "1", "--params", json.dumps(q.to_dict())]
    )
    assert TrainParams.from_dict(args.params) == q
    with pytest.raises(ValueError):
        p.override(learning_rate=1.0)
    with pytest.raises(SgtuiError, match="batch-size"):
        p.override(batch_size=0)


def test_length_batches_cover_every_example_once():
    from backends.training import length_batches

    lengths = [5, 50, 7, 300, 12, 13, 90, 91, 8, 1, 2]
    for bs in (1, 3, 4, 11, 20):
        batches = length_batches(lengths, bs, seed=1)
        assert len(batches) == math.ceil(len(lengths) / bs)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert length_batches(lengths, 3, 1) == length_batches(lengths, 3, 1)
    assert length_batches(lengths, 3, 1) != length_batches(lengths, 3, 2)


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    import torch

    from backends.training import load_optimizer, save_optimizer

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    save_optimizer(opt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    opt2 = torch.optim.AdamW(model.parameters(), lr=5.0)
    load_optimizer(opt2, tmp_path)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, state in a["state"].items():
        for k, v in state.items():
            assert torch.equal(v, b["state"][pid][k])


# -- empty training set (fast) ----------------------------------------------------------------
def test_empty_training_set_is_refused_before_training(tmp_path, capsys):
    from sgtui.cli import main
    from sgtui.training import TrainingJob, TrainParams

    db = tmp_path / "e.db"
    store = Store(db)
    run_id = make_run(
        store, [("a", None), ("b", None), ("c", None)], status="filtered", filt="noise"
    )
    store.add_sample(
        run_id, round=1, slot=0, stage="inputs", status="filtered", filter="input_length", input="x"
    )
    job = TrainingJob()
    with pytest.raises(SgtuiError) as err:
        job.start(db, run_id, TrainParams())
    text = err.value.render()
    assert "training did not start" in text and "noise 3" in text and "input_length 1" in text
    assert "--seeds-only" in text
    assert job.proc is None  # no child was started
    assert main(["train", str(run_id), "--db", str(db)]) == 2
    assert "has no training pairs" in capsys.readouterr().err


def test_seeds_only_uses_the_task_examples(tmp_path):
    from sgtui.training import training_pairs

    store = Store(tmp_path / "s.db")
    run_id = make_run(store, [])
    assert training_pairs(store, run_id, seeds_only=True) == [("red", "apple"), ("blue", "sky")]


def test_seed_examples_train_without_themselves_among_the_demonstrations():
    from sgtui.task import parse_task
    from sgtui.training import ChatFormat, seed_texts

    task = parse_task(
        {
            "name": "t",
            "type": "generation",
            "instruction": "Say it formally.",
            "examples": [
                {"input": "thx", "output": "Thank you."},
                {"input": "hi", "output": "Good day."},
                {"input": "bye", "output": "Farewell."},
            ],
        }
    )
    texts = seed_texts(task, ChatFormat(None, "", "</s>"), 2)
    assert [a for _, a in texts] == ["Thank you.</s>"] * 2 + ["Good day.</s>"] * 2 + [
        "Farewell.</s>"
    ] * 2
    prompt = texts[2][0]  # "hi": the other two examples are its demonstrations
    assert "thx" in prompt and "bye" in prompt and "Good day." not in prompt
    assert prompt.endswith("Input: [input] = hi\nOutput:\n")
    assert seed_texts(task, ChatFormat(None, "", "</s>"), 0) == []


# -- rendering and the loss mask --------------------------------------------------------------
@pytest.mark.slow
def test_prompt_matches_llama_cpp_and_mask_covers_exactly_the_prompt(bundled_model, llama, hf_base):
    from transformers import AutoTokenizer

    from backends.training import encode
    from sgtui.prompts import meta_messages
    from sgtui.training import chat_format, render_pairs

    task = parse_task(WORD_TASK, "test")
    fmt = chat_format(bundled_model)
    texts = render_pairs(task, [("green", "  leaf \n"), ("a " * 400, "x")], fmt)
    prompt, answer = texts[0]
    # byte-identical to what evaluation renders through llama.cpp
    assert prompt == llama.render_chat(meta_messages(task, "green"))
    assert answer == "leaf" + llama.eos_text() and fmt.eos == "<|im_end|>"

    tok = AutoTokenizer.from_pretrained(str(hf_base))
    data, dropped = encode(tok, texts, max_len=200, add_bos=fmt.add_bos)
    assert dropped == 1 and len(data) == 1
    ex = data[0]
    prompt_ids = llama.llm.tokenize(prompt.encode(), add_bos=fmt.add_bos, special=True)
    n_masked = sum(1 for label in ex.labels if label == -100)
    assert ex.input_ids[: len(prompt_ids)] == prompt_ids  # the same tokens llama.cpp decodes after
    assert n_masked == len(prompt_ids) and ex.labels[:n_masked] == [-100] * n_masked
    supervised = ex.labels[n_masked:]
    assert supervised == ex.input_ids[n_masked:]
    assert tok.decode(supervised) == "leaf<|im_end|>"
    assert supervised[-1] == tok.eos_token_id == llama.llm.token_eos()


@pytest.mark.slow
def test_shared_prefix_step_gives_the_plain_loss_and_gradients(bundled_model, hf_base):
    """answer_loss (the few-shot prefix once per batch, logits only where an answer token is
    predicted) is the textbook loss: same value, same gradient on every LoRA weight."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backends.training import answer_loss, common_prefix_len, encode, plain_loss
    from sgtui.training import chat_format, render_pairs

    task = parse_task(WORD_TASK, "test")
    fmt = chat_format(bundled_model)
    pairs = [(c, f"a {c} thing" + " really" * i) for i, c in enumerate(COLOURS[:5])]
    tok = AutoTokenizer.from_pretrained(str(hf_base))
    data, _ = encode(tok, render_pairs(task, pairs, fmt), 1024, fmt.add_bos)
    assert common_prefix_len([e.input_ids for e in data]) > 32  # the prefix path is taken
    model = AutoModelForCausalLM.from_pretrained(str(hf_base), dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    for name, q in model.named_parameters():  # B = 0 at init would hide A's gradient
        if "lora_B" in name:
            torch.nn.init.normal_(q, std=0.02)
    got = {}
    for f in (plain_loss, answer_loss):
        model.zero_grad()
        loss, n_tokens = f(model, data, tok.eos_token_id, "cpu")
        loss.backward()
        got[f.__name__] = (
            loss.item(),
            n_tokens,
            {k: q.grad.clone() for k, q in model.named_parameters() if q.requires_grad},
        )
    (l1, n1, g1), (l2, n2, g2) = got["plain_loss"], got["answer_loss"]
    assert n1 == n2 == sum(len(e.input_ids) for e in data)
    assert l1 == pytest.approx(l2, rel=1e-5)
    assert len(g1) == len(g2) > 0
    scale = max(g.abs().max().item() for g in g1.values())
    assert scale > 0
    for k in g1:
        assert torch.allclose(g1[k], g2[k], atol=1e-5 * scale, rtol=1e-3), k


# -- the child process: kill, resume, and what the adapter learned -----------------------------
# (the training itself is the session fixture `trained`, tests/conftest.py)
@pytest.mark.slow
def test_sigkill_during_training_then_resume(trained):
    assert trained.kill_returncode == -signal.SIGKILL, trained.log_tail
    start = next(e for e in trained.events_before_kill if e["event"] == "start")
    assert start["total_steps"] == 4 and start["examples"] == 2 and start["dropped"] == 0
    assert trained.had_epoch1 and not trained.had_adapter_after_kill
    assert [r["step"] for r in trained.progress_after_kill][-1] == 2  # an epoch end is written

    out = trained.resume
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming after epoch 1 (step 2)" in out.stderr
    assert f"adapter: {trained.adapter}" in out.stdout
    store = Store(trained.db)
    rows = store.progress(trained.run_id)
    steps = [r["step"] for r in rows]
    assert steps[-1] == 4 and steps == sorted(set(steps))  # resumed at step 3, not again at 1
    assert all(r["total_steps"] == 4 for r in rows)
    assert (trained.adapter / "adapter_model.safetensors").is_file()
    assert (trained.checkpoints / "epoch-2" / "optimizer.safetensors").is_file()
    assert store.artifacts(trained.run_id, "adapter")[-1]["path"] == str(trained.adapter)
    assert not (trained.adapter.parent / "train.pid").exists()


@pytest.mark.slow
def test_training_lowers_the_loss_and_changes_the_greedy_answer(trained, bundled_model, hf_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sgtui.prompts import meta_messages
    from sgtui.training import chat_format

    rows = Store(trained.db).progress(trained.run_id)
    assert rows[-1]["loss"] < rows[0]["loss"] / 10
    tok = AutoTokenizer.from_pretrained(str(hf_base))
    base = AutoModelForCausalLM.from_pretrained(str(hf_base))
    tuned = PeftModel.from_pretrained(base, str(trained.adapter))
    prompt = chat_format(bundled_model).render(meta_messages(parse_task(WORD_TASK), "grey"))
    with tuned.disable_adapter():
        before = greedy(tuned, tok, prompt)
    after = greedy(tuned, tok, prompt)
    assert WORD not in before
    assert after.strip().startswith(WORD), after


def test_worker_reports_oom_clearly(tmp_path, monkeypatch, bundled_model):
    """A CUDA out-of-memory error in the child reaches the parent as a message with a fix."""
    from sgtui import train_worker

    db = tmp_path / "o.db"
    run_id = make_run(Store(db), [("green", WORD)], model=bundled_model)

    def boom(*_a, **_k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_worker, "train", boom)
    lines = []

    class Out:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass

    monkeypatch.setattr(train_worker, "_json_stdout", lambda: Out())
    assert train_worker.main(["--db", str(db), "--run", str(run_id)]) == 3
    event = json.loads("".join(lines))
    assert event["kind"] == "oom" and "GPU" in event["message"]
    assert "--batch-size" in event["fix"] and "--max-len" in event["fix"]


# -- the GPU path -----------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.slow
def test_unsloth_qlora_trains_on_cuda(tmp_path, bundled_model):
    pytest.importorskip("unsloth")
    from backends.training import TrainSpec, UnslothTrainer, select_trainer
    from sgtui.training import TrainParams, chat_format, render_pairs

    trainer = select_trainer()
    assert isinstance(trainer, UnslothTrainer) and trainer.uses_cuda and trainer.quantized_4bit
    fmt = chat_format(bundled_model)
    texts = render_pairs(parse_task(WORD_TASK), [(c, WORD) for c in COLOURS], fmt)
    events = []
    spec = TrainSpec(
        bundled_model,
        texts,
        TrainParams(epochs=2, batch_size=4, lr=3e-3),
        tmp_path / "adapter",
        tmp_path / "ck",
        add_bos=fmt.add_bos,
    )
    result = trainer.train(spec, events.append)
    assert (result.adapter / "adapter_model.safetensors").is_file()
    assert result.losses[-1] < result.losses[0]
    assert next(e for e in events if e["event"] == "start")["backend"] == "unsloth"


@pytest.mark.slow
def test_epoch_selection_on_validation_rows(trained, bundled_model, monkeypatch):
    """select_epoch scores the base model and each checkpoint through llama.cpp and picks the
    best; a fine-tune that does no better than the base on validation is not chosen."""
    from sgtui.loop import select_epoch

    monkeypatch.setenv("SGTUI_HOME", str(trained.db.parent))
    store = Store(trained.db)
    task = parse_task(WORD_TASK, "test")
    learned = [{"input": c, "output": WORD} for c in ("grey", "silver", "gold")]
    got = select_epoch(store, trained.run_id, task, learned, bundled_model, max_tokens=12)
    assert set(got["scores"]) == {0, 1, 2}
    assert got["scores"][0] < 50 and got["scores"][2] > 50  # the base never says the word
    assert got["epoch"] >= 1 and got["scores"][got["epoch"]] == max(got["scores"].values())
    assert got["adapter"].endswith(f"epoch-{got['epoch']}.gguf")
    assert {e["system"] for e in store.evals(trained.run_id)} >= {"epoch-1", "epoch-2"}
    # rows the fine-tune cannot help with: the base model (epoch 0) wins the tie or the loss
    other = [{"input": "grey", "output": "zzz qqq"}]
    got = select_epoch(
        store, trained.run_id, task, other, bundled_model, max_tokens=12, base_score=100.0
    )
    assert got["epoch"] == 0 and got["adapter"] is None


@pytest.mark.slow
def test_transformers_generator_reads_a_gguf_through_the_cached_folder(bundled_model, hf_base):
    """The transformers backend loads a GGUF from the folder training dequantised it into,
    not by dequantising the file again, and answers with it."""
    from backends.base import ChatMessage, SamplingParams
    from backends.transformers_gen import TransformersGenerator

    gen = TransformersGenerator(str(bundled_model))
    try:
        assert Path(gen.model.config._name_or_path) == hf_base
        prompt = gen.render_chat([ChatMessage("user", "Say hello.")])
        out = list(gen.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8)))
        assert len(out) == 1 and out[0].text.strip() and out[0].n_tokens > 0
    finally:
        gen.close()


def test_epochs_default_per_task_type_and_a_flag_wins():
    import argparse

    from sgtui.cli_args import add_param_args
    from sgtui.cli_args import train_params_from_args as params_from_args
    from sgtui.training import EPOCHS_BY_TYPE, TrainParams

    ap = argparse.ArgumentParser()
    add_param_args(ap)
    assert (
        params_from_args(ap.parse_args([]), task_type="classification").epochs
        == EPOCHS_BY_TYPE["classification"]
        == 1
    )
    assert params_from_args(ap.parse_args([]), task_type="generation").epochs == 3
    assert (
        params_from_args(ap.parse_args(["--epochs", "5"]), task_type="classification").epochs == 5
    )
    assert params_from_args(ap.parse_args([])).epochs == TrainParams().epochs == 3
