"""The llama.cpp generation backend (llama-cpp-python), for any GGUF file.

llama_cpp is imported only when this backend is loaded. A loaded model belongs to the thread
that loaded it: llama.cpp contexts are not thread-safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from sgtui.errors import SgtuiError
from sgtui.paths import home_path

from .base import ChatMessage, Completion, SamplingParams, TokenScore, cpu_threads, prompt_too_long
from .chat import render_template, with_turn_stops


def check_gguf(path: str | Path) -> Path:
    """Fail early, with a clear message, on a file that cannot be a GGUF model."""
    p = Path(path)
    if not p.exists():
        raise SgtuiError(
            "model file not found",
            path=str(p),
            fix="pass --model with the path of a .gguf file or a Hugging Face folder",
        )
    if p.is_dir():
        raise SgtuiError(
            "this is a folder, and the llama-cpp backend needs a .gguf file",
            path=str(p),
            fix="pass a .gguf file, or use --backend transformers",
        )
    with p.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise SgtuiError(
            "not a GGUF model file (it does not start with the GGUF magic)",
            path=str(p),
            fix="pass a .gguf file, or convert the model to GGUF",
        )
    return p


# -- llama.cpp's own log ------------------------------------------------------------------------
# llama.cpp logs every load and context creation; llama-cpp-python's callback prints the lines it
# takes for errors to the terminal, and with the ggml log levels of late 2025 that is every
# warning ("llama_context: n_ctx_seq (512) > n_ctx_train ..."). sgtui sends all of them to a log
# file instead (the run's, where a run is going: log_llama_to) and keeps the last lines in memory
# for a load that fails.
_LLAMA_LOG: dict = {"path": None, "installed": None}
_RECENT: list[str] = []


def quiet_llama() -> None:
    """Install the log callback (once per process): llama.cpp never writes to the terminal."""
    if _LLAMA_LOG["installed"] is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def _log(level: int, text: bytes, user_data) -> None:
        line = text.decode("utf-8", "replace")
        _RECENT.append(line)
        del _RECENT[:-50]
        try:
            path = _LLAMA_LOG["path"]
            if path is None:  # no run going (a model loading): the data folder's log
                folder = home_path()
                if not folder.is_dir():
                    return
                path = folder / "llama.log"
            with open(path, "a", encoding="utf-8") as f:
                f.write(line)
        except Exception:  # noqa: BLE001 - a log that cannot be written must not stop a run
            pass

    _LLAMA_LOG["installed"] = _log  # referenced, so ctypes keeps the callback alive
    llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))


def log_llama_to(path: str | Path | None) -> None:
    """Append llama.cpp's log lines to `path` from now on (None: to llama.log in the data
    folder)."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    _LLAMA_LOG["path"] = str(path) if path is not None else None


def gpu_layers() -> int:
    """Layers to offload: all of them (-1) when this llama.cpp build can use a GPU (CUDA, Metal,
    Vulkan), none on a CPU build. SGTUI_GPU_LAYERS overrides it (0 keeps the model on the CPU,
    e.g. to leave the card to training)."""
    import os

    given = os.environ.get("SGTUI_GPU_LAYERS", "").strip()
    if given:
        try:
            return int(given)
        except ValueError:
            raise SgtuiError(
                f"SGTUI_GPU_LAYERS must be a whole number (got {given!r})",
                fix="set it to -1 (all layers), 0 (none) or a layer count",
            ) from None
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def llama_threads(asked: int | None = None) -> int:
    """Threads for a llama.cpp model (decoding and prompts alike): SGTUI_THREADS where it is set
    to a count, else `asked`, else one per core this process may run on. The variable wins over
    what the caller asked for, so that one setting reaches every model sgtui loads (the TUI's,
    the batched backend's, a test's child process); 0 or empty leaves the choice to sgtui."""
    import os

    given = os.environ.get("SGTUI_THREADS", "").strip()
    if given:
        try:
            n = int(given)
        except ValueError:
            n = -1
        if n < 0:
            raise SgtuiError(
                f"SGTUI_THREADS must be a whole number of threads (got {given!r})",
                fix="set it to 1 or more, or to 0 (or unset it) for one per core",
            )
        if n:
            return n
    return asked or cpu_threads()


