"""Tiny random Hugging Face models of several architectures, converted to GGUF by llama.cpp's
own convert_hf_to_gguf.py (tests/test_architectures.py).

Nothing is downloaded at run time except, once per cache folder, the llama-cpp-python sdist of
the installed version (pip download), which vendors llama.cpp with its converter and gguf-py:
the converter and the llama.cpp that loads its output are then the same version. A llama.cpp
checkout named by SGTUI_LLAMA_CPP is used instead when set.

The tokenizer is the bundled SmolLM2's (read from its GGUF once and kept in the cache): the
converter recognises it (its BPE pre-tokenizer hash is in convert_hf_to_gguf.py), which a
tokenizer made up here would not be, and it needs no sentencepiece.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SEED = 0
HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 64, 2, 4, 2, 16, 128
# convert_hf_to_gguf.py and what it imports, inside the sdist
_CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


@dataclass(frozen=True)
class Arch:
    name: str  # the test id
    config: str  # transformers config class
    gguf_arch: str  # general.architecture the converter writes
    extra: dict  # config fields beyond the shared tiny sizes


ARCHS = [
    Arch("llama", "LlamaConfig", "llama", {}),
    Arch("mistral", "MistralConfig", "llama", {}),
    Arch("qwen2", "Qwen2Config", "qwen2", {}),
    Arch("qwen3", "Qwen3Config", "qwen3", {}),
    # llama.cpp scales gemma's queries by 1/sqrt(head_dim): query_pre_attn_scalar must equal it;
    # gemma's converter drops lm_head (the output layer is the embedding, as in every gemma)
    Arch(
        "gemma2",
        "Gemma2Config",
        "gemma2",
        {"query_pre_attn_scalar": HEAD_DIM, "tie_word_embeddings": True},
    ),
    Arch(
        "gemma3",
        "Gemma3TextConfig",
        "gemma3",
        {"query_pre_attn_scalar": HEAD_DIM, "tie_word_embeddings": True},
    ),
    Arch("phi3", "Phi3Config", "phi3", {}),
]


def tokenizer_dir(bundled_model: str | Path, cache: Path) -> Path:
    """The bundled model's tokenizer as a Hugging Face folder (tokenizer.json), made once."""
    dest = cache / "tokenizer-smollm2"
    if (dest / "tokenizer.json").is_file():
        return dest
    from transformers import AutoTokenizer

    p = Path(bundled_model)
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    tmp = cache / f".tokenizer-smollm2.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    try:
        tmp.rename(dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def build(arch: Arch, tokenizer: Path, dest: Path) -> Path:
    """A randomly initialised model of `arch` (fixed seed), saved with the tokenizer in `dest`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    vocab = json.loads((tokenizer / "tokenizer.json").read_text())["model"]["vocab"]
    cfg = getattr(transformers, arch.config)(
        **{
            "vocab_size": len(vocab),
            "hidden_size": HIDDEN,
            "intermediate_size": FFN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS,
            "head_dim": HEAD_DIM,
            "max_position_embeddings": 512,
            "tie_word_embeddings": False,
            # wider than the 0.02 of a real model: logits spread over several units, so a
            # conversion or adapter mistake moves them visibly
            "initializer_range": 0.2,
            **arch.extra,
        }
    )
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # norm weights start at 1 (gemma: at 0); random ones test them too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(dest), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, dest / name)
    if arch.name == "phi3":  # phi3's converter reads tokenizer.json only for a GPT2Tokenizer
        cfg_path = dest / "tokenizer_config.json"
        tok_cfg = json.loads(cfg_path.read_text())
        tok_cfg["tokenizer_class"] = "GPT2Tokenizer"
        cfg_path.write_text(json.dumps(tok_cfg))
    return dest


def llama_cpp_source(cache: Path) -> Path | str:
    """The folder holding convert_hf_to_gguf.py, conversion/ and gguf-py/, or why there is none.

    SGTUI_LLAMA_CPP (a llama.cpp checkout) first; else the vendored llama.cpp of the installed
    llama-cpp-python's sdist, fetched once into `cache`."""
    env = os.environ.get("SGTUI_LLAMA_CPP")
    if env:
        p = Path(env)
        return (
            p
            if (p / "convert_hf_to_gguf.py").is_file()
            else f"SGTUI_LLAMA_CPP={env} holds no convert_hf_to_gguf.py"
        )
    try:
        ver = version("llama_cpp_python")
    except PackageNotFoundError:
        return "llama-cpp-python is not installed"
    dest = cache / f"llama.cpp-{ver}"
    if (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    dl = cache / f".sdist-{os.getpid()}"
    shutil.rmtree(dl, ignore_errors=True)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--retries",
                "1",
                "--timeout",
                "30",
                "-d",
                str(dl),
                f"llama-cpp-python=={ver}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        sdists = list(dl.glob("*.tar.gz"))
        if proc.returncode or not sdists:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            return f"pip could not download the llama-cpp-python {ver} sdist ({' '.join(tail)})"
        tmp = cache / f".llama.cpp-{ver}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                # <sdist>/vendor/llama.cpp/<part>...
                parts = member.name.split("/", 3)
                if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                    continue
                rel = parts[3]
                if not (member.isfile() and rel.startswith(_CONVERTER_PARTS)):
                    continue
                out = tmp / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(member).read())
        if not (tmp / "convert_hf_to_gguf.py").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            return (
                f"the llama-cpp-python {ver} sdist holds no vendor/llama.cpp/convert_hf_to_gguf.py"
            )
        try:
            tmp.rename(dest)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        return dest
    except (OSError, subprocess.SubprocessError, tarfile.TarError) as e:
        return f"could not fetch the llama-cpp-python {ver} sdist ({e})"
    finally:
        shutil.rmtree(dl, ignore_errors=True)


# What the driver changes, none of it touching the weights:
# - the converter imports sentencepiece before it looks for a tokenizer.model; there is none
#   here, so where sentencepiece is installed it falls back to its BPE path (tokenizer.json), and
#   reporting the missing file first takes that path where it is not;
# - Gemma 2's converter reads only a tokenizer.model: it gets the BPE path that Gemma 3's
#   converter takes when there is no tokenizer.model;
# - transformers 5 reads any qwen2 tokenizer as Qwen2Tokenizer, whose pre-tokenizer is not the one
#   in tokenizer.json (the converter would not recognise it): it reads the file as it is.
_DRIVER = r"""
import runpy, sys, traceback
src = sys.argv.pop(1)
sys.path[:0] = [src, src + "/gguf-py"]
import conversion
from conversion.base import TextModel
spm = TextModel._create_vocab_sentencepiece
def create_vocab_sentencepiece(self):
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError(self.dir_model / "tokenizer.model")
    return spm(self)
TextModel._create_vocab_sentencepiece = create_vocab_sentencepiece
conversion.get_model_class("Gemma2ForCausalLM").set_vocab = lambda self: self._set_vocab_gpt2()
from transformers.models.auto import tokenization_auto
getattr(tokenization_auto, "MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS", set()).discard("qwen2")
script, jobs = src + "/convert_hf_to_gguf.py", sys.argv[1:]
for hf_dir, out in zip(jobs[::2], jobs[1::2]):
    # a name that says "phi3" makes llama.cpp look for Phi-3's own special tokens
    sys.argv = [script, hf_dir, "--outfile", out, "--outtype", "f32", "--model-name", "tiny"]
    try:
        runpy.run_path(script, run_name="__main__")
    except BaseException:
        sys.stderr.write("<<<FAILED " + hf_dir + "\n" + traceback.format_exc() + ">>>\n")
"""


def convert(source: Path, jobs: list[tuple[Path, Path]]) -> dict[Path, str]:
    """Each (Hugging Face folder, GGUF path) converted to f32 by convert_hf_to_gguf.py, all in
    one subprocess (importing torch and transformers once, not once per model); returns the
    error of each output that failed."""
    # the driver puts the source's gguf-py first on sys.path: the converter's own version
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("NO_LOCAL_GGUF", None)
    args = [str(p) for job in jobs for p in job]
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(source), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    errors = {}
    for hf_dir, out in jobs:
        if not out.is_file():
            mark = f"<<<FAILED {hf_dir}\n"
            log = (
                proc.stderr.split(mark, 1)[1].split(">>>\n", 1)[0]
                if mark in proc.stderr
                else proc.stderr
            )  # the process itself died
            errors[out] = f"convert_hf_to_gguf.py failed for {hf_dir.name}:\n" + "\n".join(
                log.splitlines()[-20:]
            )
    return errors


def load(hf_dir: Path):
    """The saved model, float32, eager attention (the only one with gemma's soft-capping)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()
