"""Task files, databases and model files are data, never code.

- no eval/exec/pickle (or anything that unpickles) in sgtui/ and backends/, checked on the AST;
- adapters and checkpoints are safetensors and JSON (checked on files a real training writes);
- trust_remote_code is off unless the person passes --trust-remote-code;
- a default run makes no network call (an audit hook in the child records every attempt; where
  strace works, the system calls are watched too).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sgtui.paths import REPO_DATA

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("sgtui/**/*.py"), *ROOT.glob("backends/**/*.py")])
TASK = str(REPO_DATA / "tasks" / "formal-rewrite.toml")
# llama.cpp threads in the children (SGTUI_THREADS; 0 keeps sgtui's default of one per core)
THREADS = os.environ.get("SGTUI_THREADS", "1")
TINY = [
    "--rounds",
    "1",
    "--per-round",
    "2",
    "--gen-max-tokens",
    "16",
    "--n",
    "2",
    "--best-of",
    "2",
    "--ann-max-tokens",
    "8",
    "--quiet",
]

# modules whose loading runs code from the data it reads
UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "joblib",
    "pickletools",
}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__", "breakpoint"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_uses(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{line}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append(f"{line}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if isinstance(node.func, ast.Name) and name in UNSAFE_BUILTINS:
                found.append(f"{line}: {name}()")
            elif name in ("os.system", "os.popen") or name.startswith("os.exec"):
                found.append(f"{line}: {name}()")
            elif name.startswith("yaml.") and last != "safe_load":
                found.append(f"{line}: {name}() (only yaml.safe_load is safe)")
            elif name == "torch.load" and not _is_const(_kw(node, "weights_only"), True):
                found.append(f"{line}: torch.load without weights_only=True")
            elif name == "torch.save":
                found.append(f"{line}: torch.save (a pickle; use safetensors)")
            elif (
                last == "load"
                and name.split(".")[0] in ("np", "numpy")
                and not _is_const(_kw(node, "allow_pickle"), False)
                and _kw(node, "allow_pickle") is not None
            ):
                found.append(f"{line}: {name}(allow_pickle=...)")
            elif last == "save_pretrained" and _is_const(_kw(node, "safe_serialization"), False):
                found.append(f"{line}: save_pretrained(safe_serialization=False)")
            elif last == "from_pretrained" and _is_const(_kw(node, "trust_remote_code"), True):
                found.append(f"{line}: from_pretrained(trust_remote_code=True)")
            elif name.startswith("subprocess.") and _is_const(_kw(node, "shell"), True):
                found.append(f"{line}: {name}(shell=True)")
            elif (
                last == "add_argument"
                and node.args
                and _is_const_str(node.args[0], "--trust-remote-code")
            ):
                if (
                    not (
                        isinstance(_kw(node, "action"), ast.Constant)
                        and _kw(node, "action").value == "store_true"
                    )
                    or _kw(node, "default") is not None
                ):
                    found.append(f"{line}: --trust-remote-code must be a store_true flag")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            pos = [*args.posonlyargs, *args.args]
            defaults = dict(
                zip([a.arg for a in pos[len(pos) - len(args.defaults) :]], args.defaults)
            )
            defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults)})
            d = defaults.get("trust_remote_code")
            if d is not None and not _is_const(d, False):
                found.append(f"{line}: {node.name}(trust_remote_code=...) must default to False")
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "trust_remote_code"
            and node.value is not None
            and not _is_const(node.value, False)
        ):
            found.append(f"{line}: field trust_remote_code must default to False")
    return found


def _is_const_str(node, value: str) -> bool:
    return isinstance(node, ast.Constant) and node.value == value


def test_sources_found():
    names = {p.name for p in SOURCES}
    assert {"task.py", "store.py", "cli.py", "llama_cpp.py", "transformers_gen.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_from_data(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert unsafe_uses(tree) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "eval(s)",
        "exec(s)",
        "import pickle",
        "from pickle import loads",
        "import dill",
        "yaml.load(f)",
        "yaml.full_load(f)",
        "torch.load(p)",
        "torch.load(p, weights_only=False)",
        "torch.save(sd, p)",
        "np.load(p, allow_pickle=True)",
        "m.save_pretrained(d, safe_serialization=False)",
        "AutoModel.from_pretrained(p, trust_remote_code=True)",
        "os.system(cmd)",
        "subprocess.run(cmd, shell=True)",
        "def f(trust_remote_code=True): pass",
        "p.add_argument('--trust-remote-code', action='store_true', default=True)",
        "class C:\n    trust_remote_code: bool = True",
    ],
)
def test_the_checker_catches(snippet):
    """The scan is only as good as its rules: each unsafe pattern must be caught..."""
    assert unsafe_uses(ast.parse(snippet)), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "json.loads(s)",
        "tomllib.loads(s)",
        "yaml.safe_load(f)",
        "torch.load(p, weights_only=True)",
        "re.compile(p)",
        "m.eval()",
        "model.save_pretrained(d, safe_serialization=True)",
        "AutoModel.from_pretrained(p, trust_remote_code=trust_remote_code)",
        "def f(trust_remote_code: bool = False): pass",
        "safetensors.torch.load_file(p)",
    ],
)
def test_the_checker_allows(snippet):
    """...and the safe spellings must pass."""
    assert unsafe_uses(ast.parse(snippet)) == [], snippet


# -- trust_remote_code ------------------------------------------------------------------------
class _Recorder:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def patch(self, monkeypatch, cls, name):
        def from_pretrained(src, *a, **kw):
            self.calls.append((name, kw))
            return _Dummy()

        monkeypatch.setattr(cls, "from_pretrained", staticmethod(from_pretrained))


class _Dummy:
    pad_token = "<pad>"
    eos_token = "</s>"
    bos_token = "<s>"
    chat_template = None
    config = type("C", (), {"max_position_embeddings": 128})()

    def eval(self):
        return self


@pytest.fixture
def hf_recorder(monkeypatch, tmp_path):
    transformers = pytest.importorskip("transformers")
    rec = _Recorder()
    rec.patch(monkeypatch, transformers.AutoTokenizer, "tokenizer")
    rec.patch(monkeypatch, transformers.AutoModelForCausalLM, "model")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return rec, folder


def test_load_hf_trusts_no_remote_code_by_default(hf_recorder):
    from backends.transformers_gen import TransformersGenerator, load_hf

    rec, folder = hf_recorder
    load_hf(folder)
    TransformersGenerator(str(folder))
    assert len(rec.calls) == 4
    assert all(kw.get("trust_remote_code") is False for _, kw in rec.calls), rec.calls
    rec.calls.clear()
    load_hf(folder, trust_remote_code=True)
    assert all(kw.get("trust_remote_code") is True for _, kw in rec.calls), rec.calls


def test_training_tokenizer_trusts_no_remote_code_by_default(hf_recorder):
    from sgtui.training import chat_format

    rec, folder = hf_recorder
    chat_format(folder)
    assert rec.calls and all(kw.get("trust_remote_code") is False for _, kw in rec.calls)


def test_cli_flag_is_off_unless_passed():
    from sgtui.cli import build_parser
    from sgtui.cli_args import generator_options as _gen_options
    from sgtui.train_worker import build_parser as worker_parser

    p = build_parser()
    args = p.parse_args(["generate", TASK])
    assert args.trust_remote_code is False
    assert _gen_options(args, "transformers") == {"trust_remote_code": False}
    args = p.parse_args(["generate", TASK, "--trust-remote-code"])
    assert _gen_options(args, "transformers") == {"trust_remote_code": True}
    assert worker_parser().parse_args(["--db", "x", "--run", "1"]).trust_remote_code is False


def test_training_child_gets_the_flag_only_when_asked(tmp_path, monkeypatch):
    import sgtui.training as training
    from sgtui.config import RunParams
    from sgtui.store import Store
    from sgtui.synthesis import create_run
    from sgtui.task import load_task

    store = Store(tmp_path / "t.db")
    task = load_task(TASK)
    rid = create_run(store, task, RunParams.defaults_for(task.type), "m.gguf", "llama-cpp")
    store.add_sample(
        rid, round=0, slot=0, stage="annotated", input="hi", output="Hello.", status="kept"
    )
    argvs = []

    class Popen:
        def __init__(self, argv, **kw):
            argvs.append(argv)

    monkeypatch.setattr(training.subprocess, "Popen", Popen)
    training.TrainingJob().start(store.path, rid, training.TrainParams())
    training.TrainingJob().start(store.path, rid, training.TrainParams(), trust_remote_code=True)
    assert "--trust-remote-code" not in argvs[0] and "--trust-remote-code" in argvs[1]


# -- adapters and checkpoints are safetensors ---------------------------------------------------
def _tiny_hf_model(folder: Path) -> None:
    """A randomly initialised two-layer Llama and a word-level tokenizer: the real training code
    runs on it in seconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "please could you send the file move meeting friday late traffic i will be".split()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)


