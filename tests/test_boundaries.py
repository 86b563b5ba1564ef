"""The layers hold: the headless core never imports the CLI, the TUI, Textual or Rich (also
checked by import-linter in CI, see pyproject.toml), and in-project imports sit at the top of
modules, where the reader sees them; only the heavy libraries are imported lazily."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sgtui", "backends")
# imported inside functions on purpose: each costs seconds or gigabytes, and a command that
# does not need it must not pay for it; textual only where a CLI command opens the TUI
LAZY_OK = {
    "torch",
    "transformers",
    "peft",
    "llama_cpp",
    "unsloth",
    "textual",
    "bitsandbytes",
    "accelerate",
    "trl",
    "gguf",
    "numpy",
    "safetensors",
    "huggingface_hub",
    "rouge_score",
    "tokenizers",
    "datasets",
}


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _in_project(node: ast.AST) -> str | None:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            return "." * node.level + (node.module or "")
        name = node.module or ""
    elif isinstance(node, ast.Import):
        name = node.names[0].name
    else:
        return None
    return name if name.split(".")[0] in PACKAGES else None


def lazy_project_imports() -> list[str]:
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                name = _in_project(node)
                if name is not None:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_in_project_imports_are_at_the_top_of_modules():
    allowed = {
        # the TUI is opened lazily by `sgtui` with no command: Textual is not loaded by the CLI
        "sgtui/cli.py .tui.app",
        # modules that build on the one importing them: a top-level import would be a cycle
        "sgtui/export.py .gguf_merge",
        "backends/llama_cpp.py .llama_score",
        "backends/llama_batch.py .llama_score",
    }
    found = [
        f for f in lazy_project_imports() if f"{f.split(':')[0]} {f.split(' ')[1]}" not in allowed
    ]
    assert found == [], "move these imports to the top of their module:\n" + "\n".join(found)


def test_the_core_never_imports_the_cli_or_the_tui():
    # the entry points (the CLI, `python -m sgtui`) and the TUI sit above the core
    core = [
        p
        for p in _modules()
        if not (p.name.startswith("cli") or p.name == "__main__.py" or "tui" in p.parts)
    ]
    bad = []
    for path in core:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.lstrip(".").split(".")
                project = node.level > 0 if isinstance(node, ast.ImportFrom) else False
                if parts[0] in ("textual", "rich") or (
                    (project or parts[0] == "sgtui")
                    and any(p.startswith("cli") or p == "tui" for p in parts)
                ):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert bad == []
