"""Exporting a trained adapter: as is, merged into the base model, or as a llama.cpp LoRA GGUF.

- adapter: a copy of the peft folder (adapter_model.safetensors + adapter_config.json);
- merged:  base + LoRA merged (merge_and_unload) into a Hugging Face folder, safetensors;
- gguf:    a LoRA adapter GGUF that llama.cpp loads beside the base GGUF
           (Llama(model_path=base.gguf, lora_path=adapter.gguf)).

The GGUF is written with the `gguf` package (llama.cpp's convert_lora_to_gguf.py is not in the
llama-cpp-python wheel). What llama.cpp expects (src/llama-adapter.cpp): general.type
"adapter", adapter.type "lora", adapter.lora.alpha (float32), general.architecture equal to the
base's; per adapted weight W (ggml shape ne = [in, out]) a pair "<W name>.lora_a" with
ne = [in, r] and "<W name>.lora_b" with ne = [r, out], i.e. peft's lora_A (r x in) and lora_B
(out x r) as they are in numpy order; it scales by alpha / r. For the llama architecture (which
Mistral converts to) the HF-to-GGUF converter permutes the rows of attn_q / attn_k for its rope
layout (and transformers un-permutes them when it reads a GGUF), so lora_B of q_proj / k_proj
gets the same row permutation; qwen2, qwen3, gemma2, gemma3 and phi3 keep the HF row order.
Phi-3's fused qkv_proj and gate_up_proj map to attn_qkv and ffn_up, which the converter keeps
fused and llama.cpp adapts like any other weight. tests/test_export.py checks this against
transformers + peft on the bundled model, tests/test_architectures.py on tiny models of llama,
mistral, qwen2, qwen3, gemma2, gemma3 (text) and phi3 converted by llama.cpp's own converter.

An export never destroys what the person owns (tests/test_export_safety.py): it is written to a
hidden temporary path beside the target and renamed into place; an existing target is refused
unless `force`, and even then only a regular file (gguf) or a folder that sgtui exported (it
holds sgtui-export.json) is replaced, never a link, a device, a FIFO or a foreign folder.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from backends.llama_cpp import check_gguf
from backends.training import _forget_gguf_quantizer, hf_folder

from . import modelfile
from .errors import SgtuiError
from .store import task_of
from .training import adapter_dir, chat_format, run_dir

FORMATS = ("adapter", "merged", "gguf", "gguf-merged", "ollama")
FILE_FORMATS = ("gguf", "gguf-merged")  # one file; the others are folders
MERGED_QUANTS = ("f16", "q8_0", "q4_0")  # gguf-merged (sgtui/gguf_merge.py): its --quant
ADAPTER_FILE = "adapter_model.safetensors"
# in every exported folder: the mark that lets a later export replace the folder
MANIFEST = "sgtui-export.json"
# a file that an export from before the manifest left in the run's own export folder
_LEGACY_MARK = {"adapter": "adapter_config.json", "merged": "config.json"}
# peft key: [base_model.model.]<module>.lora_A[.<adapter name>].weight
_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])"
    r"(?:\.[A-Za-z0-9_]+)?\.weight$"
)
# Hugging Face model_type -> llama.cpp architecture, where the names differ
_HF_ARCH = {"mistral": "llama", "gemma3_text": "gemma3"}
# architectures whose HF-to-GGUF conversion permutes the q/k rows (convert_hf_to_gguf.py)
_PERMUTED_QK = {"llama"}


@dataclass(frozen=True)
class BaseInfo:
    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]  # GGUF tensor name -> ne (empty for a HF folder)


def find_adapter(store, run_id: int) -> Path:
    rows = store.artifacts(run_id, "adapter")
    candidates = [Path(r["path"]) for r in reversed(rows)] + [adapter_dir(store, run_id)]
    for c in candidates:
        if (c / ADAPTER_FILE).is_file() and (c / "adapter_config.json").is_file():
            return c
    raise SgtuiError(
        f"run {run_id} has no trained adapter",
        path=str(candidates[-1]),
        fix=f"train it first: sgtui train {run_id}",
    )


def base_model_of(adapter: Path, fallback: str | None = None) -> str:
    info = adapter / "sgtui_training.json"
    if info.is_file():
        return json.loads(info.read_text())["base_model"]
    if fallback:
        return fallback
    raise SgtuiError(
        "the adapter does not say which base model it was trained on",
        path=str(adapter),
        fix="pass --base with the base model",
    )


def default_out(store, run_id: int, fmt: str) -> Path:
    name = {
        "adapter": "adapter",
        "merged": "merged",
        "gguf": "adapter.gguf",
        "gguf-merged": "merged.gguf",
        "ollama": "ollama",
    }[fmt]
    return run_dir(store, run_id) / "export" / name


def export_run(
    store,
    run_id: int,
    fmt: str,
    out: str | Path | None = None,
    base: str | None = None,
    trust_remote_code: bool = False,
    force: bool = False,
    quant: str | None = None,
) -> Path:
    """Export run `run_id`'s adapter and record it as an artifact "export-<fmt>".

    An existing `out` is refused unless `force`. The run's own export folder (the default) is
    sgtui's: an earlier export there is replaced without `force`."""
    if fmt not in FORMATS:
        raise SgtuiError(f"unknown export format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    adapter = find_adapter(store, run_id)
    own = default_out(store, run_id, fmt)
    dest = Path(out) if out else own
    in_run_folder = os.path.abspath(dest) == os.path.abspath(own)
    check_target(dest, fmt, force, in_run_folder)  # before a merge spends minutes
    base_model = base or base_model_of(adapter, store.run(run_id)["model"])
    info = {"run": run_id, "adapter": str(adapter), "base_model": str(base_model)}
    mode = {"force": force, "in_run_folder": in_run_folder}
    if fmt == "adapter":
        path = export_adapter(adapter, dest, info=info, **mode)
    elif fmt == "merged":
        path = export_merged(adapter, base_model, dest, trust_remote_code, info=info, **mode)
    elif fmt == "gguf-merged":
        from .gguf_merge import export_gguf_merged  # it builds on this module's helpers

        path = export_gguf_merged(adapter, base_model, dest, quant or "q8_0", **mode)
    elif fmt == "ollama":
        path = export_ollama(store, run_id, adapter, base_model, dest, info=info, **mode)
    else:
        path = export_gguf(adapter, base_model, dest, **mode)
    store.add_artifact(
        run_id, f"export-{fmt}", str(path), {"base_model": base_model, "adapter": str(adapter)}
    )
    return path


def export_adapter(
    adapter: Path,
    dest: Path,
    *,
    force: bool = True,
    in_run_folder: bool = True,
    info: dict | None = None,
) -> Path:
    """A copy of the peft folder. `force` and `in_run_folder` as in check_target; the defaults
    suit sgtui's own callers, which write into the run's folder."""

    def fill(tmp: Path) -> None:
        shutil.copytree(adapter, tmp, dirs_exist_ok=True, symlinks=False)

    return _write_folder(dest, "adapter", fill, force, in_run_folder, info)


def export_merged(
    adapter: Path,
    base_model: str | Path,
    dest: Path,
    trust_remote_code: bool = False,
    *,
    force: bool = True,
    in_run_folder: bool = True,
    info: dict | None = None,
) -> Path:
    def fill(tmp: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = hf_folder(base_model, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype="auto", trust_remote_code=trust_remote_code
        )
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        _forget_gguf_quantizer(model)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))

    return _write_folder(dest, "merged", fill, force, in_run_folder, info)