def _pickle_or_zip(path: Path) -> bool:
    head = path.read_bytes()[:4]
    return head.startswith(b"\x80") or head == b"PK\x03\x04"  # pickle protocol 2+, torch.save


@pytest.mark.slow
def test_training_writes_only_safetensors_and_json(tmp_path):
    pytest.importorskip("peft")
    from safetensors import safe_open

    from backends.training import PeftTrainer, TrainSpec, latest_checkpoint
    from sgtui.training import TrainParams

    base = tmp_path / "base"
    _tiny_hf_model(base)
    texts = [
        ("could you send the file", "please send the file </s>"),
        ("move meeting friday", "the meeting will be friday </s>"),
        ("late traffic", "i will be late </s>"),
    ]
    spec = TrainSpec(
        base_model=str(base),
        texts=texts,
        params=TrainParams(
            epochs=2, batch_size=2, max_len=32, rank=2, alpha=4, precision="fp32", trainer="peft"
        ),
        out_dir=tmp_path / "out" / "adapter",
        checkpoints=tmp_path / "out" / "ck",
    )
    events: list[dict] = []
    PeftTrainer(cuda=False, precision="fp32").train(spec, events.append)
    assert latest_checkpoint(spec.checkpoints).name == "epoch-2"
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors" for p in written)
    assert any(p.name == "optimizer.safetensors" for p in written)
    for p in written:
        assert p.suffix in (".safetensors", ".json", ".md"), p
        assert not _pickle_or_zip(p), p
        if p.suffix == ".safetensors":
            with safe_open(str(p), "pt") as f:
                assert list(f.keys())


