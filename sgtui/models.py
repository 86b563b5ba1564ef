"""Models by name, offline: what a person types in --model becomes a local path that llama.cpp
or transformers can load, and the model picker lists every model already on the machine.

Nothing here touches the network or starts another program; each name is looked up in the
folders its tool writes, as that tool lays them out:

* **A path** (a .gguf file or a Hugging Face folder) that exists: used as it is.
* **`ollama:NAME[:TAG]`**: Ollama's own store. A name is `[HOST/][NAMESPACE/]MODEL[:TAG]`,
  defaulting to `registry.ollama.ai`, `library` and `latest` (ollama/ollama
  types/model/name.go: ParseNameBare, DefaultName; the tag is what follows the last `:` after
  the last `/`). Its manifest is `$OLLAMA_MODELS/manifests/HOST/NAMESPACE/MODEL/TAG`
  (manifest/paths.go: PathForName, Name.Filepath), an OCI-style JSON whose layer with
  mediaType `application/vnd.ollama.image.model` is the weights (server/images.go: GetModel),
  stored as `$OLLAMA_MODELS/blobs/sha256-<hex>` (manifest/paths.go: BlobsPath, `:` -> `-`).
  That blob is a plain GGUF file. The models folder is $OLLAMA_MODELS, else `~/.ollama/models`
  (envconfig/config.go: Models), and on Linux also the system service's
  `/usr/share/ollama/.ollama/models` (docs/faq.mdx: "Where are models stored?"). Ollama
  compares names case-insensitively (Name.EqualFold), so a name that misses by case alone is
  still found.
* **`lmstudio:PUBLISHER/REPO[/FILE.gguf]`**: LM Studio's models folder, laid out as
  `PUBLISHER/REPO/FILE.gguf` (lmstudio.ai/docs/advanced/sideload). The folder is
  $LMSTUDIO_MODELS, else the `downloadsFolder` of `~/.lmstudio/settings.json`, else
  `~/.lmstudio/models`, else the older `~/.cache/lm-studio/models`.
* **`ORG/NAME[/FILE.gguf]`**, a Hugging Face repo id that is not an existing path: the local hub
  cache ($HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
  `~/.cache/huggingface/hub`, read when called rather than at import as
  huggingface_hub.constants does, so a changed environment is honoured). `refs/main` names the
  snapshot (else the only or newest one); a snapshot with config.json and weights is a
  transformers folder, one with GGUF files gives its GGUF, a config without weights (as
  AutoConfig leaves behind) is an error that says to download the model.

Where a folder holds several GGUF models (LM Studio, a GGUF repo) nothing is picked for the
person: the error lists them and says how to name one, and the picker lists each on its own.
Multimodal projectors (`mmproj*.gguf`) are never models; a model split into
`-00001-of-0000N.gguf` shards is one model, loaded from its first shard.

Metadata for the picker comes from sgtui.model_meta (GGUF headers, config.json).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SgtuiError
from .model_meta import SHARD, ModelMeta, model_metadata, params_label, size_label, weight_files
from .paths import bundled_model

OLLAMA_PREFIX = "ollama:"
LMSTUDIO_PREFIX = "lmstudio:"
OLLAMA_HOST, OLLAMA_NAMESPACE, OLLAMA_TAG = "registry.ollama.ai", "library", "latest"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
NAME_FORMS = (
    "a path to a .gguf file or a Hugging Face folder, ollama:NAME[:TAG], "
    "lmstudio:PUBLISHER/REPO, or a Hugging Face repo id ORG/NAME in the local cache"
)
_OLLAMA_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")
_OLLAMA_HOST_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}$")


# -- what the picker shows ---------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """One model found on the machine. `name` is what to type in --model; `where` says where it
    was found, without the machine's paths, for the picker."""

    name: str
    path: str
    source: str  # "bundled" | "ollama" | "lmstudio" | "hf-cache" | "path"
    where: str
    format: str
    architecture: str | None = None
    n_params: int | None = None
    quantization: str | None = None
    size_bytes: int = 0
    chat_template: bool | None = None

    @classmethod
    def of(cls, name: str, path: str | Path, source: str, where: str, meta: ModelMeta):
        return cls(
            name,
            str(path),
            source,
            where,
            meta.format,
            meta.architecture,
            meta.n_params,
            meta.quantization,
            meta.size_bytes,
            meta.chat_template,
        )

    @property
    def backend(self) -> str:
        """The backend that loads it by default (as backends.default_backend_for)."""
        return "transformers" if self.format == "hf" else "llama-cpp"

    @property
    def params_label(self) -> str:
        return params_label(self.n_params)

    @property
    def size_label(self) -> str:
        return size_label(self.size_bytes)


