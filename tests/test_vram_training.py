"""The training child applies the memory plan before it trains on a GPU (train_worker.fit_to_card).

No GPU here: the card's size comes from SGTUI_GPU_MEM, which is also how a person caps it, and
the trainer is described by the traits fit_to_card reads. What runs on a real card is
bench/gpu_check.sh's to show."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sgtui.errors import SgtuiError
from sgtui.train_worker import fit_to_card
from sgtui.training import TrainParams


def peft_4bit():
    return SimpleNamespace(name="peft", uses_cuda=True, quantized_4bit=True, checkpointing=True)


def test_a_small_card_lowers_the_batch_and_says_so(bundled_model, monkeypatch):
    monkeypatch.setenv("SGTUI_GPU_MEM", "1.2")
    seen = []
    params, plan = fit_to_card(
        peft_4bit(), bundled_model, TrainParams(batch_size=64, max_len=4096), seen.append
    )
    assert plan.fits and params.batch_size < 64
    assert plan.settings.batch_size == params.batch_size
    assert params.max_len == plan.settings.max_len
    assert params.lr == TrainParams().lr  # nothing else is touched
    (notice,) = seen
    assert notice["event"] == "notice" and "batch size 64 ->" in notice["text"]


def test_a_card_that_holds_it_changes_nothing(bundled_model, monkeypatch):
    monkeypatch.setenv("SGTUI_GPU_MEM", "80")
    seen = []
    params, plan = fit_to_card(peft_4bit(), bundled_model, TrainParams(), seen.append)
    assert plan.fits and not plan.changes and seen == [] and params == TrainParams()


def test_16_bit_training_gets_checkpointing_before_a_smaller_batch(bundled_model, monkeypatch):
    monkeypatch.setenv("SGTUI_GPU_MEM", "2")
    trainer = SimpleNamespace(
        name="peft", uses_cuda=True, quantized_4bit=False, checkpointing=False
    )
    params, plan = fit_to_card(
        trainer, bundled_model, TrainParams(batch_size=32, max_len=2048), lambda e: None
    )
    assert plan.settings.checkpointing and trainer.checkpointing
    assert "gradient checkpointing off -> on" in plan.changes[0]


def test_a_bad_cap_is_a_clear_error(bundled_model, monkeypatch):
    monkeypatch.setenv("SGTUI_GPU_MEM", "lots")
    with pytest.raises(SgtuiError, match="SGTUI_GPU_MEM must be a number"):
        fit_to_card(peft_4bit(), bundled_model, TrainParams(), lambda e: None)