# A prompt of many tokens goes through the matrix kernels a one-token load never reaches; the
# child process survives what it cannot (a segfault in a kernel).
_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=256, n_gpu_layers=0, verbose=False)
text = llm.create_completion(" ".join(["word"] * 48), max_tokens=4, temperature=0.0)
print(len(text["choices"]))
"""


def decode_check(model_path: str | Path, timeout: float = 300) -> str | None:
    """Decode a 48-token prompt with this llama.cpp build, in a child process. None when it
    works; otherwise what went wrong, naming the build's AMX kernels where they are in it:
    they crash on the first prompt on some Intel CPUs (llama.cpp issue 20824), and a native
    build on such a CPU has them."""
    import signal
    import subprocess
    import sys

    import llama_cpp

    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(model_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"decoding a 48-token prompt took over {timeout:.0f} s"
    if done.returncode == 0:
        return None
    if done.returncode < 0:
        what = f"llama.cpp crashed ({signal.Signals(-done.returncode).name}) decoding a prompt"
    else:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        what = f"llama.cpp failed decoding a prompt ({tail})"
    if b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info():
        what += "; this build has llama.cpp's AMX kernels, which crash on some Intel CPUs"
    return what


class LlamaCppGenerator:
    name = "llama-cpp"
    supports_batch = False
    supports_lora = True
    supports_score = True

    def __init__(
        self,
        model_path: str | Path,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        lora_path: str | None = None,
        verbose: bool = False,
    ):
        self.model_path = str(check_gguf(model_path))
        if lora_path:
            check_gguf(lora_path)
        try:
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - install problem
            raise SgtuiError(f"llama-cpp-python is not installed ({e})", fix="run ./install.sh")
        quiet_llama()
        threads = llama_threads(n_threads)
        try:
            # the thread count asked for applies to prompts (and scored pairs) too: llama-cpp-
            # python would use every core for them, and more threads than free cores collapse
            self.llm = Llama(
                model_path=self.model_path,
                n_ctx=n_ctx,
                verbose=verbose,
                n_threads=threads,
                n_threads_batch=threads,
                lora_path=lora_path,
                n_batch=512,
                n_gpu_layers=gpu_layers(),
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise SgtuiError(
                f"llama.cpp could not load the model ({e}); the file may be "
                "truncated or from an unsupported architecture",
                path=self.model_path,
                fix="download the file again, or pass another --model",
            )
        # llama.cpp pads its context up, but the token buffer is sized to what was asked for
        self.n_ctx = min(self.llm.n_ctx(), n_ctx)
        md = self.llm.metadata or {}
        self.chat_template = md.get("tokenizer.chat_template")
        self._eos = self.llm.detokenize([self.llm.token_eos()], special=True).decode(
            "utf-8", "replace"
        )
        bos_id = self.llm.token_bos()
        self._bos = (
            self.llm.detokenize([bos_id], special=True).decode("utf-8", "replace")
            if bos_id >= 0
            else ""
        )

    def render_chat(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        return render_template(
            self.chat_template, messages, self._bos, self._eos, add_generation_prompt
        )

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def eos_text(self) -> str:
        return self._eos

    def _tokenize(self, prompt: str) -> list[int]:
        """The tokens create_completion would evaluate for this prompt."""
        toks = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        bos = self.llm.token_bos()
        if bos >= 0 and (self.llm._model.add_bos_token() or not toks):
            toks = [bos] + toks
        return toks

    def _check_fits(self, prompt: str, params: SamplingParams) -> int:
        n = self.count_tokens(prompt)
        if n + 1 >= self.n_ctx:
            raise prompt_too_long(n, self.n_ctx, self.model_path)
        return n

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> Iterator[Completion]:
        """One sequence at a time through the high-level API (the batched path is in
        backends/llama_batch.py). best_of is not emulated here: n samples are drawn."""
        params = with_turn_stops(params, self.chat_template)
        for i, prompt in enumerate(prompts):
            n_prompt = self._check_fits(prompt, params)
            max_tokens = max(1, min(params.max_tokens, self.n_ctx - n_prompt - 1))
            base_seed = seeds[i] if seeds is not None else (params.seed or 0) * 1000003 + i
            for j in range(params.n):
                out = self.llm.create_completion(
                    prompt,
                    max_tokens=max_tokens,
                    temperature=params.temperature,
                    top_k=params.top_k if params.temperature > 0 else 1,
                    top_p=params.top_p,
                    seed=(base_seed + j) % (2**31),
                    stop=list(params.stop) or None,
                    repeat_penalty=1.0,
                )
                choice = out["choices"][0]
                yield Completion(
                    index=i,
                    sample=j,
                    text=choice["text"],
                    n_tokens=out["usage"]["completion_tokens"],
                    finish_reason=choice.get("finish_reason") or "stop",
                )

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[TokenScore]:
        """log P(continuation | prompt) per pair (backends.base.Generator.score), one pair at a
        time in this Llama's context (backends/llama_score.py)."""
        from .llama_score import score_sequential  # llama_score builds on this module

        return score_sequential(self, prompts, continuations)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
