"""Artifact plumbing shared by every stage: atomic writes, provenance, stable hashing, sharding.

Every file a stage produces goes through `atomic_path` or `atomic_dir`: it is written under a temporary name in the
same folder and renamed into place only when complete, so a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from ssmttm.config import canonical_json

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
TMP_MARK = ".tmp-"

# Libraries whose versions go into every provenance record (missing ones are skipped).
TRACKED_LIBRARIES = (
    "torch",
    "numpy",
    "pyarrow",
    "soundfile",
    "soxr",
    "mutagen",
    "yt-dlp",
    "transformers",
    "descript-audio-codec",
    "demucs",
    "lightning",
    "snakemake",
    "dvc",
)


# ----------------------------------------------------------------------------------------------- hashing


def hash_params(section: Mapping[str, Any]) -> str:
    """sha256 of a params section in canonical JSON form."""
    return hashlib.sha256(canonical_json(section).encode()).hexdigest()


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def stable_unit_float(*parts: Any) -> float:
    """A number in [0, 1) that depends only on `parts` (not on PYTHONHASHSEED or the platform)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_int(*parts: Any) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shard_of(track_id: str, n_shards: int) -> int:
    """Shard index of a track: a stable hash, so the DAG is known before any manifest is read."""
    return stable_int("shard", track_id) % n_shards


def shard_name(index: int) -> str:
    return f"{index:05d}"


# ----------------------------------------------------------------------------------------------- atomic writes


@functools.cache
def host_tag() -> str:
    """Six hex digits naming this machine in temporary names: a PID means something only on its own host."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temporary_name(name: str) -> str:
    """`<name>.tmp-<pid>-<host>-<random>`: the writer's PID and host tell a later run whether it still runs."""
    return f"{name}{TMP_MARK}{os.getpid()}-{host_tag()}-{uuid.uuid4().hex[:8]}"


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(temporary_name(path.name))


