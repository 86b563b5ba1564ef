"""Models by name, offline: fake Ollama, LM Studio and Hugging Face cache layouts built in a
temporary folder around the real bundled GGUF, resolved and listed by sgtui.models; the
resolved Ollama blob loaded by llama.cpp; sgtui.model_meta's GGUF header reader checked against
the gguf package's own GGUFReader."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from word_task import KEEP_EVERY_SAMPLE

from sgtui import model_meta, models
from sgtui.errors import SgtuiError

ROOT = Path(__file__).resolve().parent.parent
resolve_model = models.resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEMPLATE = "{{ .System }} {{ .Prompt }}"


def link(src: Path, dst: Path) -> None:
    """The bundled GGUF under another name: a symlink, else a hard link, else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for make in (os.symlink, os.link, shutil.copyfile):
        try:
            make(src, dst)
            return
        except OSError:
            continue
    raise OSError(f"cannot place {src} at {dst}")


@pytest.fixture(scope="session")
def digest(bundled_model) -> str:
    """The bundled GGUF's sha256, as Ollama names its blob."""
    h = hashlib.sha256()
    with open(bundled_model, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def put_blob(root: Path, data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{d}").write_bytes(data)
    return f"sha256:{d}"


def ollama_manifest(root: Path, host: str, ns: str, model: str, tag: str, layers: list) -> Path:
    """A manifest as Ollama writes it (manifest.WriteManifest): schema 2, a config layer."""
    config = put_blob(
        root,
        json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "Q4_1"}).encode(),
    )
    m = root / "manifests" / host / ns / model / tag
    m.parent.mkdir(parents=True, exist_ok=True)
    m.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": config,
                    "size": 80,
                },
                "layers": layers,
            }
        )
    )
    return m


def model_layer(digest: str, size: int) -> dict:
    return {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": f"sha256:{digest}",
        "size": size,
    }


def build_ollama(root: Path, gguf: Path, digest: str) -> Path:
    link(gguf, root / "blobs" / f"sha256-{digest}")
    size = gguf.stat().st_size
    template = {
        "mediaType": "application/vnd.ollama.image.template",
        "digest": put_blob(root, TEMPLATE.encode()),
        "size": len(TEMPLATE),
    }
    layers = [model_layer(digest, size), template]
    ollama_manifest(root, "registry.ollama.ai", "library", "smollm2", "135m", layers)
    ollama_manifest(root, "registry.ollama.ai", "someone", "tiny", "latest", layers)
    ollama_manifest(root, "hf.co", "bartowski", "SmolLM2-GGUF", "Q4_1", layers)
    return root / "blobs" / f"sha256-{digest}"


def build_lmstudio(root: Path, gguf: Path) -> None:
    repo = root / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF"
    link(gguf, repo / "SmolLM2-135M-Instruct.Q4_1.gguf")
    (repo / "mmproj-SmolLM2-f16.gguf").write_bytes(b"GGUF")  # a projector: never a model
    link(gguf, root / "pub" / "multi" / "multi.Q4_1.gguf")
    link(gguf, root / "pub" / "multi" / "multi.Q8_0.gguf")


def tiny_hf_folder(folder: Path) -> int:
    """A llama-shaped Hugging Face folder with real safetensors weights; returns its
    parameter count."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        "model.embed_tokens.weight": np.zeros((64, 16), dtype=np.float32),
        "model.layers.0.mlp.up_proj.weight": np.zeros((32, 16), dtype=np.float32),
        "model.norm.weight": np.zeros((16,), dtype=np.float32),
    }
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "torch_dtype": "float32"}
        )
    )
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    return sum(t.size for t in tensors.values())


def hub_repo(hub: Path, repo_id: str, files: dict[str, Path | bytes]) -> Path:
    """A repo in the hub cache as huggingface_hub lays it out: blobs, refs/main, and a
    snapshot of symlinks to the blobs."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha1(name.encode()).hexdigest()
        if isinstance(content, Path):
            link(content, blob)
        else:
            blob.write_bytes(content)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    return snap


