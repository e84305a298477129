"""Portable local URLs for manifests.

A manifest must mean the same on every machine, so it never stores an absolute local path:
- `pkg://<module>/<path>`: a file inside an installed Python package (the demo tracks of `immich_memories_music`);
- `file:<relative/path>` (no `//`): a file relative to the repository root (tracks the demo generates).
`resolve_url` turns both into an absolute `file://` URL at fetch time, for yt-dlp. Remote URLs pass unchanged.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from ssmttm.errors import UserFacingError

PACKAGE_SCHEME = "pkg"


def package_url(module: str, relative_path: str | Path) -> str:
    return f"{PACKAGE_SCHEME}://{module}/{Path(relative_path).as_posix()}"


def relative_file_url(relative_path: str | Path) -> str:
    path = Path(relative_path)
    if path.is_absolute():
        raise ValueError(f"{path}: expected a path relative to the repository root")
    return f"file:{quote(path.as_posix())}"  # percent-encoded, like file:// URLs: no spaces in a manifest


def is_local(url: str) -> bool:
    """True for URLs that read the local disk (file://, relative file:, pkg://)."""
    return urlparse(url).scheme.lower() in ("file", PACKAGE_SCHEME)


def resolve_url(url: str, root: str | Path = ".") -> str:
    """Absolute URL for a downloader: pkg:// and relative file: become file:// URLs; others are unchanged."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == PACKAGE_SCHEME:
        spec = importlib.util.find_spec(parsed.netloc)
        if spec is None or not spec.submodule_search_locations:
            raise UserFacingError(f"{url}: Python package '{parsed.netloc}' is not installed (pip install it)")
        base = Path(next(iter(spec.submodule_search_locations)))
        return (base / parsed.path.lstrip("/")).resolve().as_uri()
    if scheme == "file" and not url.startswith("file://"):
        return (Path(root) / unquote(url[len("file:") :])).resolve().as_uri()
    return url


def local_path(url: str, root: str | Path = ".") -> Path:
    """The file a local URL (file://, file:, pkg://) names."""
    return Path(unquote(urlparse(resolve_url(url, root)).path))
