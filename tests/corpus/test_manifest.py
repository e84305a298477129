"""The manifest stage: demo, MusicCaps and user manifests, id checks, sorting, sharding, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import mutagen
import pytest
import soundfile as sf
import yaml

from ssmttm import cli
from ssmttm.artifacts import is_temporary, read_jsonl, shard_of
from ssmttm.corpus.demo_corpus import parse_licence_table
from ssmttm.corpus.manifest import CorpusConfig, DemoConfig, MusicCapsConfig, build_manifest
from ssmttm.corpus.urls import resolve_url
from ssmttm.errors import UserFacingError

REQUIRED = {"id", "url", "licence", "source", "tags", "shard"}


def _local_path(url: str) -> Path:
    resolved = resolve_url(url)
    assert resolved.startswith("file://")
    return Path(url2pathname(urlparse(resolved).path))


def test_demo_manifest(in_tmp):
    cfg = CorpusConfig(source="demo", n_shards=3, demo=DemoConfig(disallowed_tracks=2))
    path = build_manifest(cfg, "data/manifest", seed=7)
    rows = read_jsonl(path)
    assert len(rows) == 28 + 2
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert all(REQUIRED <= set(r) for r in rows)
    assert all(r["shard"] == shard_of(r["id"], 3) for r in rows)
    assert {r["shard"] for r in rows} == {0, 1, 2}
    demo = [r for r in rows if not r["id"].startswith("local-")]
    assert {r["licence"] for r in demo} == {"MIT"} and {r["source"] for r in rows} == {"demo"}
    assert {r["tags"]["mood"] for r in demo} == {"calm", "energetic", "happy", "nostalgic", "tender"}
    assert {r["tags"]["style"] for r in demo} == {"acoustic", "electronic"}
    by_id = {r["id"]: r for r in rows}
    assert by_id["calm_acoustic_1"]["tags"] == {
        "mood": "calm",
        "style": "acoustic",
        "bpm": 68,
        "key": "C major",
        "title": "calm acoustic 1",
    }
    assert by_id["nostalgic_electronic_2"]["tags"]["key"] == "Bb minor"
    assert all(_local_path(r["url"]).is_file() for r in rows)
    # portable: no absolute path of this machine in the manifest
    assert all(r["url"].startswith(("pkg://immich_memories_music/", "file:data/manifest/local/")) for r in rows)
    for local_id, licence in (("local-000", "CC BY-ND 4.0"), ("local-001", "CC BY-NC-ND 4.0")):
        row = by_id[local_id]
        file = _local_path(row["url"])
        assert file == (in_tmp / "data/manifest/local" / f"{local_id}.flac").resolve()
        assert row["licence"] == licence and mutagen.File(file)["LICENSE"] == [licence]
        assert sf.info(str(file)).duration >= 10  # long enough that only its licence can reject it
    assert json.loads((in_tmp / "data/manifest/provenance.json").read_text())["tracks"] == 30
    assert not [p for p in (in_tmp / "data").rglob("*") if is_temporary(p)]


def test_demo_manifest_is_byte_identical_on_rerun_and_max_tracks(in_tmp):
    first = build_manifest(CorpusConfig(n_shards=2), "a", seed=1)
    second = build_manifest(CorpusConfig(n_shards=2), "b", seed=1)
    flac_a, flac_b = (in_tmp / "a/local/local-000.flac"), (in_tmp / "b/local/local-000.flac")
    assert flac_a.read_bytes() == flac_b.read_bytes()
    strip = [json.dumps({k: v for k, v in r.items() if k != "url"}) for r in read_jsonl(first)]
    assert strip == [json.dumps({k: v for k, v in r.items() if k != "url"}) for r in read_jsonl(second)]
    before = first.read_bytes()
    assert build_manifest(CorpusConfig(n_shards=2), "a", seed=1).read_bytes() == before
    few = read_jsonl(build_manifest(CorpusConfig(n_shards=2, max_tracks=4), "c", seed=1))
    assert [r["id"] for r in few] == [r["id"] for r in read_jsonl(first)][:4]
    assert not (in_tmp / "c/local/local-000.flac").exists()  # dropped by max_tracks, so not written


def test_licence_table_parser():
    table = parse_licence_table(
        "calm/\n  calm_acoustic_1.opus   68 bpm  C major   seed 101  [acoustic]\n"
        "  x_electronic_2.opus  150 bpm  Bb minor  seed 202  [electronic]\n"
    )
    assert table == {
        "calm_acoustic_1.opus": {"bpm": 68, "key": "C major", "style": "acoustic", "seed": 101},
        "x_electronic_2.opus": {"bpm": 150, "key": "Bb minor", "style": "electronic", "seed": 202},
    }


MUSICCAPS = (
    "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval\n"
    'b-yt_2,30,40,"/m/04rlf,/m/0342h","[\'guitar\']",A calm guitar piece.,1,False,True\n'
    'a-yt_1,0,10,/m/04rlf,"[\'piano\']","Piano, slow.",2,False,False\n'
    'c-yt_3,15,25,"/m/04rlf,/m/015lz1","[\'singing\']",A woman sings.,3,False,True\n'
)


def test_musiccaps_manifest(in_tmp):
    csv_path = in_tmp / "mc.csv"
    csv_path.write_text(MUSICCAPS)
    mc = MusicCapsConfig(csv_path=str(csv_path), url_template="https://example.org/v/{ytid}", no_singing_only=True)
    rows = read_jsonl(build_manifest(CorpusConfig(source="musiccaps", n_shards=2, musiccaps=mc), "m", 0))
    assert [r["id"] for r in rows] == ["a-yt_1", "b-yt_2"]  # sorted; the singing clip is dropped
    assert rows[0] == {
        "id": "a-yt_1",
        "url": "https://example.org/v/a-yt_1",
        "licence": "unknown",
        "source": "musiccaps",
        "tags": {},
        "start_s": 0.0,
        "end_s": 10.0,
        "caption": "Piano, slow.",
        "shard": shard_of("a-yt_1", 2),
    }
    everything = MusicCapsConfig(csv_path=str(csv_path), no_singing_only=False, audioset_eval_only=True)
    rows = read_jsonl(build_manifest(CorpusConfig(source="musiccaps", musiccaps=everything), "m", 0))
    assert [r["id"] for r in rows] == ["b-yt_2", "c-yt_3"]
    assert rows[0]["url"] == "https://www.youtube.com/watch?v=b-yt_2"


def test_shared_musiccaps_csv_is_readable(repo_root):
    shared = repo_root.parent / "shared/data/musiccaps-public-nosinging.csv"
    if not shared.is_file():
        pytest.skip("shared MusicCaps copy not present")
    from ssmttm.corpus.manifest import musiccaps_rows

    rows = musiccaps_rows(MusicCapsConfig(csv_path=str(shared)))
    assert len(rows) == 2218 and all(r["licence"] == "unknown" for r in rows)


def test_user_manifest_csv_tsv_jsonl(in_tmp):
    (in_tmp / "m.csv").write_text(
        'id,url,licence,tags\nz.2,https://x.org/z.mp3,CC BY 4.0,"{""mood"": ""sad"", ""bpm"": 90}"\n'
        "a_1,http://x.org/a.wav,,\n"
    )
    rows = read_jsonl(build_manifest(CorpusConfig(source="manifest", manifest_path="m.csv", n_shards=5), "o", 0))
    assert [r["id"] for r in rows] == ["a_1", "z.2"]
    assert rows[0]["licence"] == "unknown" and rows[0]["source"] == "manifest" and rows[0]["tags"] == {}
    assert rows[1]["tags"] == {"mood": "sad", "bpm": 90} and rows[1]["shard"] == shard_of("z.2", 5)
    (in_tmp / "m.tsv").write_text("id\turl\tlicence\nb\thttp://x/b.mp3\tMIT\n")
    assert read_jsonl(build_manifest(CorpusConfig(source="manifest", manifest_path="m.tsv"), "o", 0))[0]["id"] == "b"
    (in_tmp / "m.jsonl").write_text(
        json.dumps({"id": "j", "url": "http://x/j.mp3", "license": "MIT", "start_s": 1, "end_s": 3, "sha256": "A" * 64})
        + "\n"
    )
    row = read_jsonl(build_manifest(CorpusConfig(source="manifest", manifest_path="m.jsonl"), "o", 0))[0]
    assert (row["licence"], row["start_s"], row["end_s"], row["sha256"]) == ("MIT", 1.0, 3.0, "a" * 64)


@pytest.mark.parametrize("bad_id", ["../x", "a/b", ".", "..", "a..b", "sp ace", "é"])
def test_bad_ids_stop_with_their_name(in_tmp, bad_id):
    (in_tmp / "m.jsonl").write_text(json.dumps({"id": bad_id, "url": "http://x/1.mp3", "licence": "MIT"}) + "\n")
    with pytest.raises(UserFacingError) as info:
        build_manifest(CorpusConfig(source="manifest", manifest_path="m.jsonl"), "o", 0)
    assert repr(bad_id) in str(info.value) and "m.jsonl" in str(info.value)
    assert not (in_tmp / "o").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,url,licence\na,http://x/a,MIT\na,http://x/b,MIT\n", r"m.csv:3: track id 'a' already used on line 2"),
        ("id,url,licence\na,,MIT\n", "m.csv:2: missing url"),
        ('id,url,licence,tags\na,http://x,MIT,"{""colour"": 1}"\n', "m.csv:2: unknown tag key"),
        ("id,url,licence,tags\na,http://x,MIT,[1]\n", "JSON object"),
        ('id,url,licence,tags\na,http://x,MIT,"{""bpm"": {""x"": 1}}"\n', "tag 'bpm'.*must be text, a number"),
        ("id,url,licence,source\na,http://x,MIT,spotify\n", "spotify"),
        ("id,url,licence,start_s,end_s\na,http://x,MIT,ten,20\n", r"m.csv:2: start_s = 'ten' is not a number"),
        ("id,url,licence,start_s,end_s\na,http://x,MIT,nan,20\n", "start_s = 'nan' is not a number"),
        ("id,url,licence,start_s,end_s\na,http://x,MIT,-1,20\n", "start_s = '-1' is not a number of seconds >= 0"),
        ("id,url,licence,start_s,end_s\na,http://x,MIT,30,20\n", "end_s = 20.0 must be greater than start_s"),
        ("id,url,licence,start_s\na,http://x,MIT,30\n", "start_s and end_s go together"),
        ("id,url,licence,sha256\na,http://x,MIT,abc\n", "sha256 'abc' is not a 64-digit hex"),
        ("id,url,licence,colour\na,http://x,MIT,red\n", r"unknown column\(s\) \['colour'\]"),
        ("id,url,licence\na,http://x,MIT,extra\n", "m.csv:2: more values than header columns"),
        ("id,url,licence\na,ftp://x/a.mp3,MIT\n", "url 'ftp://x/a.mp3' is not a http, https, file URL"),
        ("id,url,licence\na,javascript:alert(1),MIT\n", "is not a http, https, file URL"),
        (
            "id,url,licence\nb,http://x/b,MIT\n" + "x" * 129 + ",http://x/a,MIT\n",
            r"m.csv:3: .*\(129 chars\).*at most 128",
        ),
        ("id,url,licence\na.tmp-1-ab,http://x/a,MIT\n", "no '..' nor '.tmp-'"),
        ("id,url,licence\n", "the manifest has no rows"),
        ('id,url,licence,caption\na,http://x,MIT,"two\nlines"\n', "caption holds control characters"),
    ],
)
def test_user_manifest_errors_name_the_line_and_the_field(in_tmp, content, message):
    (in_tmp / "m.csv").write_text(content)
    with pytest.raises(UserFacingError, match=message):
        build_manifest(CorpusConfig(source="manifest", manifest_path="m.csv"), "o", 0)
    assert not (in_tmp / "o").exists()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": 7, "url": "http://x/a"}, "m.jsonl:3: invalid track id 7"),
        ({"id": "a", "url": ["http://x/a"]}, "m.jsonl:3: url must be text"),
        ({"id": "a", "url": "http://x/a", "licence": 4.0}, "licence must be text, got float"),
        ({"id": "a", "url": "http://x/a", "caption": 12}, "caption must be text"),
        ({"id": "a", "url": "http://x/a", "start_s": True, "end_s": 2}, "start_s = True is not a number"),
        ({"id": "a", "url": "http://x/a", "start_s": "1", "end_s": None}, "start_s and end_s go together"),
    ],
)
def test_user_jsonl_errors_name_the_physical_line(in_tmp, record, message):
    """Blank lines count: the number is the line an editor shows."""
    (in_tmp / "m.jsonl").write_text(json.dumps({"id": "ok", "url": "http://x/ok"}) + "\n\n" + json.dumps(record) + "\n")
    with pytest.raises(UserFacingError, match=message):
        build_manifest(CorpusConfig(source="manifest", manifest_path="m.jsonl"), "o", 0)


def test_user_manifest_that_is_not_utf8_is_a_clear_error(in_tmp):
    (in_tmp / "m.csv").write_bytes("id,url,licence\ncaf\xe9,http://x,MIT\n".encode("latin-1"))
    with pytest.raises(UserFacingError, match="m.csv: not UTF-8 text.*save it as UTF-8"):
        build_manifest(CorpusConfig(source="manifest", manifest_path="m.csv"), "o", 0)


def test_cli_manifest(in_tmp, repo_root, capsys):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["corpus"].update({"source": "manifest", "manifest_path": "m.csv", "n_shards": 2})
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    (in_tmp / "m.csv").write_text("id,url,licence\nb,http://x/b.mp3,MIT\na,http://x/a.mp3,MIT\n")
    assert cli.main(["manifest", "--params", "params.yaml", "--out", "data/manifest"]) == 0
    assert [r["id"] for r in read_jsonl(in_tmp / "data/manifest/manifest.jsonl")] == ["a", "b"]
    (in_tmp / "m.csv").write_text("id,url,licence\n../x,http://x/b.mp3,MIT\n")
    assert cli.main(["manifest", "--params", "params.yaml", "--out", "data/manifest"]) == 1
    assert "'../x'" in capsys.readouterr().err
