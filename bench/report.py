"""Render the raw benchmark JSON files in bench/results/ as markdown tables.

    .venv/bin/python bench/report.py throughput     # -> bench/results/throughput.md
    .venv/bin/python bench/report.py train          # -> bench/results/train.md

Each JSON file holds the machine, the exact command and one record per measured run; the
tables give the mean over repeats and the ratio of the project's path to the baseline."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def throughput() -> str:
    lines = [
        "# Synthesis throughput: sequential llama-cpp-python calls, the batched backend, and "
        "the server backend against llama-server",
        "",
        "Produced by `bench/throughput.py` (workloads in its docstring) and rendered by "
        "`bench/report.py throughput`. Means over repeats; the paths alternate order "
        "between repeats. Ratio: samples per minute over the sequential path's, or over the "
        "batched path's where no sequential path ran. server-N: the server backend with N "
        "requests in flight to llama.cpp's llama-server (--parallel 8, continuous batching); "
        "its peak RSS is the client's alone.",
        "",
    ]
    for path in sorted(RESULTS.glob("throughput-*.json")):
        data = json.loads(path.read_text())
        m = data["machine"]
        lines += [
            f"## {path.stem}",
            "",
            f"- command: `{data['command']}`",
            f"- machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB, Python "
            f"{m['python']}, llama-cpp-python {m['llama_cpp_python']}, no GPU",
            "",
        ]
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in data["runs"]:
            groups[(r["workload"], r["path"])].append(r)
        lines += [
            "| workload | path | runs | samples | tokens | tokens/s | samples/min | "
            "peak RSS MiB | ratio | load before |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for (kind, p), rs in sorted(groups.items()):
            spm = mean([r["samples_per_min"] for r in rs])
            ref = "sequential" if (kind, "sequential") in groups else "batched"
            seq = groups.get((kind, ref))
            ratio = (
                f"{spm / mean([r['samples_per_min'] for r in seq]):.2f}x"
                if seq and p != ref
                else ""
            )
            s = rs[0]["sampling"]
            lines.append(
                f"| {kind} (n={s['n']}, best_of={s['best_of']}, max_tokens={s['max_tokens']}) "
                f"| {p} | {len(rs)} | {rs[0]['samples']} | {round(mean([r['tokens'] for r in rs]))} "
                f"| {mean([r['tokens_per_s'] for r in rs]):.1f} | {spm:.1f} "
                f"| {max(r['peak_rss_mib'] for r in rs):.0f} | {ratio} "
                f"| {rs[0]['loadavg_before'][0] if rs[0]['loadavg_before'] else '?'} |"
            )
        lines.append("")
    return "\n".join(lines)


def train() -> str:
    data = json.loads((RESULTS / "train.json").read_text())
    lines = [
        "# Training throughput: the project's LoRA path vs a plain fp32 transformers Trainer",
        "",
        "Produced by `bench/train.py`, rendered by `bench/report.py train`.",
        "",
        f"- command: `{data['command']}`",
        f"- machine: {data['machine']}",
        f"- data: {data['data']}",
        "",
        "| path | precision | examples | steps | tokens/s | peak RSS MiB | last step's loss | "
        "ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = data["runs"]
    base = next((r for r in runs if r["path"] == "trainer-fp32"), None)
    for r in runs:
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base and r is not base else ""
        lines.append(
            f"| {r['path']} | {r['precision']} | {r['examples']} | {r['steps']} "
            f"| {r['tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} | {r['final_loss']:.3f} "
            f"| {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    kinds = {"throughput": throughput, "train": train}
    if len(sys.argv) != 2 or sys.argv[1] not in kinds:
        print(f"usage: report.py {'|'.join(kinds)}", file=sys.stderr)
        return 2
    out = RESULTS / f"{sys.argv[1]}.md"
    out.write_text(kinds[sys.argv[1]]())
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
