"""Fault injection: a corpus of valid and broken items of every known class through manifest -> fetch -> select ->
segment -> caption, plus broken manifests, broken params and a real SIGKILL.

    python bench/bench_faults.py            # 12 valid tracks, every broken class, then the later stages
    python bench/bench_faults.py --quick    # 3 valid tracks, every broken class, then the later stages
    python bench/bench_faults.py --only later   # only the later stages (bench/faults_later.py; needs make demo)

Counts (goal 0, 0, 0 for the first three):
- crashes: a stage that ended in an internal error (a bug) rather than a result or a clear error;
- leaks: broken items that reached segment's clips (a licence leak above all), plus temporaries left after a rerun;
- items_lost: valid items that did not come out of caption with clips;
- correctly_rejected: broken items stopped at the expected stage with the expected reason (of broken_items);
- retry_time_lost_s: seconds fetch spent on attempts after the first (waits included), by failure kind.
The later stages (generate, decode, evaluate, report, train-refiner, text-cache: bad inputs, SIGKILLs, a full disk)
are bench/faults_later.py's part, under "later_stages"; "summary" adds both parts up: cases, crashes (internal
errors), leaks (garbage or temporaries published, silent acceptances of bad input) and losses (valid work that did
not come out, or a rerun that differs from an uninterrupted run).
Writes results/bench/faults.json with each item's outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from faults_later import print_later, run_later_stages  # bench/, first on sys.path when run as a script

from ssmttm import cli
from ssmttm.artifacts import TMP_MARK, read_jsonl, write_json
from ssmttm.corpus import fetch

RATE = 16000
ROOT = Path(__file__).resolve().parent.parent
ND = "CC BY-ND 4.0"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


# ----------------------------------------------------------------------------------------------- corpus


def _tone(path: Path, seconds: float, freq: float = 440.0, subtype: str = "PCM_16") -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE, subtype=subtype)
    return path


def _ffmpeg(source: Path, dest: Path, *args: str) -> Path:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(source), *args, str(dest)]
    subprocess.run(cmd, check=True)
    return dest


def _flac(path: Path, **tags: str) -> Path:
    from mutagen.flac import FLAC

    data, rate = sf.read(str(_tone(path.with_suffix(".src.wav"), 12.0)))
    sf.write(str(path), data, rate, format="FLAC")
    path.with_suffix(".src.wav").unlink()
    audio = FLAC(str(path))
    for key, value in tags.items():
        audio[key] = value
    audio.save()
    return path


def _broken_items(src: Path, server_url: str) -> list[dict[str, Any]]:
    """Rows of every broken class, each with the outcome it must get: (stage, reason prefix)."""
    from mutagen.apev2 import APEv2

    items = []

    def add(name: str, url: str, stage: str, reason: str, **row: Any) -> None:
        items.append({"id": f"bad-{name}", "url": url, "licence": "MIT", **row, "expect": (stage, reason)})

    # licences: the file's own tags must win, whatever the name, the tag type or the field
    os.replace(_flac(src / "nd.flac", LICENSE=ND), src / "flac-as-mp3.mp3")
    add("flac-as-mp3", "file:src/flac-as-mp3.mp3", "select", "licence_disagreement")
    _flac(src / "comment.flac", COMMENT="This work is licensed under a Creative Commons Attribution-NoDerivatives 4.0")
    add("nd-in-comment", "file:src/comment.flac", "select", "licence_disagreement")
    _flac(src / "unclear.flac", DESCRIPTION="This track is CC BY-ND, enjoy!")
    add("unclear-comment", "file:src/unclear.flac", "select", "licence_unknown")
    damaged = _flac(src / "damaged.flac", LICENSE="CC BY 4.0")
    data = bytearray(damaged.read_bytes())
    data[data.index(b"LICENSE") - 4 : data.index(b"LICENSE")] = (10**6).to_bytes(4, "little")
    damaged.write_bytes(bytes(data))
    add("damaged-tags", "file:src/damaged.flac", "select", "tags_unreadable")
    ape = _ffmpeg(_tone(src / "ape.wav", 12.0), src / "ape.mp3", "-c:a", "libmp3lame")
    tag = APEv2()
    tag["License"] = ND
    tag.save(str(ape))
    add("ape-on-mp3", "file:src/ape.mp3", "select", "licence_disagreement")
    _ffmpeg(_tone(src / "riff.src.wav", 12.0), src / "riff.wav", "-metadata", f"copyright={ND}")
    add("riff-info", "file:src/riff.wav", "select", "licence_disagreement")
    hidden = _tone(src / "xmp.wav", 12.0)
    with open(hidden, "ab") as handle:
        handle.write(b"<cc:license rdf:resource='http://creativecommons.org/licenses/by-nd/4.0/'/>")
    add("unparsed-licence", "file:src/xmp.wav", "select", "tags_malformed")
    _tone(src / "free.wav", 12.0)
    items.append(
        {
            "id": "bad-unknown-licence",
            "url": "file:src/free.wav",
            "licence": "Free for personal use",
            "expect": ("select", "licence_unknown"),
        }
    )
    # audio that is not usable
    (src / "text.wav").write_text("this is not audio\n" * 200)
    add("not-audio", "file:src/text.wav", "select", "undecodable")
    nan = np.full(12 * RATE, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(str(src / "nan.wav"), nan, RATE, subtype="FLOAT")
    add("nan", "file:src/nan.wav", "select", "non_finite")
    _tone(src / "short.wav", 0.5)
    add("too-short", "file:src/short.wav", "select", "too_short")
    # downloads that cannot work
    add("http-404", f"{server_url}/gone.wav", "fetch", "permanent\tHTTP 404")
    (src / "www").mkdir(exist_ok=True)
    (src / "www/empty.wav").write_bytes(b"")
    add("http-empty", f"{server_url}/empty.wav", "fetch", "permanent\tthe URL served an empty file")
    (src / "www/page.html").write_text("<html><body>no media</body></html>")
    add("http-page", f"{server_url}/page.html", "fetch", "permanent\tthe URL is not a media file")
    add("dead-host", "http://127.0.0.1:9/x.wav", "fetch", "transient\t")
    add("missing-file", "file:src/nope.wav", "fetch", "permanent\tlocal file not found")
    (src / "empty.wav").write_bytes(b"")
    add("empty-file", "file:src/empty.wav", "fetch", "permanent\tlocal file is empty")
    return items


def _valid_items(src: Path, count: int, server_url: str) -> list[dict[str, Any]]:
    items = []
    for k in range(count):
        kind = ("wav", "flac", "mp3", "http", "excerpt")[k % 5]
        wav = _tone(src / f"ok{k}.wav", 12.0, freq=220 + 30 * k)
        url = f"file:src/ok{k}.wav"
        row: dict[str, Any] = {}
        if kind == "flac":
            url = f"file:{_flac(src / f'ok{k}.flac', LICENSE='MIT').relative_to(src.parent)}"
        elif kind == "mp3":
            url = f"file:{_ffmpeg(wav, src / f'ok{k}.mp3', '-c:a', 'libmp3lame').relative_to(src.parent)}"
        elif kind == "http":
            shutil.copyfile(wav, src / "www" / f"ok{k}.wav")
            url = f"{server_url}/ok{k}.wav"
        elif kind == "excerpt":  # start_s/end_s on a local file: copied whole, segment keeps the excerpt
            row = {"start_s": 1.0, "end_s": 11.5}
        items.append({"id": f"ok-{k:02d}", "url": url, "licence": "MIT", **row, "expect": ("caption", "")})
    return items


# ----------------------------------------------------------------------------------------------- runs


def _cli(argv: list[str]) -> tuple[int, str]:
    """Run `ssmttm` in this process; (exit code, stderr)."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(argv)
    return code, stderr.getvalue()