# What follows TMP_MARK: "<pid>-<host>-<random>", or the older "<pid>-<random>" and "<pid>" (same host assumed).
_TMP_OWNER = re.compile(r"(\d+)(?:-([0-9a-f]{6}))?(?:-[0-9a-f]{4,32})?")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale_temporary(path: str | Path) -> bool:
    """A temporary (see `temporary_name`) whose writer was on this host and no longer runs.

    Temporaries of other hosts (a shared file system on a cluster) are never stale here: their PIDs mean nothing
    on this machine, and their writers may still run.
    """
    name = Path(path).name
    if TMP_MARK not in name:
        return False
    owner = _TMP_OWNER.fullmatch(name.rsplit(TMP_MARK, 1)[1])
    if owner is None or (owner.group(2) is not None and owner.group(2) != host_tag()):
        return False
    return not _pid_alive(int(owner.group(1)))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what killed writers left beside `path`: `<name>.tmp-<pid>-...` whose process no longer runs.

    A `kill -9` (or a node lost on a cluster) skips every `finally`, so the next writer of the same path cleans up;
    a temporary of a writer that is still running is left alone.
    """
    final = Path(path)
    if not final.parent.is_dir():
        return []
    stale = [p for p in final.parent.glob(f"{glob.escape(final.name)}{TMP_MARK}*") if is_stale_temporary(p)]
    for sibling in stale:
        _remove(sibling)
    return stale


def remove_stale_temporaries_in(*folders: str | Path) -> list[Path]:
    """Remove every stale temporary directly inside `folders` (stages call this on their output folders at start,
    so temporaries of killed runs, of any shard, never stay inside a DVC-tracked folder)."""
    removed = []
    for folder in map(Path, folders):
        if folder.is_dir():
            for entry in folder.iterdir():
                if is_stale_temporary(entry):
                    _remove(entry)
                    removed.append(entry)
    if removed:
        log.info("removed %d temporaries left by killed runs: %s", len(removed), ", ".join(map(str, removed[:5])))
    return removed


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Free bytes below which a failed write is put down to a full device: a write that fails for want of space leaves
# less than one file system block or so (measured while the failed temporary still holds what it took).
DISK_FULL_BELOW_BYTES = 1 << 20


def free_bytes(folder: str | Path) -> int:
    """Bytes this process may still write on the device holding `folder` (root may use the reserved blocks)."""
    stats = os.statvfs(folder)
    return (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) * stats.f_frsize


def raise_if_disk_full(exc: BaseException, temporary: Path, final: Path) -> None:
    """Raise OSError(ENOSPC or EDQUOT, ..., `final`) from `exc` if `exc` is a write that failed for want of space.

    Libraries that write through their own C code report a full device in their own words (libsndfile: "System
    error.", torch's zip writer: "file write failed", safetensors: "I/O error: No space left on device (os error
    28)"), so besides an OSError with that errno, an error that says "No space left on device", or any error raised
    while the device holding `temporary` has (next to) no space left counts (safetensors may fail before writing, by
    reserving the file's size). The error then names the output, not the temporary (which is removed next).
    """
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        if exc.filename is not None and not any(TMP_MARK in part for part in Path(exc.filename).parts):
            return  # it already names a path the user knows
        code = exc.errno
    elif os.strerror(errno.ENOSPC) in str(exc):  # the library's own words (safetensors: "... (os error 28)")
        code = errno.ENOSPC
    else:
        try:
            if free_bytes(temporary.parent) >= DISK_FULL_BELOW_BYTES:
                return
        except OSError:
            return
        code = errno.ENOSPC
    raise OSError(code, os.strerror(code), str(final)) from exc


def output_folder(path: str | Path) -> Path:
    """The output a path belongs to, as the user named it: the part before any temporary name (`<name>.tmp-...`),
    and the folder of a file (a name with a suffix, as outputs' files have)."""
    parts = []
    for part in Path(path).parts:
        if TMP_MARK in part:
            parts.append(part.split(TMP_MARK, 1)[0])
            break
        parts.append(part)
    found = Path(*parts) if parts else Path(".")
    return found.parent if found.suffix else found


def disk_full_message(exc: OSError, outputs: list[str]) -> str:
    """One line for a write that failed for want of space: the folder it was writing (the stage's output that holds
    the failed file, else that file's folder, else the stage's first output) and what to do. Every output is written
    under a temporary name and renamed when complete, so what failed left nothing that looks finished, and the same
    command, rerun, finishes the job."""
    where = exc.filename or (outputs[0] if outputs else ".")
    folder = output_folder(os.fsdecode(where))
    for output in map(Path, outputs):
        if folder.absolute() == output.absolute() or folder.absolute().is_relative_to(output.absolute()):
            folder = output
            break
    shown = os.path.relpath(folder) if folder.is_absolute() and folder.is_relative_to(Path.cwd()) else str(folder)
    if exc.errno == errno.EDQUOT:
        return (
            f"disk quota exceeded on the device holding {shown}; free space within your quota and rerun the same "
            "command"
        )
    return f"no space left on the device holding {shown}; free space and rerun the same command"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block finishes."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = _tmp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except Exception as exc:
        raise_if_disk_full(exc, tmp, final)
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; it replaces `path` whole only if the block finishes."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = _tmp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            old = _tmp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except Exception as exc:
        raise_if_disk_full(exc, tmp, final)
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def link_or_copy(source: str | Path, dest: str | Path, *, keep_metadata: bool = False) -> None:
    """Hard-link `source` to `dest` (no second copy of large files on one file system), or copy it where links fail
    (another file system, or one without hard links).

    The copy has the content only (`shutil.copyfile`), or with `keep_metadata` also the permission bits and times
    (`shutil.copy2`), as a hard link would share them."""
    try:
        os.link(source, dest)
    except OSError:
        (shutil.copy2 if keep_metadata else shutil.copyfile)(source, dest)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: list[Mapping[str, Any]]) -> None:
    write_text(path, "".join(canonical_json(row) + "\n" for row in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def is_temporary(path: str | Path) -> bool:
    return TMP_MARK in Path(path).name


# ----------------------------------------------------------------------------------------------- provenance


@functools.cache
def code_version() -> str:
    """Package version plus a hash of the package's source files.

    A content hash rather than a git commit or a date: rerunning a stage with the same code gives byte-identical
    provenance, whatever commit or clone it runs from.
    """
    from ssmttm import __version__

    package_root = Path(__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package_root.rglob("*")):
        if source.suffix in (".py", ".yaml") and "__pycache__" not in source.parts:
            digest.update(source.relative_to(package_root).as_posix().encode())
            digest.update(source.read_bytes())
    return f"{__version__}+src.{digest.hexdigest()[:12]}"


def stage_code_version(stage: str) -> str:
    """Package version plus a hash of the stage's own source files (ssmttm.pipeline.STAGES), else of the package.

    Only the stage's own files: editing an unrelated module must not change the bytes of every artifact (and so of
    every entry of dvc.lock) the next time a stage reruns.
    """
    from ssmttm import __version__
    from ssmttm.pipeline import STAGES, code_digest

    if stage not in STAGES:
        return code_version()
    return f"{__version__}+{stage}.{code_digest(Path(__file__).parent, STAGES[stage].code)[:12]}"


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES + extra:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


HOST_FILE = "host.json"  # the machine that ran a torch stage; .dvcignore'd, so artifacts stay portable


def float_numerics() -> tuple[dict[str, Any], dict[str, Any]]:
    """(how float kernels were chosen, the host's CPU), for the stages whose results depend on them.

    The first part is the same on every machine in portable CPU mode (ssmttm.determinism) and goes into provenance;
    the host's CPU model and ISA flags go into `host.json` beside it, which DVC does not hash.
    """
    from ssmttm.determinism import cpu_description

    cpu = cpu_description()
    host = {key: cpu.pop(key) for key in ("cpu_model", "machine", "isa_flags")}
    return cpu, host


def provenance(
    stage: str,
    section: Mapping[str, Any],
    seed: int | None,
    *,
    cpu_numerics: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance record; `cpu_numerics` is the first part of `float_numerics()` for stages that use torch."""
    record = {
        "stage": stage,
        "params": dict(section),
        "params_sha256": hash_params(section),
        "code_version": stage_code_version(stage),
        "libraries": library_versions(),
        "seed": seed,
        **extra,
    }
    if cpu_numerics is not None:
        record["cpu_numerics"] = dict(cpu_numerics)
    return record


def write_provenance(
    folder: str | Path,
    stage: str,
    section: Mapping[str, Any],
    seed: int | None,
    *,
    cpu_numerics: bool = False,
    **extra: Any,
) -> Path:
    """Write `provenance.json` into an artifact folder and return its path.

    `cpu_numerics`: the stage's float results depend on the CPU's kernels (codec, text_cache, train_lm): record the
    kernel mode in provenance and the host's CPU in `host.json`.
    """
    path = Path(folder) / PROVENANCE_FILE
    numerics, host = float_numerics() if cpu_numerics else (None, None)
    write_json(path, provenance(stage, section, seed, cpu_numerics=numerics, **extra))
    if host is not None:
        write_json(Path(folder) / HOST_FILE, host)
    return path
