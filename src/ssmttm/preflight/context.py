"""The profile being checked, read tolerantly: every check asks `Context` for settings with defaults, so a profile
written for a newer version of the pipeline (a key this module does not know yet) is still checked, not refused.

Relative paths in a profile are relative to the project root (where Snakemake and DVC run), not to the current
directory, so `ssmttm preflight --root /path/to/repo` checks the same files the workflow will read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from ssmttm.errors import UserFacingError

T = TypeVar("T")

# Widths of the text encoders the profiles name (their config's d_model / hidden_size), so parameter counts do not
# need the encoder on disk. Others are read from their config.json when it is local.
TEXT_WIDTHS = {"minilm": 384, "google/flan-t5-base": 768, "google/flan-t5-large": 1024, "google-t5/t5-base": 768}
DEFAULT_TEXT_WIDTH = 768  # flan-t5-base, the paper's encoder (models.lm.param_count assumes the same)


@dataclasses.dataclass
class Context:
    params: Mapping[str, Any]
    root: Path

    def get(self, dotted: str, default: Any = None) -> Any:
        """params["a"]["b"] for "a.b"; `default` where any level is missing or null."""
        value: Any = self.params
        for part in dotted.split("."):
            if not isinstance(value, Mapping) or value.get(part) is None:
                return default
            value = value[part]
        return value

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.get(name, {}) or {})

    def path(self, value: str | Path) -> Path:
        """A path from the profile: `~` expanded, relative ones taken from the project root."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    @cached_property
    def corpus_rows(self) -> list[dict[str, Any]] | UserFacingError | None:
        """Manifest rows of a local corpus source (demo, manifest, musiccaps), the error reading them, or None for
        a source whose rows come from the network (mtg_jamendo)."""
        source = self.get("corpus.source", "demo")
        try:
            if source == "demo":
                from ssmttm.corpus.demo_corpus import demo_rows

                return demo_rows()
            if source == "manifest":
                from ssmttm.corpus.user_manifest import user_manifest_rows

                path = self.get("corpus.manifest_path")
                return user_manifest_rows(str(self.path(path)) if path else None)
            if source == "musiccaps":
                from ssmttm.corpus.manifest import MusicCapsConfig, musiccaps_rows

                cfg = tolerant_dataclass(MusicCapsConfig, self.section("corpus").get("musiccaps"))
                return musiccaps_rows(dataclasses.replace(cfg, csv_path=str(self.path(cfg.csv_path))))
        except UserFacingError as exc:
            return exc
        return None


def tolerant_dataclass(cls: type[T], section: Mapping[str, Any] | None) -> T:
    """`cls` from the keys of `section` it knows (flat; nested sections stay dicts). Keys added to a profile by a newer
    version are left out instead of refused: preflight reports on what it understands."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in (section or {}).items() if k in names})