# -- no network ---------------------------------------------------------------------------------
NET_HOOK = textwrap.dedent("""
    import os, sys
    _log = os.environ["SGTUI_TEST_NET_LOG"]
    _watch = ("socket.", "urllib.", "http.client.", "ftplib.", "smtplib.", "poplib.",
              "imaplib.", "nntplib.", "telnetlib.", "webbrowser.")
    def _hook(event, args):
        if event.startswith(_watch):
            with open(_log, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {event} {args!r:.200}\\n")
    sys.addaudithook(_hook)
""")


def _env(tmp_path: Path, log: Path) -> dict:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(NET_HOOK)
    return {
        **os.environ,
        "SGTUI_HOME": str(tmp_path / "home"),
        "SGTUI_TEST_NET_LOG": str(log),
        "SGTUI_THREADS": THREADS,
        "PYTHONPATH": os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH")) if p),
    }


def test_the_network_hook_sees_a_connection(tmp_path):
    """The hook itself works: a connection attempt (to a closed local port) is recorded."""
    log = tmp_path / "net.log"
    code = (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), 1)\n"
        "except OSError:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(tmp_path, log), check=True)
    assert "socket.connect" in log.read_text()


@pytest.mark.slow
def test_default_run_makes_no_network_call(tmp_path):
    """A real generation, the samples listing and the runs listing, with every Python-level
    network attempt recorded, loopback included: none."""
    log = tmp_path / "net.log"
    env = _env(tmp_path, log)
    db = str(tmp_path / "n.db")
    for args in (["generate", TASK, *TINY], ["samples", "1"], ["runs"], ["doctor"]):
        out = subprocess.run(
            [sys.executable, "-m", "sgtui", *args, *(["--db", db] if args[0] != "doctor" else [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr
    assert not log.exists() or log.read_text() == "", log.read_text()


def _strace_works() -> bool:
    if not shutil.which("strace"):
        return False
    try:
        return (
            subprocess.run(
                ["strace", "-f", "-o", os.devnull, "true"], capture_output=True, timeout=30
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


NET_CALLS = ("socket", "connect", "sendto", "bind")


def _net_syscalls(trace: Path) -> list[str]:
    return [
        ln
        for ln in trace.read_text().splitlines()
        if any(f" {c}(" in ln or ln.startswith(f"{c}(") for c in NET_CALLS)
    ]


@pytest.mark.skipif(not _strace_works(), reason="strace is missing or not allowed here")
def test_strace_sees_a_connection(tmp_path):
    trace = tmp_path / "trace"
    code = (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), 1)\n"
        "except OSError:\n    pass\n"
    )
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=" + ",".join(NET_CALLS),
            "-o",
            str(trace),
            sys.executable,
            "-c",
            code,
        ],
        check=True,
        timeout=120,
    )
    assert any("connect(" in ln for ln in _net_syscalls(trace))


@pytest.mark.slow
@pytest.mark.skipif(not _strace_works(), reason="strace is missing or not allowed here")
def test_default_run_makes_no_network_syscall(tmp_path):
    """The same run watched at the system-call level, which also sees native code (llama.cpp):
    no process in the tree opens an internet socket or connects anywhere."""
    trace = tmp_path / "trace"
    env = _env(tmp_path, tmp_path / "net.log")
    out = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=" + ",".join(NET_CALLS),
            "-o",
            str(trace),
            sys.executable,
            "-m",
            "sgtui",
            "generate",
            TASK,
            *TINY,
            "--db",
            str(tmp_path / "s.db"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    calls = _net_syscalls(trace)
    # a local (AF_UNIX) socket is not the network, but none is expected either
    assert calls == [], calls[:10]