def export_ollama(
    store,
    run_id: int,
    adapter: Path,
    base_model: str | Path,
    dest: Path,
    *,
    force: bool = True,
    in_run_folder: bool = True,
    info: dict | None = None,
) -> Path:
    """A folder with the LoRA GGUF and a Modelfile (sgtui/modelfile.py) for `ollama create`."""

    base = Path(base_model)
    if not base.is_file():
        raise SgtuiError(
            "an Ollama export needs the base model as a GGUF file (Ollama's FROM)",
            path=str(base),
            fix="pass --base with the base model's .gguf file",
        )
    task = task_of(store.run(run_id))
    built = modelfile.build(task, chat_format(base), base)

    def fill(tmp: Path) -> None:
        export_gguf(adapter, base, tmp / modelfile.ADAPTER_GGUF)
        modelfile.write(tmp, built)

    path = _write_folder(
        dest,
        "ollama",
        fill,
        force,
        in_run_folder,
        {**(info or {}), "family": built.family, "notes": built.notes},
    )
    return path


# -- writing without destroying ---------------------------------------------------------------
def check_target(dest: Path, fmt: str, force: bool, in_run_folder: bool) -> None:
    """Refuse a destination that an export must not write over.

    Nothing there: fine if its folder exists (the run's own folder is created). A file (gguf)
    or folder (adapter, merged) already there is replaced only if it is a regular file or a
    folder holding sgtui's manifest, and only with `force` or in the run's own export folder
    (there, without `force`, a file must be a GGUF). A link, a device, a FIFO, a socket, a
    folder sgtui did not write, or a file where a folder goes (and vice versa) is always
    refused."""
    is_file = fmt in FILE_FORMATS
    wants = "a file" if is_file else "a folder"
    try:
        st = os.lstat(dest)
    except (FileNotFoundError, NotADirectoryError):
        _check_parent(dest, in_run_folder)
        return
    except OSError as e:  # a name too long, a folder on the way that cannot be read, ...
        raise _write_error(dest, e) from e
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise _refused(dest, "is a symbolic link; an export never writes over or through one")
    if stat.S_ISDIR(mode) != (not is_file) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise _refused(
            dest,
            f"is {_kind(mode)}, not {wants} as the {fmt} export needs; it is "
            "left alone, even with --force",
        )
    if stat.S_ISDIR(mode) and not _sgtui_folder(dest, fmt, in_run_folder):
        raise _refused(
            dest,
            f"is a folder that sgtui did not export (it has no {MANIFEST}); "
            "an export never replaces it, even with --force",
        )
    if force or (in_run_folder and (stat.S_ISDIR(mode) or _is_gguf(dest))):
        return
    raise SgtuiError(
        f"already exists; the {fmt} export would replace it",
        path=str(dest),
        fix="pass --force to replace it, or pick another --out",
    )


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _refused(dest: Path, why: str) -> SgtuiError:
    return SgtuiError(why, path=str(dest), fix="pick another --out (nothing was changed)")