def build_hub(hub: Path, gguf: Path, tmp: Path) -> int:
    hub_repo(hub, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", {"smollm2-135m-q4_1.gguf": gguf})
    src = tmp / "tiny-src"
    n = tiny_hf_folder(src)
    hub_repo(hub, "tiny-org/tiny-llama", {f.name: f for f in sorted(src.iterdir())})
    return n


@pytest.fixture
def stores(tmp_path, monkeypatch, bundled_model, digest):
    """Ollama, LM Studio and the hub cache, each in its own folder, named by the environment;
    HOME points at an empty folder so the machine's own stores stay out."""
    gguf = Path(bundled_model)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    s = {"blob": build_ollama(tmp_path / "ollama", gguf, digest), "home": home}
    build_lmstudio(tmp_path / "lmstudio", gguf)
    s["hf_params"] = build_hub(tmp_path / "hub", gguf, tmp_path)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.setenv("LMSTUDIO_MODELS", str(tmp_path / "lmstudio"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    s.update(ollama=tmp_path / "ollama", lmstudio=tmp_path / "lmstudio", hub=tmp_path / "hub")
    return s


def fails(name: str) -> SgtuiError:
    with pytest.raises(SgtuiError) as e:
        resolve_model(name)
    assert e.value.fix, "every error says how to fix it"
    return e.value


# -- resolving ------------------------------------------------------------------------------------
def test_a_path_is_used_as_it_is(stores, bundled_model):
    assert resolve_model(bundled_model) == bundled_model
    link(Path(bundled_model), stores["home"] / "m" / "x.gguf")
    assert resolve_model("~/m/x.gguf") == str(stores["home"] / "m" / "x.gguf")


def test_ollama_names_resolve_to_the_gguf_blob(stores):
    blob = str(stores["blob"])
    for name in (
        "ollama:smollm2:135m",
        "ollama:library/smollm2:135m",
        "ollama:registry.ollama.ai/library/smollm2:135m",
        "ollama:SmolLM2:135M",  # Ollama compares names case-insensitively
        "ollama:someone/tiny",  # the tag defaults to latest
        "ollama:hf.co/bartowski/SmolLM2-GGUF:Q4_1",
    ):
        assert resolve_model(name) == blob, name
    assert Path(blob).read_bytes()[:4] == b"GGUF"


def test_ollama_default_folders(stores, monkeypatch, bundled_model, digest):
    monkeypatch.delenv("OLLAMA_MODELS")
    build_ollama(stores["home"] / ".ollama" / "models", Path(bundled_model), digest)
    assert models.ollama_models_dirs()[0] == stores["home"] / ".ollama" / "models"
    got = resolve_model("ollama:smollm2:135m")
    assert got == str(stores["home"] / ".ollama" / "models" / "blobs" / f"sha256-{digest}")


def test_ollama_errors_say_what_to_do(stores, digest):
    e = fails("ollama:smollm2:360m")
    assert "Ollama has no model 'smollm2:360m'" in e.message
    assert str(stores["ollama"] / "manifests") in e.message
    assert "ollama pull smollm2:360m" in e.fix

    blob = stores["ollama"] / "blobs" / f"sha256-{'f' * 64}"
    ollama_manifest(
        stores["ollama"],
        "registry.ollama.ai",
        "library",
        "gone",
        "latest",
        [model_layer("f" * 64, 10)],
    )
    e = fails("ollama:gone")
    assert "missing" in e.message and e.path == str(blob)
    assert "`ollama pull gone:latest` again" in e.fix

    ollama_manifest(stores["ollama"], "registry.ollama.ai", "library", "nolayer", "latest", [])
    assert "no GGUF model layer" in fails("ollama:nolayer").message

    bad = put_blob(stores["ollama"], b"not a gguf at all").split(":")[1]
    ollama_manifest(
        stores["ollama"], "registry.ollama.ai", "library", "bad", "latest", [model_layer(bad, 17)]
    )
    assert "not a GGUF file" in fails("ollama:bad").message

    assert "not an Ollama model name" in fails("ollama:../../etc:x").message


def test_lmstudio_names(stores):
    root = stores["lmstudio"]
    want = root / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    # the projector beside it is not a model, so the repo has one GGUF
    assert resolve_model("lmstudio:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF") == str(want)
    e = fails("lmstudio:pub/multi")
    assert "2 GGUF models: multi.Q4_1.gguf, multi.Q8_0.gguf" in e.message
    assert "lmstudio:pub/multi/multi.Q4_1.gguf" in e.fix
    assert resolve_model("lmstudio:pub/multi/multi.Q8_0.gguf") == str(
        root / "pub" / "multi" / "multi.Q8_0.gguf"
    )
    e = fails("lmstudio:pub/absent")
    assert "LM Studio has no model 'pub/absent'" in e.message and "LMSTUDIO_MODELS" in e.fix


def test_lmstudio_default_folders(stores, monkeypatch, bundled_model):
    monkeypatch.delenv("LMSTUDIO_MODELS")
    home = stores["home"]
    assert models.lmstudio_models_dirs() == [
        home / ".lmstudio" / "models",
        home / ".cache" / "lm-studio" / "models",
    ]
    link(Path(bundled_model), home / ".cache" / "lm-studio" / "models" / "a" / "b" / "b.gguf")
    assert resolve_model("lmstudio:a/b").endswith("lm-studio/models/a/b/b.gguf")
    # a models folder chosen in LM Studio's settings comes first
    chosen = stores["home"] / "big-disk"
    (home / ".lmstudio").mkdir()
    (home / ".lmstudio" / "settings.json").write_text(json.dumps({"downloadsFolder": str(chosen)}))
    assert models.lmstudio_models_dirs()[0] == chosen


def test_hugging_face_repo_ids_from_the_local_cache(stores):
    snap = stores["hub"] / "models--tiny-org--tiny-llama" / "snapshots" / COMMIT
    assert resolve_model("tiny-org/tiny-llama") == str(snap)
    gsnap = (
        stores["hub"] / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF" / "snapshots" / COMMIT
    )
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF") == str(
        gsnap / "smollm2-135m-q4_1.gguf"
    )
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-q4_1.gguf") == str(
        gsnap / "smollm2-135m-q4_1.gguf"
    )
    e = fails("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/other.gguf")
    assert "has no file 'other.gguf' (it has: smollm2-135m-q4_1.gguf)" in e.message

    e = fails("someone/not-downloaded")
    assert "neither a path nor a model in the Hugging Face cache" in e.message
    assert str(stores["hub"] / "models--someone--not-downloaded") in e.message
    assert "hf download someone/not-downloaded" in e.fix

    # the config alone (as AutoConfig leaves behind) is not a model
    hub_repo(stores["hub"], "org/config-only", {"config.json": b"{}"})
    e = fails("org/config-only")
    assert "config but not its weights" in e.message and "hf download org/config-only" in e.fix


def test_hf_home_is_honoured(stores, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert models.hf_hub_cache() == tmp_path / "hfhome" / "hub"
    assert "hfhome" in fails("tiny-org/tiny-llama").message
    shutil.copytree(stores["hub"], tmp_path / "hfhome" / "hub", symlinks=True)
    assert resolve_model("tiny-org/tiny-llama").startswith(str(tmp_path / "hfhome" / "hub"))
    monkeypatch.delenv("HF_HOME")
    assert models.hf_hub_cache() == stores["home"] / ".cache" / "huggingface" / "hub"


def test_anything_else_is_a_clear_error(stores):
    e = fails("no-such-model.gguf")
    assert e.message == "model file not found" and "ollama:NAME[:TAG]" in e.fix
    assert fails("/nowhere/x.gguf").path == "/nowhere/x.gguf"
    # an Ollama name without its prefix: the error says the prefix
    assert "pass --model ollama:smollm2:135m" in fails("smollm2:135m").fix


# -- the resolved blob is a model llama.cpp runs ------------------------------------------------
@pytest.mark.slow
def test_the_ollama_blob_loads_in_llama_cpp_and_generates(stores):
    import backends
    from backends.base import ChatMessage, SamplingParams

    path = resolve_model("ollama:smollm2:135m")
    gen = backends.load_generator("llama-cpp", path, n_threads=1)
    try:
        prompt = gen.render_chat([ChatMessage("user", "What is the capital of France?")])
        assert "<|im_start|>assistant" in prompt  # the chat template came from the blob
        (c,) = list(gen.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8)))
    finally:
        gen.close()
    assert c.n_tokens > 0 and c.text.strip(), c


