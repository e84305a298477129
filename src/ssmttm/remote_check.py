"""`ssmttm remote-check`: read back every object of a run from a DVC remote and verify its md5 and size.

Why: `dvc push` skips an object that exists on the remote whatever its size, and once a directory's `.dir` manifest is
there it takes the directory's files as present, so an interrupted push can leave truncated or missing objects that
`dvc status -c` calls in sync. A pull then fails (remote `verify = true`) or places bad bytes (DVC's default). This
check streams each object of `dvc.lock` (the `.dir` manifests and every file they list) through DVC's own remote
filesystem, so it works for every remote kind DVC can reach (local, s3, ssh, gs ...).

Repair: `--delete-bad` deletes the bad objects and the `.dir` manifests of the directories that hold a bad or missing
file (otherwise `dvc push` would skip those files again); a `dvc push` from a clone whose cache holds good copies then
uploads them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ssmttm.errors import UserFacingError

READ_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class ExpectedObject:
    """One content-addressed object a remote must hold, and the artifact paths that use it."""

    md5: str  # DVC 3 md5 of the object's bytes; a directory manifest ends with ".dir"
    size: int | None  # bytes, when the lock or the manifest records it
    artifacts: tuple[str, ...]  # workspace paths that are this object, e.g. data/tokenize/shard-000.parquet


@dataclass(frozen=True)
class ObjectCheck:
    obj: ExpectedObject
    status: str  # "good", "bad" or "missing"
    detail: str = ""


@dataclass
class CheckReport:
    remote_name: str
    remote_url: str
    checks: list[ObjectCheck] = field(default_factory=list)
    skipped_legacy: list[str] = field(default_factory=list)  # DVC 2 (md5-dos2unix) outputs, not checked
    deleted: list[str] = field(default_factory=list)  # remote object paths removed by --delete-bad

    @property
    def problems(self) -> list[ObjectCheck]:
        return [check for check in self.checks if check.status != "good"]


@dataclass(frozen=True)
class LockedOutput:
    path: str  # artifact path relative to the repository root
    md5: str
    size: int | None


def uncached_outputs(dvc_yaml: Path) -> set[str]:
    """Outputs declared `cache: false` in dvc.yaml: DVC never pushes them, so the remote need not hold them."""
    if not dvc_yaml.is_file():
        return set()
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}) or {}
    uncached = set()
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []) or []:
                if isinstance(entry, dict):
                    for path, options in entry.items():
                        if isinstance(options, dict) and options.get("cache") is False:
                            uncached.add(path)
    return uncached


def locked_outputs(lock_path: Path) -> tuple[list[LockedOutput], list[str]]:
    """Every cached output of every stage in a dvc.lock: (DVC 3 md5 outputs, DVC 2 outputs that this cannot check)."""
    if not lock_path.is_file():
        raise UserFacingError(f"{lock_path}: no such lock file; run the pipeline (make demo) or pass --lock")
    lock = yaml.safe_load(lock_path.read_text()) or {}
    uncached = uncached_outputs(lock_path.with_name("dvc.yaml"))
    outputs, legacy = [], []
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs", []) or []:
            if out["path"] in uncached or "md5" not in out:
                continue
            if out.get("hash") != "md5":  # DVC 2 entries hash text files after dos2unix and live elsewhere
                legacy.append(out["path"])
                continue
            outputs.append(LockedOutput(out["path"], out["md5"], out.get("size")))
    return outputs, legacy


def _md5_and_size(chunks: Iterator[bytes]) -> tuple[str, int]:
    digest, size = hashlib.md5(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _read_chunks(fs, path: str) -> Iterator[bytes]:
    with fs.open(path, mode="rb") as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            yield chunk


class RemoteObjects:
    """A DVC remote's object store and the local cache, both addressed by md5 (DVC's own filesystem objects)."""

    def __init__(self, repo_root: Path, remote_name: str | None):
        from dvc.config import NoRemoteError
        from dvc.repo import Repo

        self.repo = Repo(str(repo_root))
        try:
            self.remote = self.repo.cloud.get_remote(remote_name, "remote-check")
        except NoRemoteError as exc:
            raise UserFacingError(f"{repo_root}: no DVC remote to check ({exc}); pass --remote NAME") from exc
        except Exception as exc:  # unknown name, missing plugin (dvc-s3 ...): DVC's message says which
            raise UserFacingError(f"remote '{remote_name or 'default'}': {exc}") from exc
        self.name = self.remote.name
        self.url = self.repo.config["remote"][self.name].get("url", self.remote.path)

    def path(self, md5: str) -> str:
        return self.remote.odb.oid_to_path(md5)

    def check(self, obj: ExpectedObject) -> ObjectCheck:
        """Stream one object and compare its md5 (and size, where known) with what the lock expects."""
        try:
            actual_md5, actual_size = _md5_and_size(_read_chunks(self.remote.fs, self.path(obj.md5)))
        except FileNotFoundError:
            return ObjectCheck(obj, "missing", f"no object {self.path(obj.md5)}")
        expected_md5 = obj.md5.removesuffix(".dir")
        if obj.size is not None and actual_size != obj.size:
            return ObjectCheck(obj, "bad", f"{actual_size} bytes, expected {obj.size} (truncated or replaced)")
        if actual_md5 != expected_md5:
            return ObjectCheck(obj, "bad", f"md5 {actual_md5}, expected {expected_md5} ({actual_size} bytes)")
        return ObjectCheck(obj, "good")

    def read_manifest(self, dir_md5: str) -> list[dict] | None:
        """A directory's manifest ([{"md5", "relpath"}...]): the remote's copy if intact, else the local cache's."""
        sources = [(self.remote.fs, self.path(dir_md5))]
        local = self.repo.cache.local
        sources.append((local.fs, local.oid_to_path(dir_md5)))
        for fs, path in sources:
            try:
                data = b"".join(_read_chunks(fs, path))
            except (FileNotFoundError, OSError):
                continue
            if hashlib.md5(data).hexdigest() == dir_md5.removesuffix(".dir"):
                return json.loads(data)
        return None

    def local_size(self, md5: str) -> int | None:
        """The size of the local cache's copy, where this clone has one (a manifest's entries record no size)."""
        try:
            return Path(self.repo.cache.local.oid_to_path(md5)).stat().st_size
        except OSError:
            return None

    def delete(self, md5: str) -> str:
        path = self.path(md5)
        self.remote.fs.rm(path)
        return path


