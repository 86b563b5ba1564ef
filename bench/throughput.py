"""Synthesis throughput: naive sequential llama-cpp-python calls vs the batched backend, and the
server backend against llama.cpp's own llama-server.

Both paths run the same workload on the same model with the same sampling settings:
- annotation: the real annotation prompt (sgtui.pipeline.annotation_prompt) for the first
  --inputs validation inputs of a task, n samples each (temperature 0.2, top_k 10);
- input generation: --gen-prompts input-generation prompts (InputGenerator.build_prompt, a
  round with a pool of earlier inputs), one sample each with its own seed.
The sequential path is one Llama.create_completion per sample, as llama-cpp-python is
normally used (its prompt prefix cache still reuses the prompt between calls). Sampling
settings are passed in full (min_p 0, no repeat penalty) so both paths draw from the same
distribution. Every measurement runs in its own process (peak RSS is per path), and the
order of the two paths alternates between repeats because the machine may be shared.

The server paths (`server-1`, `server-4`, `server-8`: the server backend with that many requests
in flight) send the same prompts and sampling settings through backends/openai_server.py to
llama.cpp's `llama-server`, started per measurement on the same model and thread count with
`--parallel 8` (continuous batching is its default) and timed once it answers /health. Build
it first from the llama.cpp that llama-cpp-python's sdist vendors:

    bash bench/build_llama_server.sh
    .venv/bin/python bench/throughput.py --threads 1 --paths batched,server-1,server-4,server-8

    .venv/bin/python bench/throughput.py --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes share the CPU)."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def workload(kind: str, args, gen) -> tuple[list[str], list[int] | None, dict]:
    """(prompts, per-prompt seeds, sampling settings) for one workload."""
    from sgtui.config import RunParams
    from sgtui.input_generation import InputGenerator
    from sgtui.pipeline import annotation_prompt
    from sgtui.task import load_task

    task = load_task(args.task)
    params = RunParams.defaults_for(task.type, mode=args.mode)
    inputs = [
        json.loads(line)["input"]
        for line in (Path(args.task) / "validation.jsonl").read_text().splitlines()
        if line.strip()
    ]
    if kind == "annotation":
        prompts = [annotation_prompt(gen, task, x) for x in inputs[: args.inputs]]
        sp = {
            "temperature": params.ann_temperature,
            "top_k": params.ann_top_k,
            "top_p": 1.0,
            "max_tokens": args.ann_max_tokens,
            "n": args.n,
            "best_of": args.best_of,
            "seed": params.seed,
            "stop": [],
        }
        return prompts, None, sp
    ig = InputGenerator(task, params, gen.count_tokens)
    # a later round: the pool holds (input, pseudo-label) pairs accepted in earlier rounds
    pool = [(x, None) for x in inputs[args.inputs : args.inputs + 20]]
    built = [ig.build_prompt(1, slot, pool) for slot in range(args.gen_prompts)]
    sp = {
        "temperature": params.gen_temperature,
        "top_k": params.gen_top_k,
        "top_p": params.gen_top_p,
        "max_tokens": min(args.gen_max_tokens, ig.max_tokens),
        "n": 1,
        "best_of": None,
        "seed": params.seed,
        "stop": list(ig.stop),
    }
    return [b.text for b in built], [b.seed for b in built], sp


@contextmanager
def llama_server(binary: str, model: str, threads: int | None, parallel: int, slot_ctx: int):
    """llama.cpp's llama-server on a free loopback port, ready (GET /health answers 200)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = str(threads or os.cpu_count())
    cmd = [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--parallel", str(parallel), "--ctx-size", str(parallel * slot_ctx)]
    cmd += ["--threads", t, "--threads-batch", t]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"llama-server exited with {proc.returncode}: {' '.join(cmd)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("llama-server did not become ready in 120 s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def worker(path: str, kind: str, args) -> dict:
    """Run one workload through one path in this process; return the figures."""
    from sgtui.paths import bundled_model

    model = str(bundled_model())
    if path.startswith("server-"):
        if not Path(args.llama_server).is_file():
            sys.exit(f"{args.llama_server} is missing: run bash bench/build_llama_server.sh")
        with llama_server(
            args.llama_server, model, args.threads, args.server_parallel, 4096
        ) as url:
            return measure(path, kind, args, model, url)
    return measure(path, kind, args, model, None)


def measure(path: str, kind: str, args, model: str, url: str | None) -> dict:
    """One workload through one path; `url` is the server's for the server paths."""
    from backends.base import SamplingParams

    if url is not None:
        from backends.openai_server import OpenAIServerGenerator

        gen = OpenAIServerGenerator(
            url, concurrency=int(path.split("-", 1)[1]), template_from=model
        )
    elif path == "sequential":
        from backends.llama_cpp import LlamaCppGenerator

        gen = LlamaCppGenerator(model, n_ctx=4096, n_threads=args.threads)
        if args.threads:  # prompt batches on the same thread count as the batched path
            gen.llm._ctx.set_n_threads(args.threads, args.threads)
    else:
        from backends.llama_batch import BatchedLlamaCppGenerator

        gen = BatchedLlamaCppGenerator(
            model,
            n_ctx=4096,
            n_threads=args.threads,
            n_parallel=args.n_parallel,
            share_prefix=not args.no_share_prefix,
        )
    prompts, seeds, sp = workload(kind, args, gen)
    n_prompt_tokens = [gen.count_tokens(p) for p in prompts]
    load_before = loadavg()
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    samples = tokens = 0
    if path == "sequential":
        llm = gen.llm
        for i, prompt in enumerate(prompts):
            base = seeds[i] if seeds else sp["seed"] * 1000003 + i
            for j in range(sp["n"]):
                out = llm.create_completion(
                    prompt,
                    max_tokens=sp["max_tokens"],
                    temperature=sp["temperature"],
                    top_k=sp["top_k"],
                    top_p=sp["top_p"],
                    min_p=0.0,
                    typical_p=1.0,
                    repeat_penalty=1.0,
                    seed=(base + j) % (2**31),
                    stop=sp["stop"] or None,
                )
                samples += 1
                tokens += out["usage"]["completion_tokens"]
    else:
        sampling = SamplingParams(**{**sp, "stop": tuple(sp["stop"])})
        for c in gen.generate(prompts, sampling, seeds=seeds):
            samples += 1
            tokens += c.n_tokens
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    gen.close()
    return {
        "path": path,
        "workload": kind,
        "samples": samples,
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "tokens_per_s": round(tokens / wall, 2),
        "samples_per_min": round(samples / wall * 60, 1),
        # the server's own CPU time is not this process's: None for the server paths
        "tokens_per_cpu_s": round(tokens / cpu, 2) if cpu and url is None else None,
        "peak_rss_mib": round(ru1.ru_maxrss / 1024, 1),
        "task": Path(args.task).name,
        "threads": args.threads,
        "prompts": len(prompts),
        "mean_prompt_tokens": round(sum(n_prompt_tokens) / len(prompts), 1),
        "sampling": sp,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


def machine() -> dict:
    from machine import cpu_model, ram_gib  # bench/machine.py

    cpu, ram = cpu_model(), round(ram_gib(), 1)
    import llama_cpp

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram,
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default=None, help="an NI task folder (default ../shared/ni/task190)")
    ap.add_argument("--inputs", type=int, default=8, help="inputs to annotate")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--best-of", type=int, default=None)
    ap.add_argument("--ann-max-tokens", type=int, default=500)
    ap.add_argument("--gen-prompts", type=int, default=10)
    ap.add_argument("--gen-max-tokens", type=int, default=500)
    ap.add_argument(
        "--mode",
        default="paper",
        choices=["paper", "small"],
        help="input-generation prompt (small: stop strings, shorter answers)",
    )
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all)")
    ap.add_argument("--n-parallel", type=int, default=None)
    ap.add_argument("--no-share-prefix", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workloads", default="annotation,inputs")
    ap.add_argument(
        "--paths", default="sequential,batched", help="also server-N: N requests in flight"
    )
    ap.add_argument("--llama-server", default=str(ROOT / "bench" / ".work" / "llama-server"))
    ap.add_argument("--server-parallel", type=int, default=8, help="llama-server --parallel")
    ap.add_argument("--json", default=None, help="write the raw figures here")
    ap.add_argument("--worker", nargs=2, metavar=("PATH", "WORKLOAD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.task is None:
        from sgtui.paths import shared_ni

        ni = shared_ni()
        if ni is None:
            sys.exit("the NI tasks (../shared/ni) are not beside the project; pass --task")
        args.task = str(ni / "task190")
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args)))
        return
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json")]
    if args.json:
        passthrough = [a for a in passthrough if a != args.json]
    runs = []
    paths = args.paths.split(",")
    for rep in range(args.repeat):
        for kind in args.workloads.split(","):
            order = paths if rep % 2 == 0 else paths[::-1]
            for path in order:
                cmd = [
                    sys.executable,
                    __file__,
                    *passthrough,
                    "--task",
                    args.task,
                    "--worker",
                    path,
                    kind,
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
                if out.returncode != 0:
                    sys.exit(f"{path}/{kind} failed:\n{out.stderr[-2000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r["repeat"] = rep
                runs.append(r)
                print(
                    f"{kind:10s} {path:10s} {r['samples']:4d} samples {r['tokens']:6d} tok "
                    f"{r['wall_s']:8.1f} s  {r['tokens_per_s']:7.1f} tok/s  "
                    f"{r['samples_per_min']:7.1f} samples/min  "
                    f"{r['tokens_per_cpu_s'] or 0:7.1f} tok/cpu-s  rss {r['peak_rss_mib']:6.0f} MiB  "
                    f"load {r['loadavg_before']}",
                    flush=True,
                )
    result = {
        "machine": machine(),
        "command": "python bench/throughput.py " + " ".join(a for a in sys.argv[1:]),
        "runs": runs,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
