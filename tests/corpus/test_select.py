"""The select stage: licences from manifest, yt-dlp info and tags; decoding; duration limits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutagen.flac import FLAC
from mutagen.id3 import TCOP, TXXX, WCOP
from mutagen.wave import WAVE

from ssmttm import cli
from ssmttm.artifacts import read_jsonl, write_jsonl
from ssmttm.corpus.select import SelectConfig, decide_licence, read_tag_licences, select_shard, tag_licences
from ssmttm.errors import UserFacingError

from .conftest import write_tone

ALLOWED = ("CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-3.0", "MIT")
CFG = SelectConfig(allowed_licences=ALLOWED, min_duration_s=2.0, max_duration_s=60.0)


def _wav_with_id3(path: Path, frames: list) -> Path:
    write_tone(path, 3.0)
    audio = WAVE(str(path))
    audio.add_tags()
    for frame in frames:
        audio.tags.add(frame)
    audio.save()
    return path


def _flac_with_licence(path: Path, licence: str) -> Path:
    write_tone(path, 3.0, fmt="FLAC")
    audio = FLAC(str(path))
    audio["LICENSE"] = licence
    audio.save()
    return path


def _fetched(folder: Path, tracks: list[tuple[dict, Path]]) -> Path:
    """A fetch output folder: audio/<id>.<ext> plus tracks.jsonl."""
    (folder / "audio").mkdir(parents=True)
    rows = []
    for row, file in tracks:
        name = f"{row['id']}{file.suffix}"
        os.link(file, folder / "audio" / name)
        rows.append(
            {
                "audio_path": f"{folder.name}/audio/{name}",
                "sha256": "x",
                "bytes": 1,
                "source": "manifest",
                "licence_manifest": None,
                "licence_info": None,
                "tags": {},
                **row,
            }
        )
    write_jsonl(folder / "tracks.jsonl", sorted(rows, key=lambda r: r["id"]))
    return folder


def _rejected(out: Path) -> dict[str, tuple[str, str]]:
    lines = (out / "rejected.tsv").read_text().splitlines()
    assert lines[0] == "id\treason\tdetail"
    return {line.split("\t")[0]: tuple(line.split("\t")[1:]) for line in lines[1:]}


def test_tag_licences_reads_vorbis_and_id3(tmp_path):
    assert tag_licences(_flac_with_licence(tmp_path / "a.flac", "CC BY-ND 4.0")) == ["CC BY-ND 4.0"]
    wav = _wav_with_id3(
        tmp_path / "b.wav",
        [
            TXXX(encoding=3, desc="LICENSE", text=["CC BY 4.0"]),
            WCOP(url="https://creativecommons.org/licenses/by/4.0/"),
            TCOP(encoding=3, text=["(c) 2020 Some Artist"]),  # a plain notice: not a licence statement
        ],
    )
    assert sorted(tag_licences(wav)) == ["CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"]
    reserved = _wav_with_id3(tmp_path / "c.wav", [TCOP(encoding=3, text=["2020 Label. All rights reserved"])])
    assert tag_licences(reserved) == ["2020 Label. All rights reserved"]
    assert tag_licences(write_tone(tmp_path / "plain.wav", 1.0)) == []
    (tmp_path / "junk.mp3").write_bytes(b"\x00" * 100)
    reading = read_tag_licences(tmp_path / "junk.mp3")
    assert (reading.statements, reading.problem) == ([], "tags_unreadable")
    with pytest.raises(UserFacingError, match="junk.mp3: tags_unreadable"):
        tag_licences(tmp_path / "junk.mp3")


def test_select_reasons(tmp_path, in_tmp):
    wav = write_tone(tmp_path / "src/ok.wav", 3.0, channels=2)
    short = write_tone(tmp_path / "src/short.wav", 1.0)
    long_ = write_tone(tmp_path / "src/long.wav", 61.0, sample_rate=1000)
    junk = tmp_path / "src/junk.mp3"
    junk.write_bytes(b"this is not audio" * 50)
    nd_tagged = _flac_with_licence(tmp_path / "src/nd.flac", "CC BY-ND 4.0")
    by_tagged = _wav_with_id3(tmp_path / "src/by.wav", [WCOP(url="http://creativecommons.org/licenses/by/4.0/")])
    reserved = _wav_with_id3(tmp_path / "src/rr.wav", [TCOP(encoding=3, text=["All rights reserved"])])
    fetched = _fetched(
        in_tmp / "shard-00000",
        [
            ({"id": "mit", "licence_manifest": "MIT", "tags": {"mood": "calm"}}, wav),
            ({"id": "agree", "licence_manifest": "CC-BY-4.0", "licence_info": "CC BY 4.0"}, by_tagged),
            (
                {
                    "id": "yt",
                    "licence_manifest": "unknown",
                    "licence_info": "Creative Commons Attribution license (reuse allowed)",
                    "start_s": 0,
                    "end_s": 3,
                },
                wav,
            ),
            ({"id": "url", "licence_manifest": "http://creativecommons.org/licenses/by-nc-sa/3.0/"}, wav),
            ({"id": "disagree", "licence_manifest": "MIT"}, nd_tagged),
            ({"id": "disagree-info", "licence_manifest": "MIT", "licence_info": "CC BY-SA 4.0"}, wav),
            ({"id": "nolicence"}, wav),
            ({"id": "unknown", "licence_manifest": "unknown"}, wav),
            ({"id": "weird", "licence_manifest": "Free for personal use"}, wav),
            ({"id": "reserved", "licence_manifest": None}, reserved),
            ({"id": "nd", "licence_manifest": "CC BY-ND 4.0"}, nd_tagged),
            ({"id": "nc", "licence_manifest": "http://creativecommons.org/licenses/by-nc/3.0/"}, wav),
            ({"id": "junk", "licence_manifest": "MIT"}, junk),
            ({"id": "short", "licence_manifest": "MIT"}, short),
            ({"id": "long", "licence_manifest": "MIT"}, long_),
        ],
    )
    summary = select_shard(fetched, CFG, "data/select/shard-00000")
    out = in_tmp / "data/select/shard-00000"
    kept = read_jsonl(out / "kept.jsonl")
    assert [r["id"] for r in kept] == ["agree", "mit", "url", "yt"]
    mit = next(r for r in kept if r["id"] == "mit")
    assert (mit["licence"], mit["licence_sources"], mit["sample_rate"], mit["channels"]) == (
        "MIT",
        {"manifest": "MIT"},
        8000,
        2,
    )
    assert mit["duration_s"] == pytest.approx(3.0) and mit["tags"] == {"mood": "calm"}
    assert mit["audio_path"] == "shard-00000/audio/mit.wav"  # the fetch row is carried over
    agree = next(r for r in kept if r["id"] == "agree")
    assert agree["licence_sources"] == {"manifest": "CC-BY-4.0", "info": "CC-BY-4.0", "tags": "CC-BY-4.0"}
    yt = next(r for r in kept if r["id"] == "yt")
    assert yt["licence"] == "CC-BY-3.0" and yt["licence_sources"] == {"info": "CC-BY-3.0"} and yt["end_s"] == 3
    assert next(r for r in kept if r["id"] == "url")["licence"] == "CC-BY-NC-SA-3.0"
    rejected = _rejected(out)
    reasons = {k: v[0] for k, v in rejected.items()}
    assert reasons == {
        "disagree": "licence_disagreement",
        "disagree-info": "licence_disagreement",
        "nolicence": "licence_unknown",
        "unknown": "licence_unknown",
        "weird": "licence_unknown",
        "reserved": "licence_unknown",
        "nd": "licence_not_allowed",
        "nc": "licence_not_allowed",
        "junk": "undecodable",
        "short": "too_short",
        "long": "too_long",
    }
    assert "CC-BY-ND-4.0" in rejected["disagree"][1] and "MIT" in rejected["disagree"][1]
    assert "Free for personal use" in rejected["weird"][1]
    assert "CC-BY-ND-4.0" in rejected["nd"][1]
    assert summary.kept == 4 and sum(summary.rejected.values()) == 11
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["stage"] == "select" and provenance["rejected"]["licence_unknown"] == 4
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    select_shard(fetched, CFG, "data/select/shard-00000")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # byte-identical rerun


def test_non_finite_audio_is_reported_as_non_finite(tmp_path, in_tmp):
    import numpy as np
    import soundfile as sf

    samples = np.full((8000 * 3, 1), 0.1, np.float32)
    samples[5] = np.nan
    samples[7] = -np.inf
    sf.write(str(tmp_path / "nan.wav"), samples, 8000, subtype="FLOAT")
    fetched = _fetched(in_tmp / "shard-00000", [({"id": "nan", "licence_manifest": "MIT"}, tmp_path / "nan.wav")])
    select_shard(fetched, CFG, "out")
    assert _rejected(in_tmp / "out") == {"nan": ("non_finite", "2 of 24000 decoded samples are NaN or infinite")}


def test_agreement_not_required(tmp_path):
    cfg = SelectConfig(allowed_licences=ALLOWED, require_licence_agreement=False)
    decision = decide_licence({"manifest": ["CC-BY-4.0"], "tags": ["CC BY 3.0"]}, cfg)
    assert decision.reason is None and decision.licence == "CC-BY-4.0"
    decision = decide_licence({"manifest": ["MIT"], "tags": ["CC BY-ND 4.0"]}, cfg)
    assert decision.reason == "licence_not_allowed"  # every named licence must still be allowed
    decision = decide_licence({"tags": ["CC BY 4.0", "CC-BY-3.0"]}, cfg)
    assert decision.reason is None and decision.licence in ("CC-BY-3.0", "CC-BY-4.0")
    assert decide_licence({"tags": ["CC BY 4.0", "CC-BY-3.0"]}, CFG).reason == "licence_disagreement"
    assert decide_licence({"manifest": ["MIT"], "tags": ["nonsense licence"]}, cfg).reason == "licence_unknown"


def test_missing_fetch_output_is_a_clear_error(tmp_path):
    with pytest.raises(UserFacingError, match="tracks.jsonl.*ssmttm fetch"):
        select_shard(tmp_path / "nope", CFG, tmp_path / "out")


def test_cli_select(tmp_path, in_tmp, repo_root):
    fetched = _fetched(in_tmp / "f", [({"id": "a", "licence_manifest": "MIT"}, write_tone(tmp_path / "a.wav", 11.0))])
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    assert cli.main(["select", "--params", "params.yaml", "--fetched", str(fetched), "--out", "s"]) == 0
    assert [r["id"] for r in read_jsonl(in_tmp / "s/kept.jsonl")] == ["a"]


# ----------------------------------------------------------------------------------------------- property

_ND_OR_UNKNOWN_SPELLINGS = st.one_of(
    st.builds(
        lambda nc, v, sep, upper: (
            (sep.join(["CC", "BY"] + (["NC"] if nc else []) + ["ND", v])).upper()
            if upper
            else sep.join(["cc", "by"] + (["nc"] if nc else []) + ["nd", v])
        ),
        st.booleans(),
        st.sampled_from(["3.0", "4.0", "2.5", "4"]),
        st.sampled_from([" ", "-", "_"]),
        st.booleans(),
    ),
    st.builds(
        lambda code, v, scheme, tail: f"{scheme}creativecommons.org/licenses/{code}/{v}{tail}",
        st.sampled_from(["by-nd", "by-nc-nd", "by-nd-nc", "BY-ND"]),
        st.sampled_from(["3.0", "4.0", "1.0"]),
        st.sampled_from(["http://", "https://", "https://www."]),
        st.sampled_from(["", "/", "/deed.fr"]),
    ),
    st.sampled_from(
        [
            "Attribution-NoDerivs 3.0",
            "Attribution-NonCommercial-NoDerivatives 4.0 International",
            "CC BY-SA",
            "All rights reserved",
            "Standard YouTube License",
            "GPL",
            "CC BY 4.0 + extras",
            "Creative Commons",
            "proprietary",
            "Attribution",
            "BY-SA 4.0",
            "cc by-nd-sa 4.0",
        ]
    ),
)
# Random text: kept in the property only when the normaliser does not read an allowed licence into it.
_RANDOM_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz -./04", min_size=1, max_size=20).filter(
    lambda t: t.strip().lower() not in ("", "unknown", "none", "null")
)
_LICENCES = st.one_of(_ND_OR_UNKNOWN_SPELLINGS.map(lambda s: (s, False)), _RANDOM_TEXT.map(lambda s: (s, True)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(licences=st.lists(_LICENCES, min_size=1, max_size=4), where=st.sampled_from(["manifest", "info", "tags"]))
def test_nd_or_unknown_licences_never_reach_kept(tmp_path_factory, licences, where):
    """Whatever the spelling, a no-derivatives or unknown licence in any one source is never kept."""
    from ssmttm.corpus.licences import normalise_licence

    licences = [
        spelling for spelling, is_random in licences if not is_random or normalise_licence(spelling) not in ALLOWED
    ]
    if not licences:
        return
    root = tmp_path_factory.mktemp("prop")
    wav = write_tone(root / "src.wav", 3.0)
    tracks = []
    for k, spelling in enumerate(licences):
        row = {"id": f"t{k}", "licence_manifest": "MIT" if where != "manifest" else spelling}
        file = wav
        if where == "info":
            row["licence_info"] = spelling
        elif where == "tags":
            file = _flac_with_licence(root / f"t{k}.flac", spelling)
        tracks.append((row, file))
    fetched = _fetched(root / "shard", tracks)
    select_shard(fetched, CFG, root / "out")
    assert read_jsonl(root / "out/kept.jsonl") == []
    assert len(_rejected(root / "out")) == len(licences)


def test_demo_corpus_end_to_end(in_tmp):
    """manifest (demo) -> fetch through yt-dlp file:// URLs -> select: MIT tracks kept, the ND track rejected."""
    from ssmttm.artifacts import shard_of
    from ssmttm.corpus.fetch import FetchConfig, fetch_shard
    from ssmttm.corpus.manifest import CorpusConfig, build_manifest

    n_shards = 8  # the shard of local-000 then holds one wheel track too: a small, fast end-to-end run
    shard = shard_of("local-000", n_shards)
    manifest = build_manifest(CorpusConfig(source="demo", n_shards=n_shards), "data/manifest", seed=1234)
    rows = [r for r in read_jsonl(manifest) if r["shard"] == shard]
    assert "local-000" in {r["id"] for r in rows} and len(rows) >= 2
    summary = fetch_shard(
        manifest,
        shard,
        FetchConfig(allow_file_urls=True, cache_dir="cache", retries=0),
        f"data/fetch/shard-{shard:05d}",
    )
    assert summary.fetched == len(rows) and summary.failed == 0
    select_shard(
        f"data/fetch/shard-{shard:05d}",
        SelectConfig(allowed_licences=ALLOWED, min_duration_s=10),
        f"data/select/shard-{shard:05d}",
    )
    kept = read_jsonl(in_tmp / f"data/select/shard-{shard:05d}/kept.jsonl")
    assert {r["id"] for r in kept} == {r["id"] for r in rows} - {"local-000"}
    assert all(r["licence"] == "MIT" and r["sample_rate"] == 48000 and r["duration_s"] > 10 for r in kept)
    rejected = _rejected(in_tmp / f"data/select/shard-{shard:05d}")
    assert rejected == {"local-000": ("licence_not_allowed", "CC-BY-ND-4.0 not in select.allowed_licences")}
