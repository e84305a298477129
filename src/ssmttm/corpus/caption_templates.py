"""Deterministic captions from a clip's tags: several phrasings, one picked by a seeded stable hash of the clip id.

Tags (docs/ARTIFACTS.md, manifest): any of `mood`, `genre`, `style`, `instruments`, `bpm`, `key` (plus `title`,
`artist`, which say nothing about the sound and are not used). Each may be missing, empty, a string or a list
(MTG-Jamendo gives several genres and moods, sometimes as `genre---rock`). Every template renders any subset of
them as a grammatical sentence, so no caption ever contains "None" or dangling words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ssmttm.artifacts import stable_int

NOUNS = ("piece", "track", "tune", "composition", "piece of music", "recording")
MAX_WORDS = {"mood": 3, "genre": 3, "instruments": 4}
_KEY = re.compile(r"^([A-Ga-g])\s*([#b♯♭]?)\s*(major|minor|maj|min|m|M)?$")


@dataclass(frozen=True)
class TagParts:
    """Tags cleaned into words ready to render."""

    moods: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()  # genre and style tags, deduplicated
    instruments: tuple[str, ...] = ()
    bpm: int | None = None
    key: str | None = None


def _words(value: Any, limit: int) -> tuple[str, ...]:
    """A tag value (str, list, None) -> cleaned, lower-case, deduplicated words, at most `limit`."""
    items = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):  # None, booleans and bare numbers describe nothing
            continue
        for part in re.split(r"[,;]", str(item)):  # 'rock, pop' is two words
            text = part.rsplit("---", 1)[-1]  # MTG-Jamendo style 'mood/theme---calm'
            text = " ".join(text.replace("_", " ").split()).strip(" .:-").lower()
            if _meaningful(text) and text not in out:
                out.append(text)
    return tuple(out[:limit])


def _meaningful(text: str) -> bool:
    """Words worth saying: some letters, and not a placeholder for a missing value."""
    return bool(re.search(r"[^\W\d_]", text)) and text.lower() not in (
        "none",
        "null",
        "nan",
        "inf",
        "-inf",
        "true",
        "false",
        "unknown",
        "n/a",
    )


def _bpm(value: Any) -> int | None:
    try:
        bpm = float(value)
    except (TypeError, ValueError):
        return None
    return round(bpm) if math.isfinite(bpm) and 20 <= bpm <= 400 else None


def _key(value: Any) -> str | None:
    """'C major', 'Am', 'F#min', 'Bb' -> 'C major', 'A minor', 'F# minor', 'Bb major'; other text as given."""
    if isinstance(value, list | tuple):  # several keys given: the first real one
        value = next((v for v in value if isinstance(v, str) and _meaningful(v)), None)
    if not isinstance(value, str):
        return None
    text = " ".join(str(value).split()).strip(" .,;:-")
    if not _meaningful(text):
        return None
    match = _KEY.match(text)
    if not match:
        return text
    note, accidental, mode = match.groups()
    accidental = {"♯": "#", "♭": "b"}.get(accidental, accidental)
    minor = mode in ("minor", "min", "m")
    return f"{note.upper()}{accidental} {'minor' if minor else 'major'}"


def parse_tags(tags: Mapping[str, Any] | None) -> TagParts:
    tags = tags or {}
    genres = _words(list(_words(tags.get("genre"), 9)) + list(_words(tags.get("style"), 9)), MAX_WORDS["genre"])
    return TagParts(
        moods=_words(tags.get("mood"), MAX_WORDS["mood"]),
        genres=genres,
        instruments=_words(tags.get("instruments", tags.get("instrument")), MAX_WORDS["instruments"]),
        bpm=_bpm(tags.get("bpm")),
        key=_key(tags.get("key")),
    )


# ----------------------------------------------------------------------------------------------- phrasing helpers


def join(words: tuple[str, ...] | list[str]) -> str:
    """('a',) -> 'a'; ('a', 'b') -> 'a and b'; ('a', 'b', 'c') -> 'a, b and c'."""
    words = list(words)
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"


def article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def _sentence(text: str) -> str:
    text = " ".join(text.split()).replace(" ,", ",").replace(" .", ".")
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _descriptor(parts: TagParts) -> str:
    """'calm acoustic', 'calm', 'acoustic' or ''."""
    return " ".join(p for p in (join(parts.moods), join(parts.genres)) if p)


# ----------------------------------------------------------------------------------------------- templates
# Each template takes (parts, noun) and renders whatever is present. Keep at least five.


def _t_plain(p: TagParts, noun: str) -> str:
    text = with_article(f"{_descriptor(p)} {noun}".strip())
    if p.instruments:
        text += f" featuring {join(p.instruments)}"
    if p.bpm:
        text += f" at {p.bpm} BPM"
    if p.key:
        text += f" in {p.key}"
    return text


def _t_mood_clause(p: TagParts, noun: str) -> str:
    text = with_article(f"{join(p.genres)} {noun}".strip())
    if p.moods:
        text += f" with {with_article(join(p.moods))} mood"
    if p.instruments:
        text += f", played on {join(p.instruments)}"
    if p.bpm:
        text += f", around {p.bpm} BPM"
    if p.key:
        text += f", in {p.key}"
    return text


def _t_fields(p: TagParts, noun: str) -> str:
    head = _descriptor(p)
    text = f"{head} {noun}." if head else f"{with_article(noun)}."
    if p.instruments:
        text += f" Instruments: {', '.join(p.instruments)}."
    if p.bpm:
        text += f" Tempo: {p.bpm} BPM."
    if p.key:
        text += f" Key: {p.key}."
    return text


def _t_this(p: TagParts, noun: str) -> str:
    subject = f"{_descriptor(p)} {noun}".strip()
    clauses = []
    if p.instruments:
        clauses.append(f"is built around {join(p.instruments)}")
    if p.bpm:
        clauses.append(f"moves at {p.bpm} BPM")
    if p.key:
        clauses.append(f"is written in {p.key}")
    if not clauses:
        return f"This is {with_article(subject)}"
    return f"This {subject} {join(clauses)}"


def _t_featuring(p: TagParts, noun: str) -> str:
    if not p.instruments:
        return _t_style(p, noun)
    text = f"Featuring {join(p.instruments)}: {with_article(f'{_descriptor(p)} {noun}'.strip())}"
    if p.bpm:
        text += f" at {p.bpm} BPM"
    if p.key:
        text += f" in {p.key}"
    return text


def _t_style(p: TagParts, noun: str) -> str:
    text = with_article(noun)
    if _descriptor(p):
        text += f" in {with_article(_descriptor(p))} style"
    if p.instruments:
        text += f" with {join(p.instruments)}"
    if p.bpm:
        text += f", {p.bpm} BPM"
    if p.key:
        text += f", {p.key}"
    return text


TEMPLATES: tuple[Callable[[TagParts, str], str], ...] = (
    _t_plain,
    _t_mood_clause,
    _t_fields,
    _t_this,
    _t_featuring,
    _t_style,
)


def tag_caption(tags: Mapping[str, Any] | None, clip_id: str, seed: int = 0) -> str:
    """The tag caption of one clip: same (tags, clip_id, seed) -> same text, on any machine."""
    parts = parse_tags(tags)
    template = TEMPLATES[stable_int(seed, clip_id) % len(TEMPLATES)]
    noun = NOUNS[stable_int(seed, clip_id, "noun") % len(NOUNS)]
    return _sentence(template(parts, noun))
