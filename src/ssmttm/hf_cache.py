"""Local model folders: a Hugging Face repo's snapshot in the local cache (never downloaded), and what a model
folder lacks. Shared by preflight's weight checks and the stages that load transformers models (the MusicGen baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def hf_cached_model(repo: str) -> Path | None:
    """The local snapshot folder of Hugging Face repo `repo`, or None when it is not cached. Never downloads."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError, a malformed id (HFValidationError), ...
        return None


def missing_model_files(folder: Path) -> list[str]:
    """What a model folder lacks: config.json, the shards its index lists, or any weights file at all."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    for index_name in INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            return missing + [s for s in shards if not (folder / s).is_file()]
    if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.rglob("*") if p.is_file()):
        missing.append("a weights file (*.safetensors, *.bin)")
    return missing
