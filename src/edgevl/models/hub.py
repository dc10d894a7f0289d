"""Weights from the Hugging Face hub: `hf-hub:ORG/REPO[/FILE][@REVISION]` specs and official tags, fetched with
`huggingface_hub` into its standard cache (the optional extra `edgevl[hub]`, imported only when needed).

The cache root and offline mode are read from the environment at each call (`HF_HUB_CACHE`, `HF_HOME`,
`HF_HUB_OFFLINE`), so a cached file is used without network and a missing one fails with one line naming the
repository, the file and the command that fetches it by hand. Without network huggingface_hub retries for about
20 s before it falls back to the cache; once the hub proved unreachable, later calls of the process stay offline.
LFS blobs, which the cache names by their sha256, are hashed once per process and refused when their content does
not match the name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgevl.errors import CheckpointError, ConfigError
from edgevl.io import sha256_file

HF_HUB = "hf-hub:"
CONFIG_FILE = "open_clip_config.json"
DEFAULT_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = {"1", "on", "yes", "true"}
_VERIFIED: set[tuple[str, int, int]] = set()
_UNREACHABLE = False  # set when the hub could not be reached: later files of this process come from the cache


@dataclass(frozen=True)
class HubRef:
    """A repository on the hub, optionally one file in it and a revision (branch, tag or commit)."""

    repo: str
    filename: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        return HF_HUB + self.repo + (f"/{self.filename}" if self.filename else "") + (
            f"@{self.revision}" if self.revision else "")


def parse_hub_spec(spec: str, revision: str | None = None) -> HubRef:
    """`hf-hub:ORG/REPO[/FILE][@REVISION]` -> HubRef; a `revision` argument must agree with one in the spec."""
    body = spec[len(HF_HUB):] if spec.startswith(HF_HUB) else spec
    body, _, pinned = body.partition("@")
    parts = body.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"{spec!r} is not a hub spec; expected hf-hub:ORG/REPO[/FILE][@REVISION]")
    if pinned and revision and pinned != revision:
        raise ConfigError(f"{spec!r} pins revision {pinned!r} but revision={revision!r} was passed")
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]) or None, pinned or revision)


def cache_dir() -> Path:
    """The hub cache root as huggingface_hub resolves it: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, else HF_HOME/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or xdg / "huggingface").expanduser() / "hub"


def offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for cached files only."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _fetch_command(ref: HubRef, filename: str) -> str:
    return f"hf download {ref.repo} {filename}" + (f" --revision {ref.revision}" if ref.revision else "")


def _verify(path: Path, ref: HubRef, filename: str) -> None:
    """Refuse a cached LFS blob whose sha256 is not the name the cache gave it (a damaged or swapped file)."""
    blob = Path(os.path.realpath(path))
    if not _SHA256.fullmatch(blob.name):
        return
    stat = blob.stat()
    key = (str(blob), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return
    digest = sha256_file(blob)
    if digest != blob.name:
        raise CheckpointError(f"cached {filename} of {ref.repo} is damaged (sha256 {digest[:12]}..., "
                              f"expected {blob.name[:12]}...): delete {blob} and run {_fetch_command(ref, filename)}")
    _VERIFIED.add(key)


def fetch_file(ref: HubRef, filename: str) -> Path:
    """The local path of one file of a repository: from the cache, else downloaded into it (unless offline)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ConfigError(f"loading {ref} needs huggingface_hub: pip install 'edgevl[hub]'") from None
    from edgevl.version import __version__

    global _UNREACHABLE
    try:
        path = Path(hf_hub_download(ref.repo, filename, revision=ref.revision, cache_dir=cache_dir(),
                                    local_files_only=offline() or _UNREACHABLE, library_name="edgevl",
                                    library_version=__version__))
    except Exception as exc:  # offline miss, 404, no network, gated repo: each is "cannot get this file"
        local_miss = isinstance(exc, FileNotFoundError)  # huggingface_hub's LocalEntryNotFoundError
        _UNREACHABLE = _UNREACHABLE or (local_miss and not offline())
        why = "not in the cache, and the hub is offline or unreachable" if local_miss else type(exc).__name__
        raise CheckpointError(f"cannot get {filename} of {ref.repo}{'@' + ref.revision if ref.revision else ''} "
                              f"({why}; cache {cache_dir()}); fetch it by hand: {_fetch_command(ref, filename)}"
                              ) from exc
    _verify(path, ref, filename)
    return path


def weight_candidates(filename: str | None) -> tuple[str, ...]:
    """The files to try for a weights name, safetensors first: the `.safetensors` twin of a pickled file."""
    if filename is None:
        return DEFAULT_WEIGHTS
    stem, dot, suffix = filename.rpartition(".")
    if dot and suffix in {"bin", "pt", "pth"}:
        return (f"{stem}.safetensors", filename)
    return (filename,)


def fetch_weights(ref: HubRef, filename: str | None = None) -> Path:
    """The weights file of a repository (`filename`, else `ref.filename`, else open_clip's default names),
    preferring a `.safetensors` twin; when none can be had, the error names the file asked for (or the default)."""
    named = filename or ref.filename
    candidates = weight_candidates(named)
    errors = []
    for name in candidates:
        try:
            return fetch_file(ref, name)
        except CheckpointError as exc:
            errors.append(exc)
    raise errors[-1 if named else 0]


def fetch_config(ref: HubRef) -> dict | None:
    """The repository's `open_clip_config.json` as a dict, or None when it has none (or it cannot be fetched)."""
    try:
        path = fetch_file(ref, CONFIG_FILE)
    except CheckpointError:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {CONFIG_FILE} of {ref.repo}: {exc}") from exc


def fetch_model_folder(ref: HubRef) -> tuple[Path, Path]:
    """(snapshot folder holding the repository's `open_clip_config.json`, its weights file) for `local-dir:`."""
    config = fetch_file(ref, CONFIG_FILE)
    return config.parent, fetch_weights(ref)
