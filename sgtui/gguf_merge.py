"""One GGUF file with the LoRA merged into the base model: what llama.cpp, Ollama or LM Studio
load alone, with no adapter beside it.

The base must be a GGUF file; the adapter's tensors come from export.gguf_lora_tensors, so they
carry the names of the base GGUF's tensors and the llama q/k row permutation on lora_B. Each
adapted weight W becomes W + alpha/r * (lora_B @ lora_A), the sum llama.cpp computes when it
applies the adapter GGUF at run time (src/llama-adapter.cpp). In numpy order (the reverse of
ggml's ne) a dequantised W is [out, in], lora_A (r, in) and lora_B (out, r).

All arithmetic is the `gguf` package's own (gguf.quants.dequantize / quantize, whose Q8_0 and
Q4_0 match ggml's reference quantisers bit for bit); the metadata is copied as gguf-py's
gguf_new_metadata.py copies it (every key in order, value type and array item type as they
were, GGUFWriter writing general.architecture itself). Changed keys: general.file_type (the
new type), general.quantization_version (as llama-quantize sets it), general.name and
general.description (they say sgtui merged a LoRA). An empty array, which GGUFWriter cannot
write, is left out.

Which tensor gets which type follows llama.cpp's own quantiser (src/llama-quant.cpp), so the
file is what `llama-quantize` would make of the merged model:
- quantised: 2-D (and 3-D) tensors whose name ends in "weight", except norms, MoE routers
  (ffn_gate_inp), position and token-type embeddings and the small tensors llama.cpp keeps as
  they are (altup, laurel, per_layer_model_proj, ssm/shortconv conv1d, RWKV time_mix_*,
  attn_rel_b). These take the requested type whatever their type in the base (an F32 base is
  quantised too), so the file is uniformly that type;
- everything else (norms, biases: 1-D F32) is copied byte for byte;
- a tensor whose rows are not a whole number of quantisation blocks is written in F16;
- the output layer (output.weight, or token_embd.weight when the model ties them) stays at
  least Q8_0: for q4_0 llama.cpp gives it Q6_K (Q8_0 where the rows do not fit Q6_K's blocks),
  which the gguf package cannot write, so Q8_0. token_embd of an untied model takes the
  requested type, as in llama.cpp;
- a tensor without LoRA that already has its target type is copied byte for byte, not
  dequantised and quantised again (llama-quantize does the same).
A base quantised below the requested type (the bundled Q4_1 model, say) gains nothing from
q8_0/f16 but its LoRA delta is then kept more precisely; q4_0 from a quantised base is
quantised twice.

Memory: the base is memory-mapped (GGUFReader) and tensors are written one at a time
(add_tensor_info for all, then write_tensor_data per tensor); a tensor is converted a slice of
rows at a time, so at any moment the process holds one tensor in its new type, about 16 MB of
float32 work, the adapter and the parsed metadata. Whole, in float32 and with the dequantiser's
temporaries, Llama 3 8B's vocabulary (128256 x 4096) would take about 6 GB; sliced, its q8_0
result takes 0.56 GB.

The file is written as export.export_gguf writes: a hidden temporary file beside the target,
renamed into place, after check_target before and after.
"""

from __future__ import annotations

import os
from pathlib import Path

from backends.llama_cpp import check_gguf

from .errors import SgtuiError
from .export import MERGED_QUANTS, BaseInfo, _temp_beside, _writing, check_target, gguf_lora_tensors

# check_target's kind for a single GGUF file
_FILE_KIND = "gguf-merged"  # one file (export.FILE_FORMATS)
# llama.cpp's quantiser leaves these as they are (src/llama-quant.cpp, llama_model_quantize_impl)
_KEEP_PARTS = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d.weight",
    "shortconv.conv.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
)
_KEEP_NAMES = ("position_embd.weight", "token_types.weight")
# values dequantised at a time (16 MB in float32): a 7B model's vocabulary is 0.5 GB whole
_SLICE = 1 << 22


