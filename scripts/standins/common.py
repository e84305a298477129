"""Shared pieces of the stand-in builders: the Hugging Face cache layout, the STANDIN.txt label, atomic folders and
files."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

STANDIN_FILE = "STANDIN.txt"
STANDIN_TEXT = (
    "RANDOM STAND-IN for plumbing tests: {what}.\n"
    "It has the architecture (shrunk) and the release format of {real}, with random weights made locally by\n"
    "scripts/standins/ (seeded, never downloaded). Nothing computed from it is a result.\n"
)


def write_label(folder: Path, what: str, real: str) -> Path:
    """STANDIN.txt in `folder`: says what this is a stand-in for, and that nothing computed from it is a result."""
    path = folder / STANDIN_FILE
    path.write_text(STANDIN_TEXT.format(what=what, real=real))
    return path


def revision(repo_id: str) -> str:
    """A fixed 40-hex "commit" for a stand-in snapshot: the same on every machine and every build."""
    return hashlib.sha1(f"ssmttm random stand-in of {repo_id}".encode()).hexdigest()


@contextlib.contextmanager
def replaced_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `final` that replaces it on success (a rebuild never mixes two builds)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def hf_snapshot(hub_cache: Path, repo_id: str) -> Iterator[Path]:
    """The snapshot folder of `repo_id` in a Hugging Face hub cache (`HF_HUB_CACHE`), to fill with the model files.

    Layout of huggingface_hub's cache: models--ORG--NAME/refs/main holds the revision, and
    snapshots/<revision>/ the files (plain files here: the cache accepts them where symlinks are not used), so that
    with HF_HUB_OFFLINE=1 `from_pretrained(repo_id)` and `hf_hub_download(repo_id, file)` find them.
    """
    rev = revision(repo_id)
    repo_dir = Path(hub_cache) / f"models--{repo_id.replace('/', '--')}"
    with replaced_dir(repo_dir) as tmp:
        (tmp / "refs").mkdir()
        (tmp / "refs" / "main").write_text(rev)
        snapshot = tmp / "snapshots" / rev
        snapshot.mkdir(parents=True)
        yield snapshot


def snapshot_path(hub_cache: Path, repo_id: str) -> Path:
    return Path(hub_cache) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / revision(repo_id)


def canonical_safetensors_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys: safetensors writes its metadata in hash-map order, which
    changes from run to run, and a stand-in must be the same bytes on every build. Offsets are unchanged."""
    import json
    import struct

    path = Path(path)
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        if len(text) > length:
            raise ValueError(f"{path}: canonical header longer than the original")
        handle.seek(8)
        handle.write(text + b" " * (length - len(text)))  # the format pads its header with spaces


def save_torch_file(obj: object, path: Path) -> Path:
    """torch.save `obj` (a state dict or a release checkpoint) to `path` atomically, its folder made if needed."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, str(tmp))
    tmp.replace(path)
    return path