def _check_parent(dest: Path, in_run_folder: bool) -> None:
    parent = dest.parent
    if in_run_folder and not os.path.lexists(parent):
        with _writing(dest):
            parent.mkdir(parents=True, exist_ok=True)
    if parent.is_dir():
        return
    existing = parent  # the nearest part of the path that exists says what is wrong
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if os.path.lexists(existing) and not existing.is_dir():
        raise SgtuiError(
            f"{existing} is not a folder, so the export cannot go inside it",
            path=str(dest),
            fix="pick an --out inside an existing folder",
        )
    raise SgtuiError(
        f"the folder {parent} does not exist",
        path=str(dest),
        fix=f"create it first (mkdir -p {parent}) or pick another --out",
    )


def _sgtui_folder(folder: Path, fmt: str, in_run_folder: bool) -> bool:
    """Did sgtui export this folder? Its manifest says so; in the run's own export folder, an
    export from before the manifest is recognised by what peft / transformers write."""
    if (folder / MANIFEST).is_file() and not (folder / MANIFEST).is_symlink():
        return True
    mark = folder / _LEGACY_MARK.get(fmt, MANIFEST)
    return in_run_folder and mark.is_file() and not mark.is_symlink()


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _write_folder(
    dest: Path, fmt: str, fill, force: bool, in_run_folder: bool, info: dict | None
) -> Path:
    """`fill` a temporary folder beside `dest`, mark it with the manifest, move it in place."""
    check_target(dest, fmt, force, in_run_folder)
    with _writing(dest):
        tmp = _temp_beside(dest, folder=True)
        try:
            fill(tmp)
            manifest = {
                "format": fmt,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **(info or {}),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            check_target(dest, fmt, force, in_run_folder)  # it may have changed meanwhile
            _swap_folder(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _swap_folder(tmp: Path, dest: Path) -> None:
    """Move `tmp` to `dest`; an earlier export at `dest` (checked) is moved aside first and
    removed only once the new one is in place."""
    if not os.path.lexists(dest):
        os.rename(tmp, dest)
        return
    aside = _temp_beside(dest, folder=None)
    os.rename(dest, aside)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _temp_beside(dest: Path, folder: bool | None) -> Path:
    """A new hidden path in `dest`'s folder (same file system, so a rename moves it in place):
    created empty as a folder or file, or only named (folder=None). Made with the usual
    permissions (the umask), as a plain write would."""
    for _ in range(100):
        tmp = dest.parent / f".{dest.name}.sgtui-{secrets.token_hex(4)}.tmp"
        try:
            if folder:
                os.mkdir(tmp)
            elif folder is not None:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            elif os.path.lexists(tmp):
                continue
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(dest))


@contextmanager
def _writing(dest: Path):
    """File-system errors while writing an export become a message that names the target."""
    try:
        yield
    except SgtuiError:
        raise
    except OSError as e:
        raise _write_error(dest, e) from e


def _write_error(dest: Path, e: OSError) -> SgtuiError:
    reason = e.strerror or str(e)
    where = (
        f" ({e.filename})"
        if e.filename
        and ".sgtui-" not in str(e.filename)
        and os.path.abspath(e.filename) != os.path.abspath(dest)
        else ""
    )
    fixes = {
        errno.EACCES: "pick an --out in a folder you can write to",
        errno.EPERM: "pick an --out in a folder you can write to",
        errno.EROFS: "pick an --out on a writable disk",
        errno.ENOSPC: "free some space, or pick an --out on another disk",
        errno.ENOENT: "create the folder first, or pick another --out",
        errno.ENOTDIR: "a part of the path is a file: pick another --out",
        errno.EISDIR: "pick another --out",
    }
    return SgtuiError(
        f"cannot write the export here: {reason}{where}",
        path=str(dest),
        fix=fixes.get(e.errno, "pick another --out"),
    )


# -- GGUF -------------------------------------------------------------------------------------
def base_info(base_model: str | Path) -> BaseInfo:
    """Architecture and head counts from the base GGUF (or a HF folder's config.json)."""
    p = Path(base_model)
    if p.is_file():
        st = p.stat()
        return _gguf_info(str(p.resolve()), st.st_size, st.st_mtime_ns)
    return _hf_info(p)


@lru_cache(maxsize=4)
def _gguf_info(path: str, size: int, mtime_ns: int) -> BaseInfo:
    """Reading a GGUF's header takes seconds (its vocabulary is parsed in Python): once per
    file version."""
    p = Path(path)
    from gguf import GGUFReader

    check_gguf(p)
    reader = GGUFReader(str(p))

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = field("general.architecture")
    n_head = int(field(f"{arch}.attention.head_count", 0) or 0)
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    return BaseInfo(
        arch,
        int(field(f"{arch}.block_count")),
        n_head,
        int(field(f"{arch}.attention.head_count_kv", n_head) or n_head),
        shapes,
    )


def _hf_info(p: Path) -> BaseInfo:
    cfg_path = p / "config.json"
    if not cfg_path.is_file():
        raise SgtuiError(
            "base model not found (no GGUF file, no config.json)",
            path=str(p),
            fix="pass --base with the base model's GGUF file",
        )
    cfg = json.loads(cfg_path.read_text())
    arch = _HF_ARCH.get(cfg.get("model_type"), cfg.get("model_type"))
    n_head = int(cfg.get("num_attention_heads", 0))
    return BaseInfo(
        arch,
        int(cfg["num_hidden_layers"]),
        n_head,
        int(cfg.get("num_key_value_heads") or n_head),
        {},
    )


def permute_rows(w, n_head: int):
    """The HF-to-GGUF rope permutation of a q/k projection's output rows (applied to lora_B)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_lora_tensors(adapter: Path, info: BaseInfo) -> tuple[dict[str, object], float]:
    """(GGUF tensor name -> float32 numpy array, alpha for llama.cpp) from a peft adapter."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora"):
        raise SgtuiError(
            "only plain LoRA adapters can be written as GGUF",
            path=str(adapter),
            fix="export --format merged instead",
        )
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("modules_to_save"):
        raise SgtuiError(
            "the adapter uses per-module ranks, alphas or saved modules, which a "
            "llama.cpp LoRA GGUF cannot hold",
            path=str(adapter),
            fix="export --format merged instead",
        )
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    if cfg.get("use_rslora"):  # rsLoRA scales by alpha/sqrt(r); llama.cpp by alpha/r
        alpha *= math.sqrt(r)
    arch_enum = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == info.arch), None)
    if arch_enum is None:
        raise SgtuiError(
            f"llama.cpp does not know the architecture {info.arch!r}",
            path=str(adapter),
            fix="export --format merged instead",
        )
    names = gguf.get_tensor_name_map(arch_enum, info.n_blocks)
    raw = load_file(str(adapter / ADAPTER_FILE))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in raw.items():
        m = _PEFT_KEY.match(key)
        if not m:
            raise SgtuiError(
                f"unexpected tensor {key!r} in the adapter (only LoRA A/B "
                "matrices can be exported)",
                path=str(adapter),
                fix="export --format merged instead",
            )
        pairs.setdefault(m["module"], {})[m["ab"]] = value.astype(np.float32)
    out: dict[str, object] = {}
    for module, ab in sorted(pairs.items()):
        target = names.get_name(module)
        if target is None or set(ab) != {"A", "B"}:
            raise SgtuiError(
                f"cannot map the adapted module {module!r} to a llama.cpp tensor",
                path=str(adapter),
                fix="export --format merged instead",
            )
        a, b = ab["A"], ab["B"]
        if info.arch in _PERMUTED_QK and target.endswith(".attn_q"):
            b = permute_rows(b, info.n_head)
        elif info.arch in _PERMUTED_QK and target.endswith(".attn_k"):
            b = permute_rows(b, info.n_head_kv)
        weight = target + ".weight"
        base_shape = info.shapes.get(weight)
        if info.shapes and base_shape is None:
            raise SgtuiError(
                f"the base GGUF has no tensor {weight!r}",
                path=str(adapter),
                fix="pass the base model the adapter was trained on",
            )
        # ggml ne of A is [in, r], of B [r, out]; the base weight's ne is [in, out]
        if base_shape is not None and (base_shape[0] != a.shape[1] or base_shape[1] != b.shape[0]):
            raise SgtuiError(
                f"the adapter's {weight} does not fit the base model's shape {list(base_shape)}",
                path=str(adapter),
                fix="pass the base model the adapter was trained on",
            )
        out[weight + ".lora_a"] = np.ascontiguousarray(a)
        out[weight + ".lora_b"] = np.ascontiguousarray(b)
    if not out:
        raise SgtuiError(
            "the adapter holds no LoRA tensors", path=str(adapter), fix="train the run again"
        )
    return out, alpha


def export_gguf(
    adapter: Path,
    base_model: str | Path,
    dest: Path,
    *,
    force: bool = True,
    in_run_folder: bool = True,
) -> Path:
    """The llama.cpp LoRA GGUF. `force` and `in_run_folder` as in check_target; the defaults
    suit sgtui's own callers (an epoch's GGUF in the run's folder is rewritten)."""
    import gguf

    check_target(dest, "gguf", force, in_run_folder)
    info = base_info(base_model)
    tensors, alpha = gguf_lora_tensors(adapter, info)
    with _writing(dest):
        tmp = _temp_beside(dest, folder=False)
        try:
            writer = gguf.GGUFWriter(str(tmp), info.arch)
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
            writer.add_name(f"sgtui LoRA adapter for {Path(base_model).name}")
            for name, array in tensors.items():
                writer.add_tensor(name, array)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            check_target(dest, "gguf", force, in_run_folder)  # it may have changed meanwhile
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return dest
