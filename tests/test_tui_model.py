"""The model picker: the bundled model, and a GGUF file or Hugging Face folder by path."""

from __future__ import annotations

import pytest
from fakes import make_app, screen_text, wait_until
from textual.widgets import Input

from sgtui.tui.bootstrap import default_model

pytestmark = pytest.mark.asyncio


async def open_picker(pilot) -> None:
    await pilot.press("m")
    await wait_until(pilot, lambda: pilot.app.screen.__class__.__name__ == "ModelPicker")


async def type_path(pilot, path: str) -> None:
    field = pilot.app.screen.query_one("#model-path", Input)
    field.focus()
    field.value = path
    await pilot.press("enter")
    await pilot.pause()


async def test_bundled_model_is_listed_and_paths_are_checked(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    app = make_app(tmp_path / "m.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_picker(pilot)
        if default_model():
            assert "SmolLM2-135M-Instruct (bundled)" in screen_text(app)
        await type_path(pilot, str(tmp_path / "missing.gguf"))
        assert "model file not found" in screen_text(app)
        not_gguf = tmp_path / "notes.txt"
        not_gguf.write_text("hello")
        await type_path(pilot, str(not_gguf))
        assert "not a GGUF model file" in screen_text(app)
        await type_path(pilot, str(gguf))
        await wait_until(pilot, lambda: app.screen is app.main)
        assert (app.model_path, app.backend) == (str(gguf), "llama-cpp")
        await open_picker(pilot)
        await type_path(pilot, str(folder))
        await wait_until(pilot, lambda: app.screen is app.main)
        assert (app.model_path, app.backend) == (str(folder), "transformers")
        # both stay in the list for next time
        await open_picker(pilot)
        text = screen_text(app)
        assert "tiny.gguf" in text and "hf-model" in text
        await pilot.press("escape")
