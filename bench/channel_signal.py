"""Does the noisy channel carry label signal where the direct direction does not?

For labelled rows of a classification task, the channel annotator's label (sgtui/channel.py:
the label under which the bundled model finds the input likeliest, after the small mode's
input-generation prompt) is compared with the gold label, beside the majority label's
accuracy. Complements bench/label_signal.py (the direct direction).

    .venv/bin/python bench/channel_signal.py --tasks sentiment,task190,task738 --rows 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe as machine  # noqa: E402  (bench/machine.py)


def main() -> int:
    import backends
    from sgtui import evaluation as ev
    from sgtui.channel import channel_labels
    from sgtui.paths import bundled_model, shared_ni
    from sgtui.task import load_task

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="sentiment,task190,task738")
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "channel_signal"))
    args = ap.parse_args()
    out = Path(args.out)
    results = (
        json.loads(out.with_suffix(".json").read_text())
        if out.with_suffix(".json").exists()
        else {}
    )
    gen = backends.load_generator("llama-cpp", str(bundled_model()))
    for name in args.tasks.split(","):
        if name in results:
            continue
        own = ROOT / "data" / "tasks" / f"{name}.toml"
        if own.is_file():  # its held-out rows: it has no validation split
            task = load_task(own)
            rows, split = ev.load_rows(str(own.with_name(f"{name}.eval.jsonl")), args.rows, seed=0)
        else:
            task = load_task(shared_ni() / name)
            rows, split = ev.load_rows(f"{name}:validation", args.rows, seed=0)
        t = time.monotonic()
        got = channel_labels(gen, task, [r["input"] for r in rows])
        gold = [r["output"].strip() for r in rows]
        results[name] = {
            "split": split,
            "rows": len(rows),
            "channel": round(100 * sum(g[0] == y for g, y in zip(got, gold)) / len(rows), 1),
            "majority": round(100 * Counter(gold).most_common(1)[0][1] / len(rows), 1),
            "predicted": dict(Counter(g[0] for g in got)),
            "gold": dict(Counter(gold)),
            "seconds": round(time.monotonic() - t),
        }
        print(name, results[name], flush=True)
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    gen.close()
    lines = [
        "# The noisy channel's labels against gold (bundled SmolLM2-135M-Instruct)",
        "",
        f"- machine: {machine()} (shared with other jobs: times are upper bounds)",
        f"- command: `python bench/channel_signal.py {' '.join(sys.argv[1:])}`",
        "",
        "| task | rows | channel accuracy | majority label | predicted | gold | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rows']} | {r['channel']} | {r['majority']} | "
            f"{r['predicted']} | {r['gold']} | {r['seconds']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
