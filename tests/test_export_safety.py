"""`sgtui export` never destroys what the person owns (issue 16, item 1).

Through the real CLI, on a real peft adapter of a tiny random Llama (seconds, not a training):
an existing --out is refused unless --force; even with --force only a regular file (gguf) or a
folder that sgtui exported (its sgtui-export.json) is replaced; links, FIFOs, devices, foreign
folders and a file where a folder goes are left alone; places that cannot be written give a
message naming the path and the fix, exit 2, no traceback and no temporary files left behind.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from test_security import _tiny_hf_model
from word_task import WORD, make_run

from sgtui.cli import main
from sgtui.export import MANIFEST
from sgtui.store import Store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(base model folder, peft adapter folder): a LoRA on q_proj and v_proj of a random
    two-layer Llama, saved as peft saves it, with non-zero B so that a merge changes weights."""
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("tiny")
    base, adapter = root / "base", root / "adapter"
    _tiny_hf_model(base)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(base)),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.save_pretrained(str(adapter))
    return base, adapter


@pytest.fixture
def run(tmp_path, tiny) -> tuple[str, str]:
    """(database path, run id) of a run whose trained adapter is the tiny one."""
    base, adapter = tiny
    db = tmp_path / "t.db"
    store = Store(db)
    rid = make_run(store, [("green", WORD)], model=str(base))
    store.add_artifact(rid, "adapter", str(adapter))
    return str(db), str(rid)