class RetryClock:
    """Wraps fetch's per-item download to time each attempt: time beyond the first attempt is lost to retries."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[float]] = defaultdict(list)
        self.total: dict[str, float] = {}
        self._download, self._fetch_media = fetch.download_media, fetch.fetch_media

    def __enter__(self) -> RetryClock:
        def download(row: dict[str, Any], *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return self._download(row, *args)
            finally:
                self.attempts[row["id"]].append(time.perf_counter() - start)

        def fetch_media(row: dict[str, Any], *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return self._fetch_media(row, *args)
            finally:
                self.total[row["id"]] = time.perf_counter() - start

        fetch.download_media, fetch.fetch_media = download, fetch_media
        return self

    def __exit__(self, *exc: object) -> None:
        fetch.download_media, fetch.fetch_media = self._download, self._fetch_media

    def lost(self, track_id: str) -> float:
        """Seconds between the end of the first attempt and the end of the last (waits included); 0 without retry."""
        attempts = self.attempts.get(track_id, [])
        return max(0.0, self.total.get(track_id, 0.0) - attempts[0]) if len(attempts) > 1 else 0.0


def _outcomes(items: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Where each item ended: ("fetch", "<kind>\t<reason>"), ("select", reason), ("segment", ...), ("caption", "")."""
    ended: dict[str, tuple[str, str]] = {}
    for line in Path("data/fetch/shard-00000/failures.tsv").read_text().splitlines()[1:]:
        track_id, _url, kind, reason = line.split("\t", 3)
        ended[track_id] = ("fetch", f"{kind}\t{reason}")
    for line in Path("data/select/shard-00000/rejected.tsv").read_text().splitlines()[1:]:
        track_id, reason, _detail = line.split("\t", 2)
        ended[track_id] = ("select", reason)
    clips = {r["track_id"] for r in read_jsonl("data/segment/shard-00000/clips.jsonl")}
    captioned = {r["track_id"] for r in read_jsonl("data/caption/shard-00000/captions.jsonl")}
    for item in items:
        if item["id"] in captioned:
            ended[item["id"]] = ("caption", "")
        elif item["id"] in clips:
            ended[item["id"]] = ("segment", "no caption")
        ended.setdefault(item["id"], ("lost", ""))
    return ended


