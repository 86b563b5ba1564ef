"""What a model file or folder says about itself, for the model picker: architecture,
parameter count, quantization, size on disk and whether it has a chat template, from a GGUF
header or from config.json, tokenizer_config.json and the safetensors headers.

The gguf package's GGUFReader builds a numpy view of every vocabulary entry: 5.3 s for
SmolLM2's 49k-token vocabulary and 18.7 s for a Qwen2-sized one (152k tokens, 151k merges) on a
busy 2-core machine. `gguf_header` walks the header itself, with the gguf package's value types,
skipping arrays without decoding them (0.02 s and 0.05 s); the tests check it against
GGUFReader. Results are cached per (path, size, mtime), so the picker reads a file once.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelMeta:
    """What a model file or folder says about itself. None where it does not say."""

    format: str  # "gguf" | "hf"
    architecture: str | None
    n_params: int | None
    quantization: str | None
    size_bytes: int
    chat_template: bool | None
    kind: str = "model"  # a GGUF's general.type: "model", "adapter", "mmproj", ...


def params_label(n: int | None) -> str:
    if not n:
        return "?"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 10 and unit != "K" else f"{v:.0f}{unit}"
    return str(n)


def size_label(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} B"


def weight_files(folder: Path) -> list[Path]:
    """A Hugging Face folder's weight files (none: a config left behind without its model)."""
    pats = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
    return sorted({f for pat in pats for f in folder.glob(pat) if f.is_file()})


@dataclass
class GGUFHeader:
    """A GGUF file's key-values (scalars and strings; arrays as their length, and short
    numeric arrays such as per-layer head counts also decoded) and tensor shapes and types:
    everything but the tensor data and the long arrays' elements (the vocabulary)."""

    kv: dict[str, object]
    array_lengths: dict[str, int]
    tensors: list[tuple[str, tuple[int, ...], int]]  # name, shape, GGMLQuantizationType value
    numbers: dict[str, list] = field(default_factory=dict)  # numeric arrays of <= 4096


def gguf_header(path: str | Path) -> GGUFHeader:
    """Read a GGUF header (format: ggml-org/ggml docs/gguf.md), decoding only what the
    picker needs. Raises ValueError on a file that is not a well-formed GGUF."""
    from gguf import GGUFValueType as T

    scalars = {
        T.UINT8: "B",
        T.INT8: "b",
        T.UINT16: "H",
        T.INT16: "h",
        T.UINT32: "I",
        T.INT32: "i",
        T.FLOAT32: "f",
        T.BOOL: "?",
        T.UINT64: "Q",
        T.INT64: "q",
        T.FLOAT64: "d",
    }
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24:
            raise ValueError(f"too short for a GGUF file ({size} bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise ValueError("no GGUF magic")
            order = "<"
            (version,) = struct.unpack_from("<I", buf, 4)
            if version & 0xFFFF == 0:  # written on a big-endian machine
                order = ">"
                (version,) = struct.unpack_from(">I", buf, 4)
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version} is not supported")
            pos = 8

            def take(fmt: str):
                nonlocal pos
                try:
                    (v,) = struct.unpack_from(order + fmt, buf, pos)
                except struct.error:
                    raise ValueError("truncated GGUF header") from None
                pos += struct.calcsize(fmt)
                return v

            def string() -> bytes:
                nonlocal pos
                n = take("Q")
                if pos + n > size:
                    raise ValueError("truncated GGUF header")
                pos += n
                return buf[pos - n : pos]

            def skip_array(itype: int, n: int) -> None:
                nonlocal pos
                if itype in scalars:
                    pos += n * struct.calcsize(scalars[itype])
                elif itype == T.STRING:
                    q = struct.Struct(order + "Q")
                    for _ in range(n):  # the vocabulary: lengths only, no decoding
                        pos += 8 + q.unpack_from(buf, pos)[0]
                elif itype == T.ARRAY:
                    for _ in range(n):
                        skip_array(take("I"), take("Q"))
                else:
                    raise ValueError(f"unknown GGUF array type {itype}")
                if pos > size:
                    raise ValueError("truncated GGUF header")

            n_tensors, n_kv = take("Q"), take("Q")
            if n_tensors > 10_000_000 or n_kv > 1_000_000:
                raise ValueError("implausible GGUF counts")
            kv: dict[str, object] = {}
            lengths: dict[str, int] = {}
            numbers: dict[str, list] = {}
            for _ in range(n_kv):
                key = string().decode("utf-8", "replace")
                vtype = take("I")
                if vtype == T.STRING:
                    kv[key] = string().decode("utf-8", "replace")
                elif vtype in scalars:
                    kv[key] = take(scalars[vtype])
                elif vtype == T.ARRAY:
                    itype, n = take("I"), take("Q")
                    if (
                        itype in scalars
                        and n <= 4096
                        and pos + n * struct.calcsize(scalars[itype]) <= size
                    ):
                        numbers[key] = list(
                            struct.unpack_from(f"{order}{n}{scalars[itype]}", buf, pos)
                        )
                    try:
                        skip_array(itype, n)
                    except struct.error:
                        raise ValueError("truncated GGUF header") from None
                    lengths[key] = n
                else:
                    raise ValueError(f"unknown GGUF value type {vtype} for {key}")
            tensors = []
            for _ in range(n_tensors):
                tname = string().decode("utf-8", "replace")
                n_dims = take("I")
                if n_dims > 8:
                    raise ValueError(f"tensor {tname} has {n_dims} dimensions")
                shape = tuple(take("Q") for _ in range(n_dims))
                ttype = take("I")
                take("Q")  # data offset
                tensors.append((tname, shape, ttype))
    return GGUFHeader(kv, lengths, tensors, numbers)