# -- listing --------------------------------------------------------------------------------------
def test_list_models_finds_every_store_with_its_metadata(stores, bundled_model):
    scan = models.find_models()
    by_name = {m.name: m for m in scan.models}
    assert list(by_name) == [
        bundled_model,
        "ollama:hf.co/bartowski/SmolLM2-GGUF:Q4_1",
        "ollama:smollm2:135m",
        "ollama:someone/tiny:latest",
        "lmstudio:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        "lmstudio:pub/multi/multi.Q4_1.gguf",
        "lmstudio:pub/multi/multi.Q8_0.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        "tiny-org/tiny-llama",
    ]
    size = Path(bundled_model).stat().st_size
    for m in scan.models:
        if m.format == "gguf":  # every GGUF here is SmolLM2-135M-Instruct Q4_1
            assert (m.architecture, m.quantization, m.chat_template) == ("llama", "Q4_1", True)
            assert 130e6 < m.n_params < 140e6 and m.params_label == "135M"
            assert m.size_bytes == size and m.backend == "llama-cpp"
            assert resolve_model(m.name) == m.path  # each listed name resolves to its file
    ollama = by_name["ollama:smollm2:135m"]
    assert ollama.path == str(stores["blob"]) and ollama.source == "ollama"
    hf = by_name["tiny-org/tiny-llama"]
    assert (hf.format, hf.architecture, hf.n_params, hf.quantization, hf.chat_template) == (
        "hf",
        "llama",
        stores["hf_params"],
        "F32",
        True,
    )
    assert hf.backend == "transformers" and resolve_model(hf.name) == hf.path
    assert hf.size_bytes == sum(f.stat().st_size for f in Path(hf.path).iterdir())
    assert models.list_models() == scan.models


