"""Licence normalisation: spellings -> ids, and nothing uncertain ever becomes a licence."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmttm.corpus.licences import mentions_licence, normalise_licence

ID_RE = re.compile(r"CC-BY(-NC)?(-ND|-SA)?-\d\.\d|CC0-1\.0|PUBLIC-DOMAIN|MIT|PRIVATE")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://creativecommons.org/licenses/by-nc-sa/3.0/", "CC-BY-NC-SA-3.0"),
        ("https://creativecommons.org/licenses/by/4.0/deed.en", "CC-BY-4.0"),
        ("http://creativecommons.org/licenses/by-nc-nd/2.5/it/", "CC-BY-NC-ND-2.5"),
        ("http://creativecommons.org/licenses/by-nd-nc/1.0/", "CC-BY-NC-ND-1.0"),
        ("creativecommons.org/licenses/by-sa/4.0", "CC-BY-SA-4.0"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "CC0-1.0"),
        ("https://creativecommons.org/publicdomain/mark/1.0/", "PUBLIC-DOMAIN"),
        (
            "Available under a Creative Commons Attribution-NonCommercial license: "
            "http://creativecommons.org/licenses/by-nc/3.0/",
            "CC-BY-NC-3.0",
        ),
        (
            "2009 Artist Licensed to the public under http://creativecommons.org/licenses/by-sa/3.0/ verify at "
            "http://www.jamendo.com/",
            "CC-BY-SA-3.0",
        ),
        ("CC BY-SA 4.0", "CC-BY-SA-4.0"),
        ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
        ("CC-BY-NC-SA-3.0", "CC-BY-NC-SA-3.0"),
        ("cc by nc 4", "CC-BY-NC-4.0"),
        ("Attribution-NonCommercial-ShareAlike 3.0", "CC-BY-NC-SA-3.0"),
        ("Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 International", "CC-BY-NC-ND-4.0"),
        ("Creative Commons Attribution 3.0 Unported License", "CC-BY-3.0"),
        ("Attribution-No Derivative Works 3.0", "CC-BY-ND-3.0"),
        ("CC BY-ND 4.0", "CC-BY-ND-4.0"),
        ("CC0", "CC0-1.0"),
        ("CC0 1.0 Universal", "CC0-1.0"),
        ("Creative Commons Zero", "CC0-1.0"),
        ("Public Domain", "PUBLIC-DOMAIN"),
        ("MIT", "MIT"),
        ("MIT License", "MIT"),
        ("the mit licence", "MIT"),
        ("https://opensource.org/licenses/MIT", "MIT"),
        ("Creative Commons Attribution license (reuse allowed)", "CC-BY-3.0"),  # YouTube via yt-dlp
    ],
)
def test_known_spellings(raw, expected):
    assert normalise_licence(raw) == expected
    assert normalise_licence(raw.upper()) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "unknown",
        "CC BY-SA",
        "Attribution-NoDerivs",
        "All rights reserved",
        "(c) 2012 Some Artist",
        "GPL-3.0",
        "Standard YouTube License",
        "CC BY-ND-SA 4.0",
        "CC BY 5.0",
        "CC BY-SA 4.0 or CC BY 3.0",
        "by-sa 4.0",
        "Submit",
        "https://example.com/licence",
        "http://creativecommons.org/licenses/by/3.0/ http://creativecommons.org/licenses/by-nd/3.0/",
        "http://creativecommons.org/licenses/sampling+/1.0/",
        "CC BY-SA 4.0 with extra terms",
        42,
    ],
)
def test_unrecognised_or_ambiguous_is_none(raw):
    assert normalise_licence(raw) is None


def test_mentions_licence_ignores_plain_copyright_notices():
    assert not mentions_licence("(c) 2012 Some Artist")
    assert mentions_licence("All rights reserved")
    assert mentions_licence("Licensed under something odd")
    assert mentions_licence("2009 X, http://creativecommons.org/licenses/by/3.0/")


@pytest.mark.parametrize(
    "text",
    [
        "This track is CC BY-ND 4.0, enjoy!",
        "Creative Commons",
        "some rights reserved",
        "free to share, no derivatives please",
        "NonCommercial use only",
        "Licensing: ask the label",
        "released into the public domain",
    ],
)
def test_free_text_using_licence_words_is_a_licence_statement(text):
    assert mentions_licence(text)  # select judges it (and rejects what it cannot read) instead of ignoring it


def test_the_creative_commons_notice_sentence_is_read():
    notice = "This work is licensed under a Creative Commons Attribution-NoDerivatives 4.0 International License."
    assert normalise_licence(notice) == "CC-BY-ND-4.0"
    assert normalise_licence(notice.replace("-NoDerivatives", "")) == "CC-BY-4.0"
    assert normalise_licence("This work is not licensed under CC BY 4.0") is None


def test_raw_licence_words_are_counted_alike_in_bytes_and_text():
    from ssmttm.corpus.licences import raw_licence_words, text_licence_words

    text = "LICENSE=CC BY-ND 4.0; all rights reserved"
    utf16 = text.encode("utf-16-le").lower().replace(b"\0", b"")
    assert raw_licence_words(utf16) == text_licence_words(text) == [b"licens", b"cc by-nd", b"rights reserved"]
    assert text_licence_words("(c) 2012 Some Artist, Lavf62.3.100") == []


# ----------------------------------------------------------------------------------------------- properties


def _case(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True))


@st.composite
def nd_spellings(draw) -> tuple[str, str]:
    """(spelling, expected id) of a no-derivatives licence, as prose, SPDX-like text or a URL."""
    nc = draw(st.booleans())
    major = draw(st.sampled_from(["1", "2", "3", "4"]))
    version = draw(st.sampled_from([f"{major}.0", major] if major != "2" else ["2.0", "2.5"]))
    norm_version = version if "." in version else f"{version}.0"
    expected = f"CC-BY{'-NC' if nc else ''}-ND-{norm_version}"
    form = draw(st.sampled_from(["url", "spdx", "prose"]))
    if form == "url":
        code = "by-nc-nd" if nc and draw(st.booleans()) else ("by-nd-nc" if nc else "by-nd")
        scheme = draw(st.sampled_from(["http://", "https://", "", "http://www."]))
        tail = draw(st.sampled_from(["", "/", "/deed.en", "/fr/", "/legalcode"]))
        text = f"{scheme}creativecommons.org/licenses/{code}/{norm_version}{tail}"
        prefix = draw(st.sampled_from(["", "Licensed under ", "Available under a licence: "]))
        return prefix + text, expected
    sep = draw(st.sampled_from([" ", "-", "_", "  "]))
    if form == "spdx":
        parts = [draw(st.sampled_from(["CC", "cc"])), "BY"] + (["NC"] if nc else []) + ["ND", version]
        return _case(draw, sep.join(parts)), expected
    prefix = draw(st.sampled_from(["", "Creative Commons ", "creative-commons ", "CC "]))
    nd_word = draw(st.sampled_from(["NoDerivs", "NoDerivatives", "No-Derivatives", "No Derivative Works", "ND"]))
    words = ["Attribution"] + ([draw(st.sampled_from(["NonCommercial", "Non-Commercial", "NC"]))] if nc else [])
    words.append(nd_word)
    suffix = draw(st.sampled_from(["", " International", " Unported", " License", " licence"]))
    return _case(draw, f"{prefix}{sep.join(words)} {version}{suffix}"), expected


@settings(max_examples=300, deadline=None)
@given(nd_spellings())
def test_nd_spellings_normalise_to_their_nd_id(spelling_and_expected):
    spelling, expected = spelling_and_expected
    assert normalise_licence(spelling) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_gives_none_or_a_well_formed_id(text):
    result = normalise_licence(text)
    assert result is None or ID_RE.fullmatch(result)


@settings(max_examples=200, deadline=None)
@given(nd_spellings(), st.sampled_from(["remix", "xyz", "gpl", "proprietary", "2.0 3.0"]))
def test_nd_with_foreign_words_is_never_an_allowed_licence(spelling_and_expected, extra):
    spelling, _ = spelling_and_expected
    result = normalise_licence(f"{spelling} {extra}")
    assert result is None or "-ND-" in result
