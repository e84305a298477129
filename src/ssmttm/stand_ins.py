"""Stand-in weights: detect the STANDIN.txt label beside loaded weights and carry it into every derived output.

scripts/standins/ writes tiny random models in the release formats of the real ones (for plumbing tests) and puts a
STANDIN.txt in each model's folder. A stage that loads weights asks `label_beside` (a file or folder) or `hf_label`
(a Hugging Face repo id or local folder) for that label; a stage that reads other stages' artifacts takes their labels
with `inherited`. Both go into provenance through `provenance_fields`:

    "stand_in": true, "stand_ins": {"<what was loaded>": "<STANDIN.txt text>", ...}

Absent keys mean no stand-in was seen: the provenance of a run on real weights is unchanged by this module.
Shared like ssmttm.artifacts (not a stage's own code): editing it reruns nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

STANDIN_FILE = "STANDIN.txt"
NOT_A_RESULT = "computed with stand-in weights: not a result"
PROVENANCE_FILE = "provenance.json"  # ssmttm.artifacts.PROVENANCE_FILE (not imported: artifacts must not need us)
KEY = "stand_ins"  # component -> label text, in provenance.json (and in a token folder's _manifest.json)
FLAG = "stand_in"


def label_beside(weights: str | Path | None) -> str | None:
    """The STANDIN.txt text in `weights` (a folder) or beside it (a file), or None when there is none."""
    if weights is None:
        return None
    path = Path(weights)
    label = (path if path.is_dir() else path.parent) / STANDIN_FILE
    return label.read_text(encoding="utf-8").strip() if label.is_file() else None


def hf_label(name_or_path: str | Path) -> str | None:
    """The stand-in label of what `from_pretrained(name_or_path, local_files_only=True)` loads: a local folder, or a
    repo id's snapshot in the Hugging Face cache (HF_HUB_CACHE, revision main)."""
    local = Path(name_or_path)
    if local.exists():
        return label_beside(local)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings it
        return None
    try:
        found = try_to_load_from_cache(str(name_or_path), STANDIN_FILE)
    except ValueError:  # not a valid repo id
        return None
    return Path(found).read_text(encoding="utf-8").strip() if isinstance(found, str) else None


def of_artifact(folder: str | Path) -> dict[str, str]:
    """The stand-ins an artifact folder (or file) records: its provenance.json, else the nearest one above it (a
    generated set inside a run folder), else a token folder's _manifest.json."""
    path = Path(folder)
    start = path if path.is_dir() else path.parent
    for candidate in (start, *list(start.parents)[:3]):
        for name in (PROVENANCE_FILE, "_manifest.json"):
            record = candidate / name
            if record.is_file():
                try:
                    data = json.loads(record.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    return {}
                return dict(data.get(KEY) or {}) if isinstance(data, dict) else {}
    return {}


def inherited(folders: Iterable[str | Path | None]) -> dict[str, str]:
    """The union of the stand-ins recorded by the artifacts a stage reads (missing folders are skipped)."""
    merged: dict[str, str] = {}
    for folder in folders:
        if folder is not None and Path(folder).exists():
            merged.update(of_artifact(folder))
    return dict(sorted(merged.items()))


def provenance_fields(*parts: Mapping[str, str | None]) -> dict[str, object]:
    """{"stand_in": True, "stand_ins": {...}} from component -> label maps (None labels dropped); {} when none."""
    merged = {name: label for part in parts for name, label in part.items() if label}
    if not merged:
        return {}
    return {FLAG: True, KEY: dict(sorted(merged.items()))}


def card_fields(*parts: Mapping[str, str | None]) -> dict[str, object]:
    """The same, with the sentence a metric card shows, for outputs that hold numbers."""
    fields = provenance_fields(*parts)
    return {**fields, "note": NOT_A_RESULT} if fields else {}