def expected_objects(outputs: list[LockedOutput], store: RemoteObjects) -> tuple[list[ExpectedObject], dict]:
    """The objects the remote must hold, deduplicated by md5, and {file md5: {dir md5 of each directory holding it}}.

    A directory whose manifest is unreadable everywhere contributes only its manifest (reported bad or missing)."""
    artifacts: dict[str, list[str]] = {}
    sizes: dict[str, int | None] = {}
    containing_dirs: dict[str, set[str]] = {}
    for out in outputs:
        artifacts.setdefault(out.md5, []).append(out.path)
        sizes[out.md5] = out.size if not out.md5.endswith(".dir") else None  # a .dir's lock size is its files' sum
        if out.md5.endswith(".dir"):
            for entry in store.read_manifest(out.md5) or []:
                artifacts.setdefault(entry["md5"], []).append(f"{out.path}/{entry['relpath']}")
                sizes.setdefault(entry["md5"], store.local_size(entry["md5"]))
                containing_dirs.setdefault(entry["md5"], set()).add(out.md5)
    objects = [ExpectedObject(md5, sizes[md5], tuple(paths)) for md5, paths in artifacts.items()]
    return objects, containing_dirs


def check_remote(
    repo_root: Path, lock_path: Path, remote_name: str | None = None, jobs: int = 4, delete_bad: bool = False
) -> CheckReport:
    """Verify every object of `lock_path` on a DVC remote; with `delete_bad`, delete what `dvc push` must resend."""
    from tqdm import tqdm

    outputs, legacy = locked_outputs(lock_path)
    store = RemoteObjects(repo_root, remote_name)
    objects, containing_dirs = expected_objects(outputs, store)
    report = CheckReport(store.name, store.url, skipped_legacy=legacy)
    progress = tqdm(total=len(objects), desc=f"remote-check {store.name}", unit="obj", file=sys.stderr)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for check in pool.map(store.check, objects):
            report.checks.append(check)
            progress.update(1)
    progress.close()
    if delete_bad:
        to_delete = {check.obj.md5 for check in report.problems if check.status == "bad"}
        # push takes a directory as complete once its manifest is on the remote: drop the manifests to resend files.
        for check in report.problems:
            to_delete |= containing_dirs.get(check.obj.md5, set())
        for md5 in sorted(to_delete):
            try:
                report.deleted.append(store.delete(md5))
            except FileNotFoundError:
                pass
    return report


def format_report(report: CheckReport) -> list[str]:
    lines = []
    for check in sorted(report.problems, key=lambda c: c.obj.artifacts):
        for artifact in check.obj.artifacts:
            lines.append(f"{check.status.upper()} {artifact}: {check.detail}")
    for path in report.skipped_legacy:
        lines.append(f"NOT CHECKED {path}: a DVC 2 (md5-dos2unix) entry; `dvc commit -f` rewrites it as DVC 3")
    bad = sum(c.status == "bad" for c in report.checks)
    missing = sum(c.status == "missing" for c in report.checks)
    lines.append(
        f"remote '{report.remote_name}' ({report.remote_url}): {len(report.checks)} objects checked, "
        f"{len(report.checks) - bad - missing} good, {bad} bad, {missing} missing"
    )
    if report.deleted:
        lines.append(
            f"deleted {len(report.deleted)} objects (the bad ones and the manifests of their directories); now run "
            f"`dvc push -r {report.remote_name}` from a clone whose cache holds these files"
        )
    elif report.problems:
        lines.append(
            f"repair: `ssmttm remote-check --remote {report.remote_name} --delete-bad`, then `dvc push -r "
            f"{report.remote_name}` from a clone whose cache holds these files (`dvc push` alone skips them)"
        )
    return lines


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", default=None, help="DVC remote name (default: the repository's default remote)")
    parser.add_argument("--lock", default="dvc.lock", help="lock file whose outputs to check (default: dvc.lock)")
    parser.add_argument("--jobs", type=int, default=4, help="objects read at the same time (default: 4)")
    parser.add_argument(
        "--delete-bad",
        action="store_true",
        help="delete bad objects and their directories' manifests from the remote, so that `dvc push` resends them",
    )


def run_from_args(args: argparse.Namespace) -> int:
    lock_path = Path(args.lock).resolve()
    report = check_remote(lock_path.parent, lock_path, args.remote, jobs=args.jobs, delete_bad=args.delete_bad)
    for line in format_report(report):
        print(line)
    return 1 if report.problems or report.skipped_legacy else 0