@dataclass(frozen=True)
class Skipped:
    """An entry that looked like a model but could not be used, and why."""

    name: str
    reason: str


@dataclass
class ModelScan:
    models: list[ModelInfo] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


# -- the folders each tool writes --------------------------------------------------------------
def _env_path(var: str) -> Path | None:
    # Ollama trims spaces and quotes from its variables (envconfig.Var); do the same
    v = os.environ.get(var, "").strip().strip("\"'")
    return Path(os.path.expandvars(v)).expanduser() if v else None


def ollama_models_dirs() -> list[Path]:
    """Where Ollama keeps models: $OLLAMA_MODELS alone when set, else the user's folder and,
    on Linux, the system service's (its installer makes the `ollama` user's home there)."""
    env = _env_path("OLLAMA_MODELS")
    if env:
        return [env]
    dirs = [Path.home() / ".ollama" / "models"]
    if sys.platform.startswith("linux"):
        dirs.append(Path("/usr/share/ollama/.ollama/models"))
    return dirs


def lmstudio_models_dirs() -> list[Path]:
    """Where LM Studio keeps models: $LMSTUDIO_MODELS alone when set, else the folder chosen in
    LM Studio's settings, the current default and the pre-0.3 default."""
    env = _env_path("LMSTUDIO_MODELS")
    if env:
        return [env]
    home = Path.home()
    dirs = []
    try:
        settings = json.loads((home / ".lmstudio" / "settings.json").read_text(encoding="utf-8"))
        chosen = settings.get("downloadsFolder") if isinstance(settings, dict) else None
        if isinstance(chosen, str) and chosen.strip():
            dirs.append(Path(chosen).expanduser())
    except (OSError, ValueError):
        pass  # no settings, or unreadable ones: the defaults below
    for d in (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"):
        if d not in dirs:
            dirs.append(d)
    return dirs


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, by huggingface_hub.constants' rules, read now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        p = _env_path(var)
        if p:
            return p
    home = _env_path("HF_HOME")
    if home is None:
        xdg = _env_path("XDG_CACHE_HOME")
        home = (xdg or Path.home() / ".cache") / "huggingface"
    return home / "hub"


def _shown(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)


# -- resolving a name --------------------------------------------------------------------------
def resolve_model(name: str) -> str:
    """The local path for what the person typed in --model or the picker (see the module's
    docstring for the forms). Raises SgtuiError naming what was looked for, where, and the fix.
    Reads files only: no network, no Ollama or LM Studio process."""
    text = (name or "").strip()
    if not text:
        raise SgtuiError("no model given", fix=f"give {NAME_FORMS}")
    p = Path(text).expanduser()
    if p.exists():
        return str(p)
    if text.lower().startswith(OLLAMA_PREFIX):
        return str(resolve_ollama(text[len(OLLAMA_PREFIX) :]))
    if text.lower().startswith(LMSTUDIO_PREFIX):
        return str(resolve_lmstudio(text[len(LMSTUDIO_PREFIX) :]))
    repo = _as_repo_id(text)
    if repo is not None:
        return str(resolve_hf_cache(*repo))
    raise _not_found(text)


def _not_found(text: str) -> SgtuiError:
    hint = ""
    try:  # a bare Ollama name that Ollama has: say the prefix
        parse_ollama_name(text)
        _ollama_manifest(text)
        hint = f"; Ollama has {text!r}: pass --model ollama:{text}"
    except SgtuiError:
        pass
    return SgtuiError("model file not found", path=text, fix=f"give {NAME_FORMS}{hint}")


def _as_repo_id(text: str) -> tuple[str, str] | None:
    """(repo id, file inside it or "") when `text` reads as ORG/NAME[/FILE], else None."""
    if text.startswith(("/", ".", "~", "\\")) or "\\" in text or ":" in text:
        return None
    parts = text.split("/")
    if len(parts) < 2 or any(not x for x in parts) or ".." in parts:
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo = "/".join(parts[:2])
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return repo, "/".join(parts[2:])


# -- Ollama ------------------------------------------------------------------------------------
def parse_ollama_name(text: str) -> tuple[str, str, str, str]:
    """(host, namespace, model, tag), as Ollama's ParseName with its defaults."""
    s, tag = text.strip(), OLLAMA_TAG
    if s.rfind(":") > s.rfind("/"):
        s, tag = s.rsplit(":", 1)
    parts = s.split("/")
    if len(parts) > 3 or not all(parts):
        raise SgtuiError(
            f"not an Ollama model name: {text!r}",
            fix="write ollama:NAME[:TAG], e.g. ollama:smollm2:135m",
        )
    host, namespace = OLLAMA_HOST, OLLAMA_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    ok = (
        _OLLAMA_HOST_PART.match(host)
        and _OLLAMA_PART.match(model)
        and _OLLAMA_PART.match(tag)
        and _OLLAMA_PART.match(namespace)
        and "." not in namespace
    )
    if not ok:
        raise SgtuiError(
            f"not an Ollama model name: {text!r}",
            fix="write ollama:NAME[:TAG], e.g. ollama:smollm2:135m",
        )
    return host, namespace, model, tag


def ollama_display_name(host: str, namespace: str, model: str, tag: str) -> str:
    """Ollama's shortest form of a name (Name.DisplayShortest), as `ollama list` shows it."""
    if host.lower() != OLLAMA_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace.lower() != OLLAMA_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def _child_ci(parent: Path, name: str) -> Path | None:
    exact = parent / name
    if exact.exists():
        return exact
    try:
        for entry in parent.iterdir():
            if entry.name.casefold() == name.casefold():
                return entry
    except OSError:
        pass
    return None


def _ollama_manifest(text: str) -> tuple[Path, Path]:
    """(models folder, manifest file) for an Ollama name, or SgtuiError."""
    parts = parse_ollama_name(text)
    dirs = ollama_models_dirs()
    looked = []
    for root in dirs:
        at: Path | None = root / "manifests"
        for part in parts:
            at = _child_ci(at, part) if at is not None else None
        looked.append(root / "manifests" / Path(*parts))
        if at is not None and at.is_file():
            return root, at
    short = ollama_display_name(*parts)
    raise SgtuiError(
        f"Ollama has no model {short!r} (no manifest at {_shown(looked)})",
        fix=f"run `ollama pull {short}` first, or set OLLAMA_MODELS to the folder "
        "that holds Ollama's models, or pass a path to a .gguf file",
    )


def read_ollama_manifest(root: Path, manifest: Path, short: str) -> Path:
    """The GGUF blob a manifest names, checked to exist and to be a GGUF."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        layers = data.get("layers") or []
    except (OSError, ValueError, AttributeError) as e:
        raise SgtuiError(
            f"Ollama's manifest for {short!r} cannot be read ({e})",
            path=str(manifest),
            fix=f"run `ollama pull {short}` again",
        )
    digests = [
        x.get("digest")
        for x in layers
        if isinstance(x, dict) and x.get("mediaType") == OLLAMA_MODEL_LAYER
    ]
    if not digests or not isinstance(digests[0], str):
        raise SgtuiError(
            f"Ollama's manifest for {short!r} has no GGUF model layer ({OLLAMA_MODEL_LAYER})",
            path=str(manifest),
            fix="pick another Ollama model, or pass a path to a .gguf file",
        )
    digest = digests[0]
    if not re.fullmatch(r"sha256[:-][0-9a-fA-F]{64}", digest):
        raise SgtuiError(
            f"Ollama's manifest for {short!r} names a bad digest {digest!r}",
            path=str(manifest),
            fix=f"run `ollama pull {short}` again",
        )
    blob = root / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise SgtuiError(
            f"the weights of Ollama's {short!r} are missing",
            path=str(blob),
            fix=f"run `ollama pull {short}` again to restore them",
        )
    try:
        with blob.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise SgtuiError(
            f"the weights of Ollama's {short!r} cannot be read ({e.strerror or e})",
            path=str(blob),
            fix="make the file readable to you (Linux service "
            "installs: join the `ollama` group), or set OLLAMA_MODELS",
        )
    if magic != b"GGUF":
        raise SgtuiError(
            f"the weights of Ollama's {short!r} are not a GGUF file",
            path=str(blob),
            fix="pick another Ollama model, or pass a .gguf path",
        )
    return blob


def resolve_ollama(text: str) -> Path:
    """`NAME[:TAG]` (without `ollama:`) -> the GGUF blob Ollama would load."""
    root, manifest = _ollama_manifest(text)
    return read_ollama_manifest(root, manifest, ollama_display_name(*parse_ollama_name(text)))


# -- GGUF files in a folder (LM Studio, GGUF repos) --------------------------------------------
def gguf_models_in(folder: Path) -> list[Path]:
    """The GGUF models directly in a folder, sorted: projectors left out, a split model by its
    first shard."""
    out = []
    for f in sorted(folder.glob("*.gguf")) + sorted(folder.glob("*.GGUF")):
        if f.name.lower().startswith("mmproj") or not f.is_file():
            continue
        m = SHARD.search(f.name)
        if m and int(m.group(1)) != 1:
            continue
        if f not in out:
            out.append(f)
    return out


def _pick_gguf(folder: Path, name: str, how: str) -> Path:
    found = gguf_models_in(folder)
    if len(found) == 1:
        return found[0]
    if not found:
        raise SgtuiError(
            f"{name} holds no .gguf model file",
            path=str(folder),
            fix="pick a model that has a GGUF file, or pass a path",
        )
    names = ", ".join(f.name for f in found[:6]) + (", ..." if len(found) > 6 else "")
    raise SgtuiError(
        f"{name} holds {len(found)} GGUF models: {names}",
        path=str(folder),
        fix=f"name one, e.g. {how}{found[0].name}",
    )


def _inside(root: Path, rel: str) -> Path:
    p = root.joinpath(*rel.split("/"))
    if ".." in rel.split("/"):
        raise SgtuiError(f"{rel!r}: `..` is not allowed in a model name", fix="pass a path")
    return p


def resolve_lmstudio(text: str) -> Path:
    """`PUBLISHER/REPO[/FILE.gguf]` (without `lmstudio:`) -> a GGUF in LM Studio's folder."""
    rel = text.strip().strip("/")
    parts = rel.split("/")
    if len(parts) < 2 or not all(parts):
        raise SgtuiError(
            f"not an LM Studio model name: {text!r}",
            fix="write lmstudio:PUBLISHER/REPO or lmstudio:PUBLISHER/REPO/FILE.gguf",
        )
    dirs = lmstudio_models_dirs()
    for root in dirs:
        p = _inside(root, rel)
        if p.is_file():
            return p
        if p.is_dir():
            return _pick_gguf(
                p, f"LM Studio's {'/'.join(parts[:2])}", f"lmstudio:{'/'.join(parts)}/"
            )
    raise SgtuiError(
        f"LM Studio has no model {rel!r} (looked in {_shown(dirs)})",
        fix="download it in LM Studio first, set LMSTUDIO_MODELS to LM Studio's "
        "models folder, or pass a path to a .gguf file",
    )


# -- the Hugging Face hub cache ----------------------------------------------------------------
def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot refs/main points to (as try_to_load_from_cache reads it), else the only
    one, else the newest."""
    snaps = repo_dir / "snapshots"
    try:
        commit = (repo_dir / "refs" / "main").read_text(encoding="utf-8").strip()
        if commit and (snaps / commit).is_dir():
            return snaps / commit
    except OSError:
        pass
    try:
        found = [d for d in snaps.iterdir() if d.is_dir()]
    except OSError:
        return None
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def resolve_hf_cache(repo_id: str, file: str = "") -> Path:
    """A repo id (and optionally a file in it) -> its folder or GGUF in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    cache = hf_hub_cache()
    repo_dir = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    if not file:
        cfg = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
        if isinstance(cfg, str) and weight_files(Path(cfg).parent):
            return Path(cfg).parent
    snap = _snapshot(repo_dir)
    if snap is None:
        raise SgtuiError(
            f"{repo_id!r} is neither a path nor a model in the Hugging Face cache (no {repo_dir})",
            fix=f"download it first (`hf download {repo_id}`), set HF_HOME or "
            "HF_HUB_CACHE to the cache that has it, or pass a path",
        )
    if file:
        p = _inside(snap, file)
        if not p.is_file():
            there = ", ".join(f.name for f in gguf_models_in(snap)[:6]) or "no .gguf files"
            raise SgtuiError(
                f"the cached {repo_id!r} has no file {file!r} (it has: {there})",
                path=str(snap),
                fix=f"`hf download {repo_id} {file}` first, or name a file it has",
            )
        return p
    if weight_files(snap) or ((snap / "config.json").is_file() and not gguf_models_in(snap)):
        _check_hf_weights(snap, repo_id)
        return snap
    return _pick_gguf(snap, f"the cached {repo_id!r}", f"{repo_id}/")


def _check_hf_weights(folder: Path, repo_id: str) -> None:
    if not weight_files(folder):
        raise SgtuiError(
            f"the cache holds {repo_id!r}'s config but not its weights",
            path=str(folder),
            fix=f"download the whole model first (`hf download {repo_id}`), or pass a path",
        )


# -- listing -----------------------------------------------------------------------------------
def describe_model(name: str, source: str = "path", where: str = "") -> ModelInfo:
    """Resolve a name and read its metadata. Raises SgtuiError when either fails."""
    path = resolve_model(name)
    try:
        meta = model_metadata(path)
    except Exception as e:  # OSError, ValueError, a safetensors error: all mean "not a model"
        raise SgtuiError(
            f"not a model sgtui can read ({e})",
            path=path,
            fix="pass a .gguf file or a Hugging Face folder",
        ) from e
    return ModelInfo.of(name, path, source, where or Path(path).name, meta)


def _add(scan: ModelScan, name: str, path: Path, source: str, where: str) -> None:
    try:
        meta = model_metadata(path)
    except Exception as e:  # a broken entry is skipped, never the whole list
        scan.skipped.append(Skipped(name, f"{where}: {type(e).__name__}: {e}"))
        return
    if meta.kind not in ("model", ""):
        scan.skipped.append(Skipped(name, f"{where}: a GGUF {meta.kind}, not a model"))
        return
    scan.models.append(ModelInfo.of(name, path, source, where, meta))


def _scan_bundled(scan: ModelScan) -> None:
    try:
        p = bundled_model()
    except SgtuiError:
        return
    _add(scan, str(p), p, "bundled", f"bundled · {p.name}")


def _scan_ollama(scan: ModelScan) -> None:
    seen: set[str] = set()
    for root in ollama_models_dirs():
        # the manifests are exactly four folders deep (manifest.Manifests' glob)
        try:
            found = sorted(f for f in (root / "manifests").glob("*/*/*/*") if f.is_file())
        except OSError:
            continue
        for m in found:
            host, ns, model, tag = m.relative_to(root / "manifests").parts
            short = ollama_display_name(host, ns, model, tag)
            name = OLLAMA_PREFIX + short
            if name.casefold() in seen:
                continue  # the user's folder shadows the service's, as resolve_model does
            seen.add(name.casefold())
            try:
                blob = read_ollama_manifest(root, m, short)
            except SgtuiError as e:
                scan.skipped.append(Skipped(name, e.message))
                continue
            _add(scan, name, blob, "ollama", f"Ollama · blobs/{blob.name[:19]}…")


def _scan_lmstudio(scan: ModelScan) -> None:
    for root in lmstudio_models_dirs():
        try:
            repos = sorted(d for d in root.glob("*/*") if d.is_dir())
        except OSError:
            continue
        for repo in repos:
            rel = "/".join(repo.relative_to(root).parts)
            ggufs = gguf_models_in(repo)
            if not ggufs:
                scan.skipped.append(Skipped(LMSTUDIO_PREFIX + rel, "no .gguf model file"))
            for f in ggufs:
                name = LMSTUDIO_PREFIX + rel + ("" if len(ggufs) == 1 else f"/{f.name}")
                _add(scan, name, f, "lmstudio", f"LM Studio · {rel}/{f.name}")


def _scan_hf_cache(scan: ModelScan) -> None:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hf_hub_cache())
    except CacheNotFound:
        return
    except OSError as e:
        scan.skipped.append(Skipped("Hugging Face cache", str(e)))
        return
    for w in info.warnings:  # entries the scanner itself could not read
        scan.skipped.append(Skipped("Hugging Face cache", str(w)))
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        snap = _snapshot(repo.repo_path)
        if snap is None:
            scan.skipped.append(Skipped(repo.repo_id, "no snapshot"))
            continue
        where = f"HF cache · {repo.repo_path.name}/snapshots/{snap.name[:8]}"
        ggufs = gguf_models_in(snap)
        if weight_files(snap) or ((snap / "config.json").is_file() and not ggufs):
            _add(scan, repo.repo_id, snap, "hf-cache", where)  # no weights: skipped, with why
            continue
        if not ggufs:
            scan.skipped.append(Skipped(repo.repo_id, "no config.json or .gguf file"))
        for f in ggufs:
            name = repo.repo_id + ("" if len(ggufs) == 1 else f"/{f.name}")
            _add(scan, name, f, "hf-cache", f"{where}/{f.name}")


def find_models() -> ModelScan:
    """Every model on the machine, in the order the picker shows them: the bundled one,
    Ollama's, LM Studio's, the Hugging Face cache's; and what was skipped, with why."""
    scan = ModelScan()
    for part in (_scan_bundled, _scan_ollama, _scan_lmstudio, _scan_hf_cache):
        try:
            part(scan)
        except Exception as e:  # one unreadable store must not hide the others
            scan.skipped.append(Skipped(part.__name__[6:], f"{type(e).__name__}: {e}"))
    return scan


def list_models() -> list[ModelInfo]:
    """The models find_models finds (the picker's list)."""
    return find_models().models
