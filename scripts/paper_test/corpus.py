"""The files the paper test profile downloads, synthesised: a tiny MTG-Jamendo and MusicCaps reference audio.

    write_served(root) -> root/
        mtg-jamendo/raw_30s_cleantags.tsv                    metadata, in MTG's format (header + one track a line)
        mtg-jamendo/audio_licenses.txt                       per-track licence blocks, in MTG's format
        mtg-jamendo/raw_30s/audio/raw_30s_audio-NN.tar       audio archives holding NN/<id>.mp3 (320 kbps stereo)
        mtg-jamendo/mtg_jamendo_raw_30s_audio_sha256_tars.txt  `<sha256> <tar name>` per archive (configs/checksums/)
        musiccaps/musiccaps-public.csv                       MusicCaps columns, captions written for these clips
        musiccaps/<ytid>.wav                                 the "videos" (one row's file is missing on purpose)

Everything is synthesised with seeded numpy (chords, bass, drums, and on some tracks a vocal-like voice: a
vibrato harmonic tone with formant-like weights and syllable envelopes) and encoded with imageio-ffmpeg's ffmpeg; the
TARs have fixed member metadata, so the same bytes come out on every run (the sha256 list stays valid).
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

RATE = 44100
MTG_DIR = "mtg-jamendo"
MUSICCAPS_DIR = "musiccaps"
TAR_PATH = "raw_30s/audio/raw_30s_audio-{index:02d}.tar"
SHA256_LIST = "mtg_jamendo_raw_30s_audio_sha256_tars.txt"
MUSICCAPS_CSV = "musiccaps-public.csv"
MUSICCAPS_COLUMNS = [
    "ytid",
    "start_s",
    "end_s",
    "audioset_positive_labels",
    "aspect_list",
    "caption",
    "author_id",
    "is_balanced_subset",
    "is_audioset_eval",
]


@dataclass(frozen=True)
class Track:
    number: int  # MTG track number; its archive (and PATH folder) is number % 100, as in MTG-Jamendo
    seconds: float
    root_hz: float
    bpm: int
    vocals: bool
    tags: tuple[str, ...]
    licence: tuple[str, str]  # (licence words, creativecommons.org URL)
    title: str
    artist: str

    @property
    def archive(self) -> int:
        return self.number % 100

    @property
    def path(self) -> str:
        return f"{self.archive:02d}/{self.number}.mp3"

    @property
    def track_id(self) -> str:
        return f"track_{self.number:07d}"


BY = ("Attribution", "http://creativecommons.org/licenses/by/3.0/")
BY_SA = ("Attribution-ShareAlike", "http://creativecommons.org/licenses/by-sa/3.0/")
BY_NC_SA = ("Attribution-NonCommercial-ShareAlike", "http://creativecommons.org/licenses/by-nc-sa/3.0/")
BY_NC_ND = ("Attribution-NonCommercial-NoDerivatives", "http://creativecommons.org/licenses/by-nc-nd/3.0/")

# Six tracks in two archives (00 and 01); one under a NoDerivatives licence, which select must leave out.
TRACKS = (
    Track(1100, 38.0, 220.0, 96, False, ("genre---ambient", "mood/theme---calm", "instrument---piano"), BY,
          "Morning Glass", "Lena Fjord"),
    Track(2300, 52.5, 146.8, 124, True, ("genre---pop", "mood/theme---happy", "instrument---voice",
          "instrument---synthesizer"), BY_SA, "Paper Suns", "The Linden Set"),
    Track(4500, 66.0, 110.0, 140, False, ("genre---electronic", "genre---techno", "mood/theme---energetic",
          "instrument---drums"), BY_NC_SA, "Night Grid", "Voltaic"),
    Track(1201, 44.0, 196.0, 84, True, ("genre---folk", "mood/theme---melancholic", "instrument---guitar",
          "instrument---voice"), BY, "Harbour Song", "Mara Quill"),
    Track(3401, 35.5, 261.6, 110, False, ("genre---jazz", "mood/theme---relaxing", "instrument---bass",
          "instrument---piano"), BY_NC_SA, "Blue Stairs", "Oskar Trio"),
    Track(5601, 58.0, 130.8, 100, False, ("genre---classical", "mood/theme---dramatic", "instrument---strings"),
          BY_NC_ND, "Cold Harbour Suite", "Ensemble Nord"),
)  # fmt: skip


@dataclass(frozen=True)
class Reference:
    ytid: str
    start_s: int
    labels: str
    aspects: str
    caption: str
    root_hz: float
    bpm: int
    served: bool = True  # False: the server answers 404 (the failure path of fetch_references)


REFERENCES = (
    Reference("q3Lk8vTz1aB", 4, "/m/05148p4,/m/04rlf", "['solo piano', 'slow tempo', 'calm', 'instrumental']",
              "A calm solo piano piece at 72 BPM in C major. The pianist plays soft sustained chords with a "
              "gentle melody on top. There are no voices. This could be played in a quiet cafe.", 261.6, 72),
    Reference("Zp0-Wd4mE7c", 10, "/m/0glt670,/m/026t6,/m/04rlf", "['electronic beat', 'four on the floor', "
              "'synth bass', 'energetic']", "An energetic electronic track at 128 BPM with a four on the floor "
              "kick, a pulsing synth bass and bright hi-hats. The mood is upbeat, fit for a dance floor.", 110.0, 128),
    Reference("b7_Rn2kUfQs", 0, "/m/042v_gx,/m/0342h,/m/04rlf", "['acoustic guitar', 'strumming', 'folk', "
              "'warm']", "A warm folk tune played on an acoustic guitar with steady strumming and a simple bass "
              "line. The recording sounds intimate and relaxed.", 196.0, 96),
    Reference("Xc9yH1oPq2M", 6, "/m/0l14md,/m/01lyv,/m/04rlf", "['string ensemble', 'dramatic', 'cinematic', "
              "'slow build']", "A dramatic string ensemble slowly builds tension with low cellos and rising "
              "violins, like the soundtrack of a film scene.", 130.8, 80),
    Reference("fT4kW8zLm0s", 2, "/m/03_d0,/m/018vs,/m/04rlf", "['jazz trio', 'walking bass', 'brushed drums', "
              "'relaxing']", "A relaxing jazz trio in F major: a walking upright bass, brushed drums and a "
              "piano playing extended chords, about 118 BPM. The mood is laid back.", 146.8, 118),
    Reference("mN6vR3sYt8e", 8, "/m/05148p4,/m/0283d,/m/04rlf", "['synth pads', 'ambient', 'dreamy', "
              "'no drums']", "A dreamy ambient piece with slowly evolving synth pads and no drums. It sounds "
              "spacious and peaceful.", 220.0, 60, served=False),
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- audio


def synth_music(seconds: float, root_hz: float, bpm: int, vocals: bool, seed: int) -> np.ndarray:
    """(2, N) float32 at 44.1 kHz: a chord progression, a bass line, kick/hi-hat drums and optionally a voice."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * RATE))
    t = np.arange(n) / RATE
    beat = 60.0 / bpm
    bar = 4 * beat
    progression = np.array([0, 5, 7, 3])  # semitones above the root, one chord a bar
    chord_root = root_hz * 2.0 ** (progression[(t // bar).astype(int) % 4] / 12.0)  # (N,)
    phase = 2 * np.pi * np.cumsum(chord_root) / RATE
    chords = sum(0.12 / (k + 1) * np.sin(phase * ratio) for k, ratio in enumerate((1.0, 1.26, 1.5, 2.0)))
    bass = 0.25 * np.sin(phase / 2) * (0.6 + 0.4 * np.cos(2 * np.pi * t / beat))
    since_beat = t % beat
    kick = 0.5 * np.sin(2 * np.pi * 55 * since_beat) * np.exp(-since_beat * 18)
    since_half = t % (beat / 2)
    hats = 0.05 * rng.standard_normal(n) * np.exp(-since_half * 60)
    left = chords + bass + kick + 0.8 * hats
    right = 0.9 * chords + bass + kick + 1.2 * hats
    if vocals:
        # a voice: vibrato around a melody an octave above the root, harmonics shaped like vowel formants, sung in
        # syllables (one per beat) over the middle of the track
        melody = (
            root_hz
            * 2
            * 2.0 ** (rng.choice([0, 2, 4, 7, 9], size=int(seconds / beat) + 2)[(t // beat).astype(int)] / 12)
        )
        f0 = melody * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
        voice_phase = 2 * np.pi * np.cumsum(f0) / RATE
        voice = sum(w * np.sin(voice_phase * (h + 1)) for h, w in enumerate((0.5, 0.35, 0.6, 0.2, 0.1)))
        syllables = np.clip(np.sin(np.pi * since_beat / beat), 0, 1) ** 2
        sung = (t > 0.2 * seconds) & (t < 0.85 * seconds)
        voice = 0.18 * voice * syllables * sung
        left, right = left + voice, right + voice
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.5)
    return (np.stack([left, right]) * fade * 0.8).astype(np.float32)


def ffmpeg_encode(samples: np.ndarray, args: list[str], fmt: str) -> bytes:
    """(C, N) float32 at 44.1 kHz -> encoded bytes, through imageio-ffmpeg's ffmpeg (deterministic for fixed input)."""
    import imageio_ffmpeg

    pcm = np.ascontiguousarray(np.clip(samples.T, -1, 1)).astype("<f4").tobytes()
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(RATE), "-ac",
           str(samples.shape[0]), "-i", "pipe:0", "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a",
           "+bitexact", *args, "-f", fmt, "pipe:1"]  # fmt: skip
    return subprocess.run(cmd, input=pcm, capture_output=True, check=True).stdout


def wav_bytes(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples.T, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- MTG-Jamendo


def tags_tsv(tracks: tuple[Track, ...]) -> str:
    lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    for k, track in enumerate(tracks):
        lines.append(
            "\t".join(
                [track.track_id, f"artist_{k + 7:06d}", f"album_{k + 31:06d}", track.path, f"{track.seconds:.1f}"]
            )
            + "\t"
            + "\t".join(track.tags)
        )
    return "\n".join(lines) + "\n"


def licences_txt(tracks: tuple[Track, ...]) -> str:
    blocks = []
    for track in tracks:
        words, url = track.licence
        blocks.append(
            f"{track.path}\n{track.title} by {track.artist} from Jamendo: https://www.jamendo.com/track/{track.number}\n"
            f"Available under a Creative Commons {words} license: {url}\n"
        )
    return "\n".join(blocks)


def deterministic_tar(members: dict[str, bytes]) -> bytes:
    """A TAR of `members` (name -> bytes) with fixed metadata (mtime 0, root-owned, 0644), sorted by name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            archive.addfile(info, io.BytesIO(members[name]))
    return buffer.getvalue()


def write_mtg(root: Path, tracks: tuple[Track, ...] = TRACKS) -> None:
    folder = root / MTG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "raw_30s_cleantags.tsv").write_text(tags_tsv(tracks))
    (folder / "audio_licenses.txt").write_text(licences_txt(tracks))
    archives: dict[int, dict[str, bytes]] = {}
    for track in tracks:
        audio = synth_music(track.seconds, track.root_hz, track.bpm, track.vocals, seed=track.number)
        mp3 = ffmpeg_encode(audio, ["-c:a", "libmp3lame", "-b:a", "320k"], "mp3")
        archives.setdefault(track.archive, {})[track.path] = mp3
    sums = []
    for index, members in sorted(archives.items()):
        path = folder / TAR_PATH.format(index=index)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = deterministic_tar(members)
        path.write_bytes(data)
        sums.append(f"{hashlib.sha256(data).hexdigest()} {path.name}")
    (folder / SHA256_LIST).write_text("\n".join(sums) + "\n")


# ----------------------------------------------------------------------------------------------- MusicCaps


def write_musiccaps(root: Path, references: tuple[Reference, ...] = REFERENCES) -> None:
    folder = root / MUSICCAPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / MUSICCAPS_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MUSICCAPS_COLUMNS)
        for k, ref in enumerate(references):
            end_s = ref.start_s + 10  # MusicCaps clips are 10 s
            writer.writerow([ref.ytid, ref.start_s, end_s, ref.labels, ref.aspects, ref.caption, k % 4, "False",
                             "True" if k % 2 else "False"])  # fmt: skip
            if ref.served:
                # the "video": longer than end_s + fetch_references' 1 s margin, like a real one
                seconds = end_s + 3.0
                audio = synth_music(seconds, ref.root_hz, ref.bpm, vocals=False, seed=1000 + k)
                (folder / f"{ref.ytid}.wav").write_bytes(wav_bytes(audio))


def scaled_tracks(scale: int) -> tuple[Track, ...]:
    """TRACKS `scale` times (bench/bench_scaling.py): copy c of a track is number + 10000 c, in the same archive
    (number % 100, so the profile's shard count still covers it), with its own audio (seeded by the number)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    return tuple(
        replace(t, number=t.number + 10000 * c, title=t.title if c == 0 else f"{t.title} ({c + 1})")
        for c in range(scale)
        for t in TRACKS
    )


def write_served(root: Path, scale: int = 1) -> Path:
    """Write every served file under `root` (an empty or absent folder), with `scale` x the tracks; return it."""
    root = Path(root)
    write_mtg(root, scaled_tracks(scale))
    write_musiccaps(root)
    return root