def test_a_broken_entry_is_skipped_with_why(stores, bundled_model, digest):
    ollama_manifest(
        stores["ollama"],
        "registry.ollama.ai",
        "library",
        "gone",
        "latest",
        [model_layer("e" * 64, 10)],
    )
    (stores["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "junk").mkdir()
    (stores["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "junk" / "x").write_text(
        "{not json"
    )
    cut = stores["lmstudio"] / "pub" / "cut" / "cut.gguf"
    cut.parent.mkdir(parents=True)
    cut.write_bytes(Path(bundled_model).read_bytes()[:4096])  # a download stopped early
    hub_repo(stores["hub"], "org/config-only", {"config.json": b"{}"})
    import gguf

    w = gguf.GGUFWriter(str(stores["lmstudio"] / "pub" / "cut" / "lora.gguf"), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)  # a LoRA adapter beside a model is not a model
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    scan = models.find_models()
    why = {s.name: s.reason for s in scan.skipped}
    assert "weights of Ollama's 'gone:latest' are missing" in why["ollama:gone:latest"]
    assert "cannot be read" in why["ollama:junk:x"]
    assert "truncated GGUF header" in why["lmstudio:pub/cut/cut.gguf"]
    assert "a GGUF adapter, not a model" in why["lmstudio:pub/cut/lora.gguf"]
    assert "config.json but no weights" in why["org/config-only"]
    assert len(scan.models) == 9  # everything else is still listed


# -- the GGUF header ----------------------------------------------------------------------------
def reader_view(path):
    """What the gguf package's GGUFReader reads: scalar and string values, array lengths, and
    tensor names, shapes (outermost first, as stored: GGUFReader's own order) and types."""
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(path)
    kv, lengths = {}, {}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        if f.types[0] == GGUFValueType.ARRAY:
            lengths[key] = len(f.data)
        else:
            kv[key] = f.contents()
    tensors = [
        (t.name, tuple(int(x) for x in t.field.parts[3]), int(t.tensor_type)) for t in r.tensors
    ]
    return kv, lengths, tensors


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and np.float32(a) == np.float32(b))


@pytest.mark.slow  # GGUFReader takes 5 s on the bundled model's vocabulary
def test_gguf_header_reads_what_gguf_reader_reads(bundled_model):
    h = model_meta.gguf_header(bundled_model)
    kv, lengths, tensors = reader_view(bundled_model)
    assert h.kv.keys() == kv.keys() and all(same(h.kv[k], kv[k]) for k in kv)
    assert h.array_lengths == lengths and lengths["tokenizer.ggml.tokens"] == 49152
    assert h.tensors == tensors and len(tensors) == 272


def test_gguf_header_on_a_file_the_gguf_writer_wrote(tmp_path):
    """Every value type, nested arrays, and a vocabulary, written by the gguf package."""
    import gguf

    path = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_block_count(2)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_bool("x.bool", True)
    w.add_float64("x.f64", 0.125)
    w.add_int8("x.i8", -3)
    w.add_uint64("x.u64", 2**40)
    w.add_array("x.nested", [[1, 2], [3]])
    w.add_array("x.floats", [0.5, 1.5, 2.5])
    w.add_token_list([f"tok{i}" for i in range(3000)])
    w.add_chat_template("{{ messages }}")
    w.add_tensor("a.weight", np.zeros((8, 4), dtype=np.float32))
    w.add_tensor("b.bias", np.zeros((5,), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    h = model_meta.gguf_header(path)
    kv, lengths, tensors = reader_view(path)
    assert h.kv.keys() == kv.keys() and all(same(h.kv[k], kv[k]) for k in kv)
    # GGUFReader flattens nested arrays ("FIXME" in its source): the outer length is 2
    assert h.array_lengths == {**lengths, "x.nested": 2} and lengths["x.nested"] == 3
    assert h.tensors == tensors
    meta = model_meta.model_metadata(path)
    assert (meta.architecture, meta.n_params, meta.quantization, meta.chat_template) == (
        "qwen2",
        37,
        "Q8_0",
        True,
    )


def test_metadata_is_cached_per_path_size_and_mtime(bundled_model, tmp_path, monkeypatch):
    p = tmp_path / "m.gguf"
    shutil.copyfile(bundled_model, p)
    calls = []
    real = model_meta.gguf_header
    monkeypatch.setattr(model_meta, "gguf_header", lambda path: calls.append(path) or real(path))
    first = model_meta.model_metadata(p)
    assert model_meta.model_metadata(p) == first and len(calls) == 1
    os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    assert model_meta.model_metadata(p) == first and len(calls) == 2


# -- the core stays headless and offline --------------------------------------------------------
def test_no_network_is_touched(stores, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("sgtui.models tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert len(models.list_models()) == 9
    resolve_model("tiny-org/tiny-llama")
    fails("someone/not-downloaded")


def test_the_core_imports_no_ui_and_no_cli(bundled_model, tmp_path):
    code = (
        "import sys, sgtui.models as m; m.resolve_model(sys.argv[1]); m.list_models(); "
        "bad = [x for x in ('textual', 'sgtui.cli', 'sgtui.tui') if x in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "OLLAMA_MODELS": str(tmp_path / "o"),
        "LMSTUDIO_MODELS": str(tmp_path / "l"),
        "HF_HUB_CACHE": str(tmp_path / "h"),
    }
    r = subprocess.run(
        [sys.executable, "-c", code, bundled_model],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# -- everywhere a model is named ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["ollama:smollm2:135m", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"]
)
def test_generate_takes_a_model_by_name(stores, name, tmp_path, capsys):
    """`sgtui generate --model NAME` (as `run` and `eval`, through cli.resolve_model): the run
    records the file the name resolved to, so training, export and resume find it."""
    from sgtui.cli import main
    from sgtui.store import Store

    db = tmp_path / "n.db"
    code = main(
        [
            "generate",
            str(ROOT / "data" / "tasks" / "formal-rewrite.toml"),
            "--model",
            name,
            "--rounds",
            "1",
            "--per-round",
            "1",
            "--n",
            "1",
            "--db",
            str(db),
        ]
    )
    assert code == 0, capsys.readouterr().err
    run = Store(db).run(1)
    assert run["model"] == resolve_model(name) and Path(run["model"]).is_file()
    assert run["backend"] == "llama-cpp"


@pytest.mark.slow
def test_run_takes_an_ollama_name_through_training(stores, tmp_path, capsys):
    """`sgtui run --model ollama:NAME`: generation, training and the llama.cpp export all use
    the GGUF blob the name resolves to, with no Ollama process."""
    from sgtui.cli import main
    from sgtui.store import Store

    db = tmp_path / "r.db"
    blob = resolve_model("ollama:smollm2:135m")
    code = main(
        [
            "run",
            str(ROOT / "data" / "tasks" / "formal-rewrite.toml"),
            "--model",
            "ollama:smollm2:135m",
            "--rounds",
            "1",
            "--per-round",
            "3",
            "--n",
            "2",
            "--epochs",
            "1",
            "--no-eval",
            "--quiet",
            "--db",
            str(db),
            *KEEP_EVERY_SAMPLE,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    store = Store(db)
    assert store.run(1)["model"] == blob and store.run(1)["status"] == "done"
    (export,) = store.artifacts(1, "export-gguf")
    assert json.loads(export["meta"])["base_model"] == blob and Path(export["path"]).is_file()
