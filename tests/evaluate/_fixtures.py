"""Synthetic clips with a known tempo and key, and clip folders with manifests like `ssmttm generate` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

RATE = 16000
PITCH = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "A": 9, "A#": 10, "B": 11}


def clicks(bpm: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """(N,) decaying 1 kHz clicks at `bpm`."""
    out = np.zeros(int(seconds * rate))
    t = np.arange(int(0.03 * rate)) / rate
    burst = np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 150)
    for k in range(int(seconds * bpm / 60) + 1):
        start = int(k * 60 / bpm * rate)
        if start + burst.size < out.size:
            out[start : start + burst.size] += burst
    return 0.5 * out


def chord(tonic: str, mode: str, seconds: float, rate: int = RATE) -> np.ndarray:
    """(N,) the tonic triad (tonic and octave loudest) over the quiet scale of the key."""
    t = np.arange(int(seconds * rate)) / rate
    root = 261.63 * 2 ** (PITCH[tonic] / 12)
    third = 4 if mode == "major" else 3
    scale = (0, 2, 4, 5, 7, 9, 11) if mode == "major" else (0, 2, 3, 5, 7, 8, 10)
    x = sum((1.0 if iv in (0, 12) else 0.6) * np.sin(2 * np.pi * root * 2 ** (iv / 12) * t) for iv in (0, third, 7, 12))
    x = x + sum(0.2 * np.sin(2 * np.pi * root * 2 ** (iv / 12) * t) for iv in scale)
    return 0.1 * x / np.max(np.abs(x))


def music(bpm: float, tonic: str, mode: str, seconds: float, rate: int = RATE) -> np.ndarray:
    """A clip asking for nothing but its tempo and key: clicks over a chord."""
    return (chord(tonic, mode, seconds, rate) + clicks(bpm, seconds, rate) * 0.5).astype(np.float32)


CAPTIONS = [  # (caption id, bpm, tonic, mode)
    ("c00", 70, "C", "major"),
    ("c01", 96, "D", "major"),
    ("c02", 120, "A", "minor"),
    ("c03", 150, "F#", "minor"),
    ("c04", 84, "A#", "major"),
    ("c05", 110, "E", "minor"),
    ("c06", 130, "G", "major"),
    ("c07", 76, "B", "minor"),
    ("c08", 100, "F", "major"),
    ("c09", 140, "C#", "minor"),
    ("c10", 90, "D#", "major"),
    ("c11", 124, "G#", "minor"),
]


def caption_text(bpm: float, tonic: str, mode: str) -> str:
    return f"A calm piece at {bpm} BPM in {tonic.replace('A#', 'Bb').replace('D#', 'Eb')} {mode}."


def write_folder(folder: Path, clips: list[tuple[dict[str, Any], np.ndarray | None]], rate: int = RATE) -> Path:
    """Write WAVs and manifest.jsonl: each (row, audio); audio None writes a failed row."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for row, audio in clips:
        if audio is None:
            rows.append({**row, "path": None, "status": "failed", "reason": "decoder produced NaN"})
            continue
        name = f"{row['caption_id']}-{row.get('seed', 0)}.wav"
        sf.write(str(folder / name), np.asarray(audio).T, rate, subtype="PCM_16")
        rows.append({**row, "path": name, "status": "ok"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