def export(run, fmt: str, out: Path | str | None = None, *extra: str) -> int:
    db, rid = run
    argv = ["export", rid, "--format", fmt, "--db", db] + (["--out", str(out)] if out else [])
    return main(argv + list(extra))


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder` (itself included): file contents, None for folders."""
    return {
        str(p.relative_to(folder.parent)): (p.read_bytes() if p.is_file() else None)
        for p in [folder, *sorted(folder.rglob("*"))]
    }


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".sgtui-" in p.name]


def refused(capsys, path: Path | str, *words: str) -> str:
    err = capsys.readouterr().err
    assert str(path) in err and "fix:" in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


# -- the victim folder of the issue -----------------------------------------------------------
@pytest.mark.parametrize("fmt", ["adapter", "merged"])
def test_a_folder_of_the_persons_survives_with_and_without_force(run, tmp_path, capsys, fmt):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "notes.txt").write_text("important\n")
    (victim / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = snapshot(victim)

    assert export(run, fmt, victim) == 2
    refused(capsys, victim, "--force", "another --out")
    assert snapshot(victim) == before

    assert export(run, fmt, victim, "--force") == 2
    refused(capsys, victim, MANIFEST, "even with --force")
    assert snapshot(victim) == before
    assert leftovers(tmp_path) == []


# -- replacing what sgtui wrote ---------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["adapter", "merged"])
def test_force_replaces_an_earlier_sgtui_export(run, tmp_path, capsys, fmt):
    out = tmp_path / "exported"
    assert export(run, fmt, out) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == fmt and manifest["run"] == int(run[1]) and manifest["created"]
    weights = "adapter_model.safetensors" if fmt == "adapter" else "model.safetensors"
    assert (out / weights).is_file()
    (out / "stale.txt").write_text("from the earlier export\n")
    capsys.readouterr()

    assert export(run, fmt, out) == 2  # without --force: refused, left as it was
    refused(capsys, out, "already exists", "--force")
    assert (out / "stale.txt").is_file()

    assert export(run, fmt, out, "--force") == 0
    assert not (out / "stale.txt").exists() and (out / weights).is_file()
    assert json.loads((out / MANIFEST).read_text())["format"] == fmt
    assert leftovers(tmp_path) == []


def test_re_export_to_the_run_folder_needs_no_force(run, capsys):
    db, rid = run
    store = Store(db)
    for fmt in ("adapter", "gguf"):
        assert export(run, fmt) == 0
        first = Path(store.artifacts(int(rid), f"export-{fmt}")[-1]["path"])
        assert export(run, fmt) == 0  # `sgtui run` and the search loop do this every time
        assert Path(store.artifacts(int(rid), f"export-{fmt}")[-1]["path"]) == first
        assert leftovers(first.parent) == []
    adapter = Path(store.artifacts(int(rid), "export-adapter")[-1]["path"])
    assert json.loads((adapter / MANIFEST).read_text())["format"] == "adapter"
    assert first.read_bytes()[:4] == b"GGUF"


# -- files --------------------------------------------------------------------------------------
def test_gguf_onto_an_existing_file_needs_force(run, tmp_path, capsys):
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"my own model, not an export\n")
    assert export(run, "gguf", mine) == 2
    refused(capsys, mine, "already exists", "--force")
    assert mine.read_bytes() == b"my own model, not an export\n"

    assert export(run, "gguf", mine, "--force") == 0
    assert mine.read_bytes()[:4] == b"GGUF"
    assert leftovers(tmp_path) == []


def test_a_file_where_a_folder_goes_and_a_folder_where_a_file_goes(run, tmp_path, capsys):
    a_file = tmp_path / "adapter-out"
    a_file.write_text("mine\n")
    for extra in ((), ("--force",)):
        assert export(run, "adapter", a_file, *extra) == 2
        refused(capsys, a_file, "a regular file, not a folder")
        assert a_file.read_text() == "mine\n"

    a_folder = tmp_path / "model.gguf"
    (a_folder / "inner").mkdir(parents=True)
    (a_folder / MANIFEST).write_text("{}")  # even one that looks like sgtui's
    before = snapshot(a_folder)
    for extra in ((), ("--force",)):
        assert export(run, "gguf", a_folder, *extra) == 2
        refused(capsys, a_folder, "a folder, not a file")
        assert snapshot(a_folder) == before
    assert leftovers(tmp_path) == []


# -- links, FIFOs, devices: never replaced ------------------------------------------------------
def _fifo(tmp_path: Path) -> tuple[Path, object]:
    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)
    return path, lambda: stat.S_ISFIFO(os.lstat(path).st_mode)


def _link_to_file(tmp_path: Path) -> tuple[Path, object]:
    target = tmp_path / "real.gguf"
    target.write_bytes(b"mine")
    path = tmp_path / "link.gguf"
    path.symlink_to(target)
    return path, lambda: path.is_symlink() and target.read_bytes() == b"mine"


def _device(tmp_path: Path) -> tuple[Path, object]:
    path = tmp_path / "null.gguf"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # like /dev/null
    except (PermissionError, AttributeError):
        pytest.skip("cannot make a device node here (needs root / CAP_MKNOD)")
    return path, lambda: stat.S_ISCHR(os.lstat(path).st_mode)


@pytest.mark.parametrize("make", [_fifo, _link_to_file, _device], ids=["fifo", "link", "device"])
def test_special_files_are_refused_even_with_force(run, tmp_path, capsys, make):
    path, intact = make(tmp_path)
    for extra in ((), ("--force",)):
        assert export(run, "gguf", path, *extra) == 2
        refused(capsys, path, "another --out")
        assert intact()
    assert leftovers(tmp_path) == []


def test_a_link_to_an_earlier_export_folder_is_refused(run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert export(run, "adapter", out) == 0
    link = tmp_path / "link"
    link.symlink_to(out)
    before = snapshot(out)
    assert export(run, "adapter", link, "--force") == 2
    refused(capsys, link, "symbolic link")
    assert link.is_symlink() and snapshot(out) == before


# -- places that cannot be written --------------------------------------------------------------
def test_a_missing_folder_is_not_created(run, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "adapter.gguf"
    assert export(run, "gguf", out) == 2
    refused(capsys, out, "does not exist", "mkdir -p")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("fmt", ["gguf", "adapter"])
def test_inside_a_file(run, tmp_path, capsys, fmt):
    a_file = tmp_path / "afile"
    a_file.write_text("mine\n")
    out = a_file / "export"
    assert export(run, fmt, out) == 2
    refused(capsys, out, "not a folder")
    assert a_file.read_text() == "mine\n"


@pytest.mark.parametrize("fmt", ["gguf", "adapter"])
def test_a_folder_that_cannot_be_written(run, tmp_path, capsys, fmt):
    """A kernel folder where even root cannot create files (/sys); a chmod-ed folder for a
    user other than root (root ignores the mode bits)."""
    targets = []
    if os.path.isdir("/sys"):
        targets.append(Path("/sys") / "sgtui-export-test")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        targets.append(locked / "export")
    if not targets:
        pytest.skip("no folder here that this user cannot write (root, no /sys)")
    for out in targets:
        assert export(run, fmt, out) == 2
        refused(capsys, out, "cannot write the export")
        assert not os.path.lexists(out) and leftovers(out.parent) == []


def test_a_failed_merge_leaves_no_temporary_folder(run, tmp_path, capsys):
    no_weights = tmp_path / "empty-base"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    out = tmp_path / "merged"
    assert export(run, "merged", out, "--base", str(no_weights)) == 2
    refused(capsys, no_weights, "no weights")
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_export_from_before_the_manifest_is_replaced_only_in_the_run_folder(
    run, tmp_path, capsys
):
    """Older sgtui wrote no manifest: its export in the run's own folder (peft's files) is still
    replaced by a re-export; the same folder elsewhere is the person's and is refused."""
    from sgtui.export import default_out

    db, rid = run
    old = default_out(Store(db), int(rid), "adapter")
    old.mkdir(parents=True)
    (old / "adapter_config.json").write_text("{}")
    assert export(run, "adapter") == 0
    assert (old / MANIFEST).is_file() and (old / "adapter_model.safetensors").is_file()

    elsewhere = tmp_path / "old-export"
    elsewhere.mkdir()
    (elsewhere / "adapter_config.json").write_text("{}")
    assert export(run, "adapter", elsewhere, "--force") == 2
    refused(capsys, elsewhere, MANIFEST)
    assert [p.name for p in elsewhere.iterdir()] == ["adapter_config.json"]


def test_internal_epoch_gguf_is_rewritten_in_place(tiny, tmp_path):
    """The search loop writes each epoch's GGUF with export_gguf's defaults, into a folder that
    may not exist yet, and again on a later scoring: that keeps working."""
    from sgtui.export import export_gguf

    base, adapter = tiny
    dest = tmp_path / "runs" / "run-1" / "export" / "epoch-1.gguf"
    assert export_gguf(adapter, base, dest) == dest
    first = dest.read_bytes()
    assert first[:4] == b"GGUF"
    assert export_gguf(adapter, base, dest) == dest and dest.read_bytes() == first
    assert leftovers(dest.parent) == []