def export_gguf_merged(
    adapter: Path,
    base_model: str | Path,
    dest: Path,
    quant: str = "q8_0",
    *,
    force: bool = True,
    in_run_folder: bool = True,
) -> Path:
    """Merge the peft `adapter` into the GGUF `base_model` and write one GGUF of type `quant`
    (one of MERGED_QUANTS) at `dest`. `force` and `in_run_folder` as in export.check_target."""
    import gguf
    import numpy as np

    if quant not in MERGED_QUANTS:
        raise SgtuiError(
            f"unknown quantisation {quant!r} for a merged GGUF",
            fix=f"use one of: {', '.join(MERGED_QUANTS)}",
        )
    base = _base_gguf(base_model)
    check_target(dest, _FILE_KIND, force, in_run_folder)  # before the merge spends minutes
    reader = gguf.GGUFReader(str(base))
    if reader.endianess != gguf.GGUFEndian.LITTLE:
        raise SgtuiError(
            "the base GGUF is big-endian; only little-endian files can be merged",
            path=str(base),
            fix="pass a little-endian GGUF of the base model",
        )
    split = reader.fields.get(gguf.Keys.Split.LLM_KV_SPLIT_COUNT)
    if split is not None and int(split.contents()) > 1:
        raise SgtuiError(
            "the base GGUF is one part of a split model",
            path=str(base),
            fix="join the parts first (llama-gguf-split --merge) and pass the joined file",
        )
    info = _base_info(reader)
    lora, alpha = gguf_lora_tensors(adapter, info)
    target = {
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
        "q4_0": gguf.GGMLQuantizationType.Q4_0,
    }[quant]
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    adapted = {k.rsplit(".", 1)[0] for k in lora}  # "<W>.lora_a" -> "<W>"
    plan = [(t, _out_type(t, target, has_output, t.name in adapted)) for t in reader.tensors]

    with _writing(dest):
        tmp = _temp_beside(dest, folder=False)
        writer = None
        try:
            writer = gguf.GGUFWriter(str(tmp), info.arch)
            alignment = reader.fields.get(gguf.Keys.General.ALIGNMENT)
            if alignment is not None:
                writer.data_alignment = int(alignment.contents())
            _copy_metadata(reader, writer, quant, base, adapter)
            for t, qtype in plan:
                shape = _numpy_shape(t)
                if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                    dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
                    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                else:
                    dtype = np.uint8
                    shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
                    nbytes = int(np.prod(shape))
                writer.add_tensor_info(t.name, shape, np.dtype(dtype), nbytes, raw_dtype=qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for t, qtype in plan:
                pair = (lora.get(t.name + ".lora_a"), lora.get(t.name + ".lora_b"))
                try:
                    data = _tensor_data(t, qtype, pair, alpha)
                except NotImplementedError as e:  # a type the gguf package cannot convert
                    raise SgtuiError(
                        f"cannot convert the base's tensor {t.name} ({t.tensor_type.name}): {e}",
                        path=str(base),
                        fix="pass the base model as an f16 GGUF",
                    ) from e
                writer.write_tensor_data(data)
            writer.close()
            check_target(dest, _FILE_KIND, force, in_run_folder)  # it may have changed meanwhile
            os.replace(tmp, dest)
        except BaseException:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
            raise
    return dest


def _base_gguf(base_model: str | Path) -> Path:
    p = Path(base_model)
    if p.is_dir():
        raise SgtuiError(
            "a merged GGUF needs the base model as a GGUF file, and this is a Hugging Face folder",
            path=str(p),
            fix="export --format merged for a Hugging Face folder, or pass --base "
            "with the base model's GGUF file",
        )
    return check_gguf(p)


def _base_info(reader) -> BaseInfo:
    """What export.base_info reads, from the reader already open (reading a GGUF's header
    again costs seconds: its vocabulary is parsed in Python)."""

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = field("general.architecture")
    n_head = int(field(f"{arch}.attention.head_count", 0) or 0)
    return BaseInfo(
        arch,
        int(field(f"{arch}.block_count")),
        n_head,
        int(field(f"{arch}.attention.head_count_kv", n_head) or n_head),
        {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors},
    )


def _quantisable(name: str, n_dims: int) -> bool:
    """llama.cpp's rule for the tensors its quantiser converts."""
    return (
        name.endswith("weight")
        and n_dims >= 2
        and name not in _KEEP_NAMES
        and not any(part in name for part in _KEEP_PARTS)
    )


def _out_type(t, target, has_output: bool, merged: bool):
    import gguf

    Q = gguf.GGMLQuantizationType
    if not _quantisable(t.name, len(t.shape)):
        # kept as it is; a LoRA merged into one (unusual) is stored in float
        return t.tensor_type if not merged or t.tensor_type in (Q.F32, Q.F16) else Q.F32
    qtype = target
    is_output = t.name == "output.weight" or (not has_output and t.name == "token_embd.weight")
    if is_output and target == Q.Q4_0:
        qtype = Q.Q8_0
    if qtype != Q.F16 and int(t.shape[0]) % gguf.GGML_QUANT_SIZES[qtype][0] != 0:
        qtype = Q.F16
    return qtype


def _numpy_shape(t) -> tuple[int, ...]:
    """ggml's ne reversed: rows last, as numpy and the quantisers see a tensor."""
    return tuple(int(x) for x in reversed(t.shape))


def _tensor_data(t, qtype, pair, alpha: float):
    """The bytes (as a numpy array) of tensor `t` in the file: copied when it keeps its type and
    has no LoRA, else dequantised, the LoRA added, and quantised to `qtype`, a slice of rows at
    a time so that only the result is held whole."""
    import gguf
    import numpy as np

    lora_a, lora_b = pair
    if lora_a is None and qtype == t.tensor_type:
        return t.data
    shape = _numpy_shape(t)
    rows = t.data.reshape(-1, t.data.shape[-1])  # the base's rows: values, or blocks as bytes
    step = max(1, _SLICE // shape[-1])
    out = None
    for i in range(0, rows.shape[0], step):
        w = gguf.quants.dequantize(rows[i : i + step], t.tensor_type)  # (rows, in) float32
        if lora_a is not None:
            if not w.flags.writeable:  # an F32 base tensor is a view of the read-only file
                w = w.copy()
            delta = lora_b[i : i + step] @ lora_a  # (rows, r) @ (r, in)
            delta *= alpha / lora_a.shape[0]
            w += delta
        q = gguf.quants.quantize(w, qtype)
        if out is None:
            out = np.empty((rows.shape[0], q.shape[-1]), dtype=q.dtype)
        out[i : i + step] = q
    return out.reshape(*shape[:-1], out.shape[-1])


def _copy_metadata(reader, writer, quant: str, base: Path, adapter: Path) -> None:
    """Every key of the base in order, as gguf-py's gguf_new_metadata.py copies them, with the
    file type, quantisation version, name and description changed or added."""
    import gguf

    K = gguf.Keys.General
    file_type = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }[quant]
    old_name = reader.fields.get(K.NAME)
    name = old_name.contents() if old_name is not None else base.stem
    new = {
        K.FILE_TYPE: (gguf.GGUFValueType.UINT32, int(file_type)),
        K.QUANTIZATION_VERSION: (gguf.GGUFValueType.UINT32, gguf.GGML_QUANT_VERSION),
        K.NAME: (gguf.GGUFValueType.STRING, f"{name} + sgtui LoRA ({quant})"),
        K.DESCRIPTION: (
            gguf.GGUFValueType.STRING,
            f"{base.name} with the LoRA adapter {adapter.name} merged in by sgtui, {quant}",
        ),
    }
    for field in reader.fields.values():
        if field.name == K.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # GGUFWriter writes the architecture; GGUF.* is the header, not a key
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        if field.name in new:
            val_type, value = new.pop(field.name)
            sub_type = None
        else:
            value = field.contents()
        if val_type == gguf.GGUFValueType.ARRAY and len(value) == 0:
            continue  # GGUFWriter cannot write an empty array
        writer.add_key_value(field.name, value, val_type, sub_type=sub_type)
    for key, (val_type, value) in new.items():
        writer.add_key_value(key, value, val_type)
