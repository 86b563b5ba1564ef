"""Make docs/generate.svg: the Generate screen during a small real run on the bundled model.

    python -m sgtui.tui.screenshot docs/generate.svg

Runs headless in a temporary data folder, starts a run of the sentiment example task, and saves
Textual's SVG screenshot once samples are streaming and annotation has begun.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .app import SgtuiApp
from .model_owner import GenerateRequest
from .params import defaults


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "docs/generate.svg").resolve()
    with tempfile.TemporaryDirectory() as home:
        os.environ["SGTUI_HOME"] = home

        app = SgtuiApp(db=Path(home) / "demo.db", cursor_blink=False)
        saved: list[str] = []

        def start() -> None:
            task = next(t for t in app.store.tasks() if t["name"] == "review-sentiment")
            app.select_task(task["id"])
            app.action_goto("generate")
            params = defaults("classification").override(
                rounds=2, per_round=6, n=3, best_of=3, gen_max_tokens=48, ann_max_tokens=12
            )
            app.page("generate").params = params
            app.start_generation(
                GenerateRequest(None, task["id"], params, app.model_path or "", app.backend)
            )
            app.set_interval(0.25, check)

        def check() -> None:
            page = app.page("generate")
            annotated = sum(1 for r in page.rows.values() if r.get("stage") == "annotated")
            if not saved and (annotated >= 2 or app.gen_state in ("done", "failed")):
                saved.append(app.save_screenshot(out.name, str(out.parent)))
                app.stop_generation()
            if saved and app.gen_state in ("stopped", "done", "failed"):
                app.exit()

        app.call_later(lambda: app.set_timer(0.5, start))
        app.run(headless=True, size=(80, 24))
    print(saved[0] if saved else "no screenshot taken")
    return 0 if saved else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
