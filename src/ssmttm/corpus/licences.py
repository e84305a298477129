"""Licence normalisation: many spellings of a licence -> one id such as `CC-BY-NC-SA-3.0`, `CC0-1.0` or `MIT`.

Licences reach the pipeline as Creative Commons URLs (MTG-Jamendo, ID3 WCOP frames), SPDX-like ids, or prose
("Attribution-NonCommercial-ShareAlike 3.0", "CC BY-SA 4.0"). `normalise_licence` maps each to one id, or to None
when it cannot be sure. None means "unknown", and the select stage rejects unknown licences, so the parser is strict
on purpose: a word it does not understand, a missing version, an impossible combination (ND with SA) or two
different licences in one string all give None rather than a guess.

Ids: `CC-BY[-NC][-ND|-SA]-<version>` (elements in that canonical order, version as `N.N`), `CC0-1.0`,
`PUBLIC-DOMAIN` (the Public Domain Mark), `MIT`, and `PRIVATE`: audio the user has the right to train on without a
public licence (their own recordings), spelled exactly so; select keeps it only when `select.allowed_licences` lists
it, which no profile does by default. Jurisdiction ports (`by-nc-sa/2.5/it/`) keep their licence id:
the port changes the legal wording, not the permissions.
"""

from __future__ import annotations

import re

# The opt-in token of a private corpus (see the module docstring).
PRIVATE = "PRIVATE"
# Versions Creative Commons has published for the BY family.
CC_VERSIONS = ("1.0", "2.0", "2.1", "2.5", "3.0", "4.0")

# creativecommons.org/licenses/<code>/<version> and the public-domain tools.
_CC_URL = re.compile(r"creativecommons\.org/licen[cs]es/([a-z-]+)/(\d(?:\.\d)?)")
_CC_PUBLICDOMAIN_URL = re.compile(r"creativecommons\.org/publicdomain/(zero|mark)/(\d\.\d)")
_MIT_URL = re.compile(r"opensource\.org/licen[cs]es/mit\b")
_ANY_URL = re.compile(r"(?:https?://|www\.)\S+")

# Prose forms of the elements, joined into one token before splitting (e.g. "Non-Commercial" -> "noncommercial").
_JOINS = (
    (re.compile(r"non[\s_-]*commercial"), "noncommercial"),
    (re.compile(r"no[\s_-]*deriv(?:ative)?s?(?:[\s_-]*works)?"), "noderivs"),
    (re.compile(r"share[\s_-]*alike"), "sharealike"),
    (re.compile(r"creative[\s_-]*commons"), "cc"),
    (re.compile(r"public[\s_-]*domain"), "publicdomain"),
    (re.compile(r"\bcc[\s_-]*(?:0|zero)\b"), "cc0"),
)
_ELEMENT_WORDS = {
    "by": "BY",
    "attribution": "BY",
    "nc": "NC",
    "noncommercial": "NC",
    "nd": "ND",
    "noderivs": "ND",
    "sa": "SA",
    "sharealike": "SA",
}
# Words that carry no licence meaning in prose licence names.
_FILLER_WORDS = {
    "cc",
    "license",
    "licence",
    "licensed",
    "under",
    "the",
    "a",
    "international",
    "unported",
    "generic",
    "version",
    "v",
    "universal",
    "deed",
    "legalcode",
    "public",
    "mark",
    "dedication",
    # the wording of Creative Commons' own notice: "This work is licensed under a ... License."
    "this",
    "work",
    "is",
    "released",
    "available",
}
# yt-dlp's `license` for YouTube videos marked Creative Commons; YouTube's only CC option is CC BY 3.0.
_YOUTUBE_CC = "creative commons attribution license (reuse allowed)"
_MIT_TEXT = re.compile(r"(?:the\s+)?mit(?:\s+licen[cs]e)?(?:\s*\(mit\))?\.?")


def _version(token: str) -> str | None:
    """'4.0', '4', 'v4.0' -> '4.0'; anything else -> None."""
    match = re.fullmatch(r"v?(\d)(?:\.(\d))?", token)
    if not match:
        return None
    return f"{match.group(1)}.{match.group(2) or '0'}"


def _cc_id(elements: set[str], version: str | None) -> str | None:
    """Build `CC-BY-NC-SA-3.0` from elements; None for combinations that do not exist."""
    if "BY" not in elements or version not in CC_VERSIONS or {"ND", "SA"} <= elements:
        return None
    ordered = [e for e in ("BY", "NC", "ND", "SA") if e in elements]
    return "CC-" + "-".join(ordered) + f"-{version}"


