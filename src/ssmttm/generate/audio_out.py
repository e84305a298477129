"""Writing generated clips: checks, WAV files and the per-folder manifest that makes a run resumable.

Every clip goes through `write_clip`, which checks the audio before and after writing it:
- exactly the requested length (a decoder that returns fewer samples fails the clip; extra samples are cropped);
- finite (no NaN or infinity);
- not clipped: a clip whose peak exceeds 1 is scaled down to peak 1 and the gain is recorded; no clipped file is
  ever written;
- not silent: RMS above SILENCE_DB;
and the written file is read back: sample rate, length and level as asked. A clip failing a check has no WAV; its
manifest row says `failed` with the reason.

`ClipFolder` is one output folder: `<caption_id>.wav` files and `manifest.jsonl`, one row per clip sorted by caption
id (path relative to the folder, sha256, caption, caption id, seed, checkpoint step, variant, settings, length,
level, gain, and `key`: the hash of everything the clip is a function of). The manifest is rewritten atomically
after each batch, so after a kill a rerun finds every clip recorded with the current key and a file of the recorded
sha256 (or recorded as failed) and regenerates only the others.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ssmttm.artifacts import TMP_MARK, read_jsonl, remove_stale_temporaries, sha256_file, write_jsonl
from ssmttm.audio import rms_db, write_wav

MANIFEST_FILE = "manifest.jsonl"
SILENCE_DB = -60.0  # a clip at or below this RMS level (dBFS) counts as silent
WAV_SUFFIX = ".wav"


def level(samples: np.ndarray) -> dict[str, float | None]:
    """Peak (linear) and RMS (dBFS, None for digital silence) of (N,) audio, rounded for the manifest."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    rms = rms_db(samples)
    return {"peak": round(peak, 6), "rms_db": round(rms, 3) if math.isfinite(rms) else None}


def check_audio(samples: np.ndarray, n_samples: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(N,) float audio -> (the audio to write, cropped and scaled, or None; the check's manifest fields)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if samples.shape[0] < n_samples:
        return None, failed(f"short: {samples.shape[0]} samples, {n_samples} asked")
    samples = samples[:n_samples]
    if not np.isfinite(samples).all():
        return None, failed("not_finite: NaN or infinite samples")
    peak = float(np.max(np.abs(samples)))
    gain = 1.0 if peak <= 1.0 else 1.0 / peak
    samples = samples * np.float32(gain) if gain != 1.0 else samples
    loudness = rms_db(samples)
    if loudness <= SILENCE_DB:
        return None, failed(f"silent: RMS {loudness:.1f} dBFS <= {SILENCE_DB:.0f}")
    return samples, {"status": "ok", "gain": round(gain, 9)}


def failed(reason: str) -> dict[str, Any]:
    return {"status": "failed", "reason": reason}


def write_clip(path: str | Path, samples: np.ndarray, sample_rate: int, n_samples: int) -> dict[str, Any]:
    """Check, write `path` (16-bit WAV, atomically) and check it again; returns the clip's manifest fields."""
    path = Path(path)
    audio, fields = check_audio(samples, n_samples)
    if audio is None:
        path.unlink(missing_ok=True)  # a file of an earlier run must not stand for a failed clip
        return fields
    write_wav(path, audio, sample_rate)
    written, rate = sf.read(str(path), dtype="float32")
    problems = []
    if rate != sample_rate or written.shape[0] != n_samples:
        problems.append(f"written file is {written.shape[0]} samples at {rate} Hz, {n_samples} at {sample_rate} asked")
    if rms_db(written) <= SILENCE_DB:
        problems.append(f"silent once written as 16-bit (RMS <= {SILENCE_DB:.0f} dBFS)")
    if problems:
        path.unlink()
        return failed("; ".join(problems))
    return {**fields, "path": path.name, "sha256": sha256_file(path), **level(written)}


class ClipFolder:
    """An output folder of clips and its manifest.jsonl; rows are keyed by caption id."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        manifest = self.folder / MANIFEST_FILE
        self.rows: dict[str, dict[str, Any]] = {}
        if manifest.is_file():
            try:
                self.rows = {row["caption_id"]: row for row in read_jsonl(manifest)}
            except (ValueError, KeyError):  # unreadable manifest: nothing is trusted, everything is regenerated
                self.rows = {}

    def wav_path(self, caption_id: str) -> Path:
        return self.folder / f"{caption_id}{WAV_SUFFIX}"

    def done(self, caption_id: str, key: str) -> bool:
        """Recorded with this key: failed, or ok with its file present and unchanged."""
        row = self.rows.get(caption_id)
        if row is None or row.get("key") != key:
            return False
        if row["status"] == "failed":
            return True
        path = self.folder / row["path"]
        return path.is_file() and sha256_file(path) == row["sha256"]

    def record(self, row: dict[str, Any]) -> None:
        self.rows[row["caption_id"]] = row

    def flush(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_jsonl(self.folder / MANIFEST_FILE, [self.rows[k] for k in sorted(self.rows)])

    def prune(self, keep: set[str]) -> None:
        """Forget rows and delete WAVs of captions not in `keep`, and the temporaries of killed writers."""
        self.rows = {k: v for k, v in self.rows.items() if k in keep}
        if not self.folder.is_dir():
            return
        for child in sorted(self.folder.iterdir()):
            if TMP_MARK in child.name:
                remove_stale_temporaries(child.with_name(child.name.split(TMP_MARK)[0]))
            elif child.suffix == WAV_SUFFIX and child.name[: -len(WAV_SUFFIX)] not in keep:
                os.unlink(child)

    def counts(self) -> dict[str, int]:
        statuses = [row["status"] for row in self.rows.values()]
        return {"ok": statuses.count("ok"), "failed": statuses.count("failed")}
