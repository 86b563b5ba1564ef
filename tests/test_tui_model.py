"""The model picker: the bundled model, every model found in Ollama's, LM Studio's and the
Hugging Face cache's folders (fake layouts around the bundled GGUF, as in
test_models_by_name.py), with their metadata; and a path or a name typed in."""

from __future__ import annotations

import pytest
from fakes import make_app, screen_text, settle, wait_until
from test_models_by_name import digest, stores  # noqa: F401  (fixtures)
from textual.widgets import Input, OptionList

from sgtui.tui.bootstrap import default_model


@pytest.fixture(autouse=True)
def no_stores(tmp_path, monkeypatch):
    """The machine's own Ollama, LM Studio and Hugging Face folders stay out of these tests."""
    for var in ("OLLAMA_MODELS", "LMSTUDIO_MODELS", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / "none" / var))
    monkeypatch.setenv("HOME", str(tmp_path / "none"))


async def open_picker(pilot) -> None:
    await pilot.press("m")
    await wait_until(pilot, lambda: pilot.app.screen.__class__.__name__ == "ModelPicker")
    await settle(pilot.app, pilot)  # the list is read in a worker


async def type_path(pilot, path: str) -> None:
    field = pilot.app.screen.query_one("#model-path", Input)
    field.focus()
    field.value = path
    await pilot.press("enter")
    await pilot.pause()


def cells(app, name: str) -> list[str]:
    """The metadata columns shown after a model's name."""
    line = next(x for x in screen_text(app).splitlines() if name in x)
    return line.split(name, 1)[1].split()[:6]


@pytest.mark.asyncio
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
            assert cells(app, "SmolLM2-135M-Instruct (bundled)") == [
                "llama",
                "135M",
                "Q4_1",
                "98",
                "MB",
                "yes",
            ]
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
        # both stay in the list for next time, unreadable as models but listed
        await open_picker(pilot)
        text = screen_text(app)
        assert "tiny.gguf" in text and "hf-model" in text
        await pilot.press("escape")


@pytest.mark.asyncio
async def test_models_on_the_machine_are_listed_and_picked_by_name(stores, tmp_path):  # noqa: F811
    app = make_app(tmp_path / "m.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_picker(pilot)
        picker = app.screen
        names = [m.name for m in picker.entries]
        for name in (
            "ollama:smollm2:135m",
            "lmstudio:pub/multi/multi.Q8_0.gguf",
            "tiny-org/tiny-llama",
            "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        ):
            assert name in names
        ol = picker.query_one("#model-list", OptionList)
        ol.highlighted = names.index("ollama:smollm2:135m")
        await pilot.pause()
        assert cells(app, "ollama:smollm2:135m") == ["llama", "135M", "Q4_1", "98", "MB", "yes"]
        assert "Ollama · blobs/sha256-" in screen_text(app)  # where it was found
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is app.main)
        # the picker gives the name to type; the app resolves it when it loads the model
        assert (app.model_path, app.backend) == ("ollama:smollm2:135m", "llama-cpp")

        await open_picker(pilot)
        ol = app.screen.query_one("#model-list", OptionList)
        assert ol.highlighted == names.index("ollama:smollm2:135m")  # the current model
        await type_path(pilot, "tiny-org/tiny-llama")  # a repo id in the hub cache
        await wait_until(pilot, lambda: app.screen is app.main)
        assert (app.model_path, app.backend) == ("tiny-org/tiny-llama", "transformers")

        await open_picker(pilot)
        await type_path(pilot, "ollama:smollm2:360m")
        assert "ollama pull smollm2:360m" in screen_text(app)
        await type_path(pilot, "lmstudio:pub/multi")
        assert "lmstudio:pub/multi/multi.Q4_1.gguf" in screen_text(app)  # name one, it says
        await pilot.press("escape")


@pytest.mark.asyncio
async def test_a_broken_entry_is_listed_as_skipped(stores, tmp_path):  # noqa: F811
    cut = stores["lmstudio"] / "pub" / "cut" / "cut.gguf"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(b"GGUF\x03\0\0\0")
    app = make_app(tmp_path / "m.db")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_picker(pilot)
        assert "skipped lmstudio:pub/cut: LM Studio · pub/cut/cut.gguf: ValueError" in (
            screen_text(app)
        )
        assert len(app.screen.entries) == 10  # the nine others and fake.gguf
        await pilot.press("escape")


def test_picker_snapshot(snap_compare, stores, tmp_path):  # noqa: F811
    """The picker on the fake stores, the Ollama model current, at 80x24."""
    app = make_app(tmp_path / "m.db")
    app.model_path, app.known_models = "ollama:smollm2:135m", []

    async def run_before(pilot) -> None:
        await open_picker(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