def _from_urls(text: str) -> set[str | None]:
    """Licences named by URLs in `text` (None for a licence URL whose code is not understood)."""
    found: set[str | None] = set()
    for code, version in _CC_URL.findall(text):
        parts = code.split("-")
        elements = {_ELEMENT_WORDS.get(p) for p in parts}
        found.add(None if None in elements else _cc_id(elements, _version(version)))  # type: ignore[arg-type]
    for kind, version in _CC_PUBLICDOMAIN_URL.findall(text):
        found.add("CC0-1.0" if kind == "zero" and version == "1.0" else "PUBLIC-DOMAIN" if kind == "mark" else None)
    if _MIT_URL.search(text):
        found.add("MIT")
    return found


def _from_words(text: str) -> str | None:
    """Prose or SPDX-like spellings: 'CC BY-SA 4.0', 'cc-by-nc-sa-3.0', 'Attribution-NoDerivs 3.0 Unported'."""
    if _MIT_TEXT.fullmatch(text):
        return "MIT"
    for pattern, joined in _JOINS:
        text = pattern.sub(joined, text)
    tokens = [t.strip(".") for t in re.split(r"[^a-z0-9.]+", text)]
    tokens = [t for t in tokens if t]
    elements: set[str] = set()
    versions: set[str] = set()
    has_cc_marker = False
    kind = "cc"
    for token in tokens:
        if token in _ELEMENT_WORDS:
            elements.add(_ELEMENT_WORDS[token])
            has_cc_marker |= token == "attribution"
        elif token == "cc":
            has_cc_marker = True
        elif token == "cc0":
            kind = "cc0"
        elif token == "publicdomain":
            kind = "cc0" if kind == "cc0" else "pd"
        elif (version := _version(token)) is not None:
            versions.add(version)
        elif token not in _FILLER_WORDS:
            return None  # a word we do not understand: never guess
    if len(versions) > 1:
        return None
    version = next(iter(versions), None)
    if kind == "cc0":
        return "CC0-1.0" if not elements and version in (None, "1.0") else None
    if kind == "pd":
        return "PUBLIC-DOMAIN" if not elements else None
    if not has_cc_marker:
        return None
    return _cc_id(elements, version)


def normalise_licence(value: object) -> str | None:
    """One licence id for `value`, or None when it is missing, unrecognised or ambiguous."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.lower().split())
    if not text or text in ("unknown", "none", "null", "n/a"):
        return None
    from_urls = _from_urls(text)
    if from_urls:
        # A licence URL is authoritative; two different ones (or one not understood) make the value ambiguous.
        return from_urls.pop() if len(from_urls) == 1 else None
    if _ANY_URL.search(text):
        return None  # a URL that is not a licence URL: not something we can read
    if text == _YOUTUBE_CC:
        return "CC-BY-3.0"
    if text == PRIVATE.lower():
        return PRIVATE
    return _from_words(text)


# Words that only a licence statement uses: free text holding one is judged as a licence, never ignored.
_LICENCE_WORDS = re.compile(
    r"licen[cs]|creative[\s_-]*commons|rights[\s_-]+reserved|no[\s_-]*deriv|non[\s_-]*commercial|share[\s_-]*alike"
    r"|public[\s_-]*domain|\bcc[\s_-]*(?:by|0|zero)\b|copyleft|\bspdx\b",
    re.IGNORECASE,
)
# The same idea for raw file bytes (lower-cased, NUL bytes removed so UTF-16 text reads as ASCII). Only forms of 6
# bytes or more: this scan also runs over compressed audio, where random bytes match a 6-byte form about once in
# 10^12 positions (a 4-byte form: once in 10^8, so a few times in a long track).
RAW_LICENCE_WORDS = re.compile(
    rb"licen[cs]|creative[ _-]?commons|rights[ _-]?reserved|no[ _-]?deriv|non[ _-]?commercial|share[ _-]?alike"
    rb"|public[ _-]?domain|cc[ _-]by[ _-](?:nd|nc|sa|[1-4]\.)"
)
RAW_WORD_MAX_BYTES = 32  # longer than any match of RAW_LICENCE_WORDS


def mentions_licence(value: str) -> bool:
    """Does free text (a comment, a copyright notice) claim a licence or reserve rights?

    Copyright tags often hold just "(c) 2012 Artist"; such a notice names no licence and is ignored. Text that
    names a licence, uses a licence's words ("licensed", "Creative Commons", "NoDerivatives", "all rights
    reserved"...) counts as a licence statement, even when it cannot be normalised: select then rejects it as
    unknown rather than keep a track whose tags may say it cannot be used.
    """
    return normalise_licence(value) is not None or _LICENCE_WORDS.search(value) is not None


def raw_licence_words(data: bytes) -> list[bytes]:
    """Licence words (RAW_LICENCE_WORDS) in bytes that are already lower-cased and free of NUL bytes."""
    return RAW_LICENCE_WORDS.findall(data)


def text_licence_words(text: str) -> list[bytes]:
    """The licence words of parsed tag text, counted the same way as in raw bytes."""
    return raw_licence_words(text.encode("utf-8", errors="replace").lower().replace(b"\0", b""))
