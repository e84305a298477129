"""`ssmttm codec`: build data/codec from pretrained DAC weights or by training a small DAC on the corpus clips.

    ssmttm codec --params params.yaml --clips data/segment/shard-00000 data/segment/shard-00001 --out data/codec

Output (one atomic folder): weights.safetensors, codec.json (identity, see ssmttm.codec), provenance.json and, for a
trained codec, metrics.json (losses; held-out mel distance, dyncorr and log-mel L1, trained vs untrained) and
heldout/: each scored held-out clip's first eval_seconds and its reconstruction by the trained codec (encode ->
codes -> decode), `<clip_id>.reference.wav` and `<clip_id>.reconstruction.wav` (16-bit PCM at the codec rate), with
index.json (sha256 and scores per clip). They are for listening and are the codec floor of the evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmttm import stand_ins
from ssmttm.artifacts import atomic_dir, write_json, write_provenance
from ssmttm.codec import METRICS_FILE, model_identity, resolve_device, save_codec
from ssmttm.codec.pretrained import PretrainedConfig, locate_weights, prepare_pretrained
from ssmttm.codec.train import HELDOUT_MEASURES, CodecTrainConfig, train_codec
from ssmttm.config import load_params, section_to_dataclass

log = logging.getLogger(__name__)

HELDOUT_DIR = "heldout"


@dataclass
class CodecConfig:
    mode: str = "train"  # train (small DAC on the corpus, offline) | pretrained (descript weights)
    device: str = "cpu"  # training device: cpu (deterministic) | cuda | auto
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)
    train: CodecTrainConfig = field(default_factory=CodecTrainConfig)


def run_codec(
    cfg: CodecConfig, clip_dirs: list[str | Path], out: str | Path, seed: int, section: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the codec folder `out`; return its codec.json."""
    with atomic_dir(out) as tmp:
        if cfg.mode == "pretrained":
            # Located once (a download, when allowed, happens here): the same file is converted and its STANDIN.txt,
            # if it is a stand-in, is read.
            weights = locate_weights(cfg.pretrained)
            identity = prepare_pretrained(dataclasses.replace(cfg.pretrained, path=str(weights)), tmp)
            extra: dict[str, Any] = stand_ins.provenance_fields(
                {f"codec.pretrained (DAC {identity['variant']})": stand_ins.label_beside(weights)}
            )
        elif cfg.mode == "train":
            model, metrics = train_codec(cfg.train, clip_dirs, seed, resolve_device(cfg.device), tmp / HELDOUT_DIR)
            identity = save_codec(tmp, model, model_identity(model, variant="trained"))
            write_json(tmp / METRICS_FILE, metrics)
            held = metrics["heldout"]
            for name in HELDOUT_MEASURES:
                log.info(
                    "held-out %s: trained %.4f, untrained %.4f",
                    name,
                    held[f"{name}_trained"],
                    held[f"{name}_untrained"],
                )
            extra = {"inputs": [str(p) for p in clip_dirs]}
        else:
            raise ValueError(f"codec.mode must be 'train' or 'pretrained', got {cfg.mode!r}")
        write_provenance(
            tmp,
            "codec",
            section if section is not None else {},
            seed,
            cpu_numerics=True,
            weights_sha256=identity["weights_sha256"],
            **extra,
        )
    return identity


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", nargs="+", default=[], help="segment folders (data/segment/shard-NNNNN) to train on")
    parser.add_argument("--out", default="data/codec", help="output folder (default: data/codec)")


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    section = params.get("codec") or {}
    cfg = section_to_dataclass(CodecConfig, section)
    identity = run_codec(cfg, args.clips, args.out, int(params["seed"]), section)
    print(
        f"{args.out}: DAC {identity['variant']} ({identity['n_codebooks']} codebooks x {identity['codebook_size']}, "
        f"hop {identity['hop_length']} at {identity['sample_rate']} Hz)"
    )
    return 0
