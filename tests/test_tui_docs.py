"""Import hygiene (the core never imports Textual) and the TUI docs matching the bindings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_modules_do_not_import_textual():
    code = (
        "import sys, sgtui.cli, sgtui.pipeline, sgtui.store, sgtui.synthesis, sgtui.task; "
        "sgtui.cli.build_parser(); "
        "print('textual' in sys.modules, [m for m in sys.modules if m.startswith('textual')][:3])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.startswith("False"), out.stdout


def test_docs_list_every_binding():
    from sgtui.tui.app import SgtuiApp
    from sgtui.tui.help import bindings_markdown

    text = (ROOT / "docs" / "TUI.md").read_text(encoding="utf-8")
    assert bindings_markdown(SgtuiApp) in text, (
        "docs/TUI.md is out of date: regenerate its Keys section"
    )


def test_generate_screenshot_is_a_textual_svg():
    svg = (ROOT / "docs" / "generate.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<svg") and "Generate" in svg
