"""Manifest URLs are portable: no absolute local path, resolved to file:// only at fetch time."""

from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from ssmttm.corpus.urls import is_local, package_url, relative_file_url, resolve_url
from ssmttm.errors import UserFacingError


def _path(url: str) -> Path:
    return Path(url2pathname(urlparse(url).path))


def test_package_url_resolves_inside_the_installed_package():
    import immich_memories_music

    url = package_url("immich_memories_music", "tracks/calm/calm_acoustic_1.opus")
    assert url == "pkg://immich_memories_music/tracks/calm/calm_acoustic_1.opus"
    resolved = resolve_url(url)
    assert resolved.startswith("file:///")
    assert _path(resolved) == Path(immich_memories_music.tracks_dir()).resolve() / "calm/calm_acoustic_1.opus"


def test_relative_file_url_resolves_against_root(tmp_path):
    url = relative_file_url("data/manifest/local/x.flac")
    assert url == "file:data/manifest/local/x.flac" and is_local(url)
    assert _path(resolve_url(url, root=tmp_path)) == tmp_path.resolve() / "data/manifest/local/x.flac"
    with pytest.raises(ValueError):
        relative_file_url(tmp_path / "x.flac")


def test_remote_and_absolute_urls_unchanged():
    for url in ("https://example.org/a.mp3", "file:///tmp/a.wav"):
        assert resolve_url(url) == url
    assert not is_local("https://example.org/a.mp3") and is_local("file:///tmp/a.wav")


def test_missing_package_is_a_clear_error():
    with pytest.raises(UserFacingError, match="not installed"):
        resolve_url("pkg://no_such_package_xyz/a.opus")