def _gguf_quantization(h: GGUFHeader) -> str | None:
    from gguf import GGMLQuantizationType, LlamaFileType

    ft = h.kv.get("general.file_type")
    if isinstance(ft, int):
        try:
            return re.sub(r"^(MOSTLY|ALL)_", "", LlamaFileType(ft).name)
        except ValueError:
            pass
    # no file type: the type most of the weight matrices' elements have
    counts: Counter = Counter()
    for _, shape, ttype in h.tensors:
        if len(shape) >= 2:
            counts[ttype] += _prod(shape)
    if not counts:
        return None
    t = counts.most_common(1)[0][0]
    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return f"type {t}"


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _gguf_meta(path: Path) -> ModelMeta:
    h = gguf_header(path)
    n_params = sum(_prod(s) for _, s, _ in h.tensors)
    size = path.stat().st_size
    m = SHARD.search(path.name)
    count = h.kv.get("split.count")
    if m and isinstance(count, int) and count > 1:  # the other shards' tensors and bytes
        for i in range(2, count + 1):
            shard = path.with_name(path.name[: m.start()] + f"-{i:05d}-of-{m.group(2)}.gguf")
            if not shard.is_file():
                raise ValueError(f"shard {shard.name} is missing")
            n_params += sum(_prod(s) for _, s, _ in gguf_header(shard).tensors)
            size += shard.stat().st_size
    arch = h.kv.get("general.architecture")
    kind = h.kv.get("general.type")
    return ModelMeta(
        "gguf",
        arch if isinstance(arch, str) else None,
        n_params or None,
        _gguf_quantization(h),
        size,
        "tokenizer.chat_template" in h.kv,
        kind if isinstance(kind, str) else "model",
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def _hf_meta(folder: Path) -> ModelMeta:
    config = _read_json(folder / "config.json")
    if not (folder / "config.json").is_file():
        raise ValueError("no config.json")
    weights = weight_files(folder)
    if not weights:
        raise ValueError("config.json but no weights")
    arch = config.get("model_type") or (config.get("architectures") or [None])[0]
    n_params, dtypes = 0, Counter()
    from safetensors import safe_open

    for f in weights:
        if f.suffix != ".safetensors":
            continue
        with safe_open(str(f), framework="np") as st:  # reads the header only
            for key in st.keys():
                sl = st.get_slice(key)
                n = _prod(sl.get_shape())
                n_params += n
                dtypes[sl.get_dtype()] += n
    quant = None
    qc = config.get("quantization_config")
    if isinstance(qc, dict):
        bits = qc.get("bits") or (
            4 if qc.get("load_in_4bit") else 8 if qc.get("load_in_8bit") else None
        )
        quant = " ".join(
            str(x) for x in (qc.get("quant_method"), f"{bits}-bit" if bits else "") if x
        )
    elif dtypes:
        quant = dtypes.most_common(1)[0][0]
    else:
        dt = config.get("torch_dtype") or config.get("dtype")
        quant = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(str(dt), dt)
    tok = _read_json(folder / "tokenizer_config.json")
    chat = bool(tok.get("chat_template")) or any(
        (folder / f).is_file() for f in ("chat_template.jinja", "chat_template.json")
    )
    return ModelMeta(
        "hf",
        arch if isinstance(arch, str) else None,
        n_params or None,
        quant or None,
        _folder_size(folder),
        chat,
    )


def _folder_size(folder: Path) -> int:
    seen, total = set(), 0
    for f in folder.rglob("*"):
        try:
            st = f.stat()  # follows the hub cache's symlinks to the blobs
        except OSError:
            continue
        if f.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


_META_CACHE: dict[tuple[str, int, int], ModelMeta] = {}
_META_LOCK = threading.Lock()


def model_metadata(path: str | Path) -> ModelMeta:
    """Architecture, parameter count, quantization, size and chat template of a GGUF file or a
    Hugging Face folder, cached per (path, size, mtime). Raises ValueError or OSError on a file
    or folder that is not a readable model."""
    p = Path(path)
    real = p.resolve()
    if real.is_dir():
        files = [f.stat() for f in real.iterdir() if f.is_file()]
        key = (
            str(real),
            sum(s.st_size for s in files),
            max((s.st_mtime_ns for s in files), default=0),
        )
    else:
        st = real.stat()
        key = (str(real), st.st_size, st.st_mtime_ns)
    with _META_LOCK:
        hit = _META_CACHE.get(key)
    if hit is not None:
        return hit
    meta = _hf_meta(real) if real.is_dir() else _gguf_meta(p)
    with _META_LOCK:
        _META_CACHE[key] = meta
    return meta
