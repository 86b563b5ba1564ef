"""What a wheel ships, checked on pyproject.toml without building one (.ci/wheel_check builds
and installs a real wheel): every package folder is listed, and every file of data/ matches a
package-data pattern, so an installed sgtui has its noise terms and example tasks."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def test_every_package_folder_is_listed():
    folders = {p.parent for top in ("sgtui", "backends") for p in (ROOT / top).rglob("*.py")}
    found = {".".join(f.relative_to(ROOT).parts) for f in folders if "__pycache__" not in f.parts}
    # data/'s folders too (setuptools warns about, and leaves out, an unlisted one)
    found |= {
        ".".join(["sgtui", *p.relative_to(ROOT).parts])
        for p in [ROOT / "data", *(ROOT / "data").rglob("*")]
        if p.is_dir() and "__pycache__" not in p.parts
    }
    assert found <= set(SETUPTOOLS["packages"]), found - set(SETUPTOOLS["packages"])


def shipped(path: str, pattern: str) -> bool:
    """setuptools' glob: `*` stays within one folder."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pats))


def test_every_data_file_goes_into_the_wheel():
    assert SETUPTOOLS["package-dir"]["sgtui.data"] == "data"
    # a data package's patterns, as paths under data/ (sgtui.data.tasks -> tasks/...)
    patterns = [
        "/".join([*pkg.split(".")[2:], pat])
        for pkg, pats in SETUPTOOLS["package-data"].items()
        if pkg == "sgtui.data" or pkg.startswith("sgtui.data.")
        for pat in pats
    ]
    files = [
        p.relative_to(ROOT / "data").as_posix() for p in (ROOT / "data").rglob("*") if p.is_file()
    ]
    assert "noise_terms.json" in files and "tasks/formal-rewrite.toml" in files
    left_out = [f for f in files if not any(shipped(f, pat) for pat in patterns)]
    assert not left_out, f"data files a wheel would not ship: {left_out}"


def test_a_clone_reads_its_top_level_data_folder():
    from sgtui.paths import REPO_DATA, example_tasks

    assert REPO_DATA == ROOT / "data"
    assert {p.name for p in example_tasks()} >= {"formal-rewrite.toml", "sentiment.toml"}