def _bad_inputs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Broken manifests and params: each must stop with one clear error line (exit 1 or 2), never a crash."""
    manifests = {
        "non-numeric start_s": "id,url,licence,start_s,end_s\na,file:x.wav,MIT,ten,20\n",
        "very long id": f"id,url,licence\n{'a' * 400},file:x.wav,MIT\n",
        "url scheme": "id,url,licence\na,ftp://example.org/a.mp3,MIT\n",
        "unknown column": "id,url,licence,licnce\na,file:x.wav,MIT,MIT\n",
        "duplicate id": "id,url,licence\na,file:x.wav,MIT\na,file:y.wav,MIT\n",
    }
    results = []
    for name, content in manifests.items():
        Path("bad.csv").write_text(content)
        broken = {**params, "corpus": {**params["corpus"], "manifest_path": "bad.csv"}}
        Path("bad.yaml").write_text(yaml.safe_dump(broken))
        code, err = _cli(["manifest", "--params", "bad.yaml", "--out", "data/bad-manifest"])
        results.append({"input": f"manifest: {name}", "exit": code, "message": err.strip().splitlines()[-1][:200]})
    for name, section, change in (
        ("float sample_rate", "segment", {"sample_rate": 44100.0}),
        ("min_duration_s > max_duration_s", "select", {"min_duration_s": 100, "max_duration_s": 10}),
    ):
        Path("bad.yaml").write_text(yaml.safe_dump({**params, section: {**params[section], **change}}))
        code, err = _cli(["select", "--params", "bad.yaml", "--fetched", "data/fetch/shard-00000", "--out", "x"])
        results.append({"input": f"params: {name}", "exit": code, "message": err.strip().splitlines()[-1][:200]})
    return results


def _kill_segment(workdir: Path) -> dict[str, Any]:
    """SIGKILL a real `ssmttm segment` process mid-write; rerun; compare with the uninterrupted output."""
    out = Path("data/segment/shard-00000")
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    shutil.rmtree(out)
    cmd = [sys.executable, "-m", "ssmttm", "segment", "--params", "params.yaml", "--selected"]
    cmd += ["data/select/shard-00000", "--out", str(out)]
    process = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not list(out.parent.glob(f"{out.name}{TMP_MARK}*")):
        time.sleep(0.002)
    time.sleep(0.05)
    killed_mid_write = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial_output = out.exists()
    left_after_kill = len(list(out.parent.glob(f"*{TMP_MARK}*")))
    code, _ = _cli(["segment", "--params", "params.yaml", "--selected", "data/select/shard-00000", "--out", str(out)])
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {
        "killed_mid_write": killed_mid_write,
        "partial_output_after_kill": partial_output,
        "temporaries_after_kill": left_after_kill,
        "rerun_exit": code,
        "temporaries_after_rerun": len(list(Path("data").rglob(f"*{TMP_MARK}*"))),
        "rerun_equals_uninterrupted": after == before,
    }


def run(valid_count: int, workdir: Path) -> dict[str, Any]:
    src = workdir / "src"
    (src / "www").mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(src / "www"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server_url = f"http://127.0.0.1:{server.server_address[1]}"
    os.chdir(workdir)
    try:
        items = _valid_items(src, valid_count, server_url) + _broken_items(src, server_url)
        lines = [{k: v for k, v in item.items() if k != "expect"} for item in items]
        Path("corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["corpus"].update({"source": "manifest", "manifest_path": "corpus.jsonl", "n_shards": 1})
        # a third of this corpus is broken on purpose: the default 5% would (rightly) refuse the shard
        params["fetch"].update({"cache_dir": "data/cache/fetch", "allow_file_urls": True, "max_failure_fraction": 0.5})
        params["select"]["min_duration_s"] = 5
        params["segment"].update({"clip_seconds": 5, "hop_seconds": 5})
        Path("params.yaml").write_text(yaml.safe_dump(params))
        shard = "shard-00000"
        stages = [
            ["manifest", "--out", "data/manifest"],
            ["fetch", "--manifest", "data/manifest/manifest.jsonl", "--shard", "0", "--out", f"data/fetch/{shard}"],
            ["select", "--fetched", f"data/fetch/{shard}", "--out", f"data/select/{shard}"],
            ["segment", "--selected", f"data/select/{shard}", "--out", f"data/segment/{shard}"],
            ["caption", "--clips", f"data/segment/{shard}", "--out", f"data/caption/{shard}"],
        ]
        exits, seconds = {}, {}
        with RetryClock() as clock:
            for argv in stages:
                start = time.perf_counter()
                exits[argv[0]], _ = _cli([argv[0], "--params", "params.yaml", *argv[1:]])
                seconds[argv[0]] = round(time.perf_counter() - start, 2)
        ended = _outcomes(items)
        bad_inputs = _bad_inputs(params)
        kill = _kill_segment(workdir)
    finally:
        os.chdir(ROOT)
        server.shutdown()
    rows = []
    for item in items:
        stage, reason = ended[item["id"]]
        expect_stage, expect_reason = item["expect"]
        rows.append(
            {
                "id": item["id"],
                "ended": stage,
                "reason": reason[:200],
                "expected": f"{expect_stage}: {expect_reason}".strip(": "),
                "as_expected": stage == expect_stage and reason.startswith(expect_reason),
                "retry_time_lost_s": round(clock.lost(item["id"]), 2),
                "attempts": len(clock.attempts.get(item["id"], [])),
            }
        )
    broken = [r for r in rows if r["id"].startswith("bad-")]
    valid = [r for r in rows if not r["id"].startswith("bad-")]
    lost_by_kind: Counter[str] = Counter()
    for row in rows:
        kind = row["reason"].split("\t")[0] if row["ended"] == "fetch" else "fetched"
        lost_by_kind[kind] += row["retry_time_lost_s"]
    crashes = sum(code == cli.EXIT_BUG for code in exits.values()) + sum(r["exit"] not in (1, 2) for r in bad_inputs)
    crashes += kill["rerun_exit"] != 0
    licence_leaks = sum(r["ended"] in ("segment", "caption") for r in broken)
    temporary_leaks = kill["temporaries_after_rerun"] + int(kill["partial_output_after_kill"])
    counts = {
        "crashes": crashes,
        "leaks": licence_leaks + temporary_leaks,
        "licence_leaks": licence_leaks,
        "temporary_leaks": temporary_leaks,
        "items_lost": sum(r["ended"] != "caption" for r in valid),
        "valid_items": len(valid),
        "correctly_rejected": sum(r["as_expected"] for r in broken),
        "broken_items": len(broken),
        "bad_inputs_refused_clearly": sum(r["exit"] in (1, 2) for r in bad_inputs),
        "bad_inputs": len(bad_inputs),
        "retry_time_lost_s": round(sum(lost_by_kind.values()), 2),
        "retry_time_lost_s_by_kind": {k: round(v, 2) for k, v in sorted(lost_by_kind.items()) if v},
    }
    return {
        "benchmark": "faults",
        "config": {
            "valid_items": valid_count,
            "fetch_retries": params["fetch"]["retries"],
            "retry_wait_s": fetch.RETRY_WAIT_S,
        },
        "counts": counts,
        "goal_met": counts["crashes"] == 0 and counts["leaks"] == 0 and counts["items_lost"] == 0,
        "stage_exit_codes": exits,
        "stage_seconds": seconds,
        "items": rows,
        "bad_inputs": bad_inputs,
        "kill": kill,
    }


def print_table(result: dict[str, Any]) -> None:
    for row in result["items"]:
        mark = "ok " if row["as_expected"] else "BAD"
        reason = row["reason"].replace("\t", " ")[:70]
        print(f"{mark} {row['id']:<22} {row['ended']:<8} {reason:<70} retry {row['retry_time_lost_s']:.1f}s")
    for row in result["bad_inputs"]:
        print(
            f"{'ok ' if row['exit'] in (1, 2) else 'BAD'} {row['input']:<40} exit {row['exit']}: {row['message'][:90]}"
        )
    print(f"kill: {result['kill']}")
    print(f"counts: {result['counts']}")
    print(f"goal (0 crashes, 0 leaks, 0 items lost) met: {result['goal_met']}")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Cases, crashes, leaks and losses over both parts (a part not run adds nothing and is named)."""
    total = {"cases": 0, "crashes": 0, "leaks": 0, "losses": 0}
    if "counts" in result:
        corpus = result["counts"]
        total["cases"] += corpus["valid_items"] + corpus["broken_items"] + corpus["bad_inputs"] + 1  # + the kill
        total["crashes"] += corpus["crashes"]
        total["leaks"] += corpus["leaks"]
        total["losses"] += corpus["items_lost"] + int(not result["kill"]["rerun_equals_uninterrupted"])
    later = result.get("later_stages", {})
    for key in total:
        total[key] += later.get("counts", {}).get(key, 0)
    total["not_run"] = [
        part for part, done in (("corpus", "counts" in result), ("later", "counts" in later)) if not done
    ]
    return total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 valid tracks instead of 12")
    parser.add_argument("--out", default=str(ROOT / "results/bench/faults.json"), help="JSON output path")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (printed)")
    parser.add_argument("--only", choices=("corpus", "later"), help="run one part only")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ssmttm-faults-"))
    result: dict[str, Any] = {"benchmark": "faults"}
    try:
        if args.only != "later":
            result = run(3 if args.quick else 12, workdir / "corpus")
            print_table(result)
        if args.only != "corpus":
            result["later_stages"] = run_later_stages(ROOT, workdir / "later")
            print_later(result["later_stages"])
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["summary"] = summary(result)
    print(f"summary: {json.dumps(result['summary'])}")
    write_json(args.out, result)
    print(f"wrote {args.out}" + (f"; working folder {workdir}" if args.keep else ""))
    return result


if __name__ == "__main__":
    main()
