"""`ssmttm text-cache`: frozen text-encoder outputs cached per caption, `<root>/<cache-key>/captions-NNNNN.safetensors`.

    ssmttm text-cache --params params.yaml --shards data/tokenize --out data/text_cache

Reads the sections `text` and `refiner_text`. The text encoder is frozen, so each caption's encoding is a pure
function of (encoder, max_length, cache_dtype): computing it once before training removes the encoder from the
training loop (and from GPU memory) and makes every epoch cheaper. Every distinct caption of the shards (all
splits) is encoded, listed from the shards' small `caption` column alone. Caption dropout is not part of the cache:
it is applied by the LM on top of the cached encodings, in training only.

Layout of `--out`, one atomic folder (`provenance.json`: the text section, the shards and their `_manifest.json`
hash, the cache keys) and of one cache folder in it (the key hashes the encoder name, max_length and text.cache_dtype):

    cache.json                  encoder, max_length, d_text, dtype, captions, files
    captions-00000.safetensors  per caption sha256 `<sha>`: the hidden rows of its real tokens (n, d_text) and
                                `<sha>.mask` (max_length,) uint8; padding rows are zero and rebuilt on read
    provenance.json

The refiner may encode captions another way (`refiner_text`: PAPER.md section 6 uses flan-t5-large where the LM uses
flan-t5-base); when its (encoder, max_length) give another cache key, the same root gets a second cache folder, so
`ssmttm train-refiner --text-cache OUT` finds its encodings beside the LM's.

The unconditional prompt "" is always included. `TextCache` has the `encode`/`uncond`/`hidden_size` interface of
`ssmttm.text.encoder.TextEncoder`, so the training module takes either.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ssmttm import stand_ins
from ssmttm.artifacts import atomic_dir, hash_params, link_or_copy, sha256_file, write_json, write_provenance
from ssmttm.config import load_params, section_to_dataclass
from ssmttm.errors import UserFacingError
from ssmttm.text.encoder import UNCOND_PROMPT, TextConfig, TextEncoding
from ssmttm.tokens.shards import MANIFEST_FILE, list_shards, require_token_shards

log = logging.getLogger(__name__)

CACHE_FORMAT = "ssmttm.text_cache/1"
CACHE_FILE = "cache.json"
CAPTIONS_PER_FILE = 4096
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class RefinerTextConfig:
    """params.yaml `refiner_text`: how the refiner encodes captions, where it differs from the LM's `text` section."""

    encoder: str | None = None  # null: text.encoder
    max_length: int | None = None  # null: text.max_length

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"refiner_text.max_length must be >= 1 or null, got {self.max_length}")

    def resolve(self, text_cfg: TextConfig) -> TextConfig:
        """The `text` section with this section's non-null keys in place (batch_size, device, cache_dtype kept)."""
        return dataclasses.replace(
            text_cfg,
            encoder=self.encoder if self.encoder is not None else text_cfg.encoder,
            max_length=self.max_length if self.max_length is not None else text_cfg.max_length,
        )


def params_text_configs(params: dict[str, Any]) -> tuple[TextConfig, TextConfig]:
    """(the LM's text setting, the refiner's) from a params file's `text` and `refiner_text` sections."""
    text_cfg = section_to_dataclass(TextConfig, params.get("text"))
    return text_cfg, section_to_dataclass(RefinerTextConfig, params.get("refiner_text")).resolve(text_cfg)


def caption_key(caption: str) -> str:
    return hashlib.sha256(caption.encode()).hexdigest()


def cache_key(text_cfg: TextConfig) -> str:
    """Folder name of the cache for this encoder setting (batch_size and device do not change the outputs)."""
    return hash_params(
        {
            "format": CACHE_FORMAT,
            "encoder": text_cfg.encoder,
            "max_length": text_cfg.max_length,
            "dtype": text_cfg.cache_dtype,
        }
    )[:16]


def cache_folder(root: str | Path, text_cfg: TextConfig) -> Path:
    return Path(root) / cache_key(text_cfg)


def shard_captions(shards_dir: str | Path) -> list[str]:
    """Distinct captions of every token shard in `shards_dir`, all splits (only the caption column is read)."""
    import pyarrow.parquet as pq

    shards = list_shards(shards_dir)
    if not shards:
        raise UserFacingError(
            f"{shards_dir}: no token shards (shard-NNNNN.parquet); run `ssmttm tokenize` first or "
            "pass --shards with the tokenize output folder"
        )
    captions: set[str] = set()
    for shard in shards:
        captions.update(pq.read_table(str(shard), columns=["caption"]).column("caption").to_pylist())
    return sorted(captions)


def read_cache_info(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / CACHE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _covers(folder: Path, wanted: list[str]) -> bool:
    info = read_cache_info(folder)
    return info is not None and set(info["captions"]) >= {caption_key(c) for c in wanted}


def build_text_cache(
    captions: Iterable[str],
    text_cfg: TextConfig,
    root: str | Path,
    encoder: Any | None = None,
    reuse_root: str | Path | None = None,
    stand_ins_of_captions: dict[str, str] | None = None,
) -> Path:
    """Encode every distinct caption (plus "") into `root/<key>/` unless a complete cache there covers them.

    `encoder` defaults to `TextEncoder(text_cfg)`; anything with `encode(list[str]) -> TextEncoding` works. A
    complete cache of the same key in `reuse_root` that covers them is hard-linked (or copied) instead of encoding.
    `stand_ins_of_captions`: the stand-in weights the captions came from (ssmttm.stand_ins), for its provenance.
    """
    dtype = text_cfg.cache_dtype
    wanted = sorted({*captions, UNCOND_PROMPT}, key=caption_key)
    folder = cache_folder(root, text_cfg)
    if _covers(folder, wanted):
        log.info("text cache %s covers all %d captions", folder, len(wanted))
        return folder
    previous = cache_folder(reuse_root, text_cfg) if reuse_root is not None else None
    if previous is not None and _covers(previous, wanted):
        log.info("text cache %s covers all %d captions: kept", previous, len(wanted))
        with atomic_dir(folder) as tmp:
            shutil.copytree(previous, tmp, copy_function=link_or_copy, dirs_exist_ok=True)
        return folder
    encoder_stand_in = None
    if encoder is None:
        from ssmttm.text.encoder import TextEncoder, resolve_encoder

        encoder = TextEncoder(text_cfg)
        encoder_stand_in = stand_ins.hf_label(resolve_encoder(text_cfg.encoder))
    from safetensors.torch import save_file

    log.info("encoding %d captions into the text cache %s", len(wanted), folder)
    files: list[str] = []
    d_text = None
    with atomic_dir(folder) as tmp:
        for start in range(0, len(wanted), CAPTIONS_PER_FILE):
            chunk = wanted[start : start + CAPTIONS_PER_FILE]
            enc = encoder.encode(chunk)  # (n, S, E), (n, S)
            d_text = int(enc.hidden.shape[-1])
            tensors = {}
            for caption, hidden, mask in zip(chunk, enc.hidden.cpu(), enc.mask.cpu(), strict=True):
                key = caption_key(caption)
                tensors[key] = hidden[mask].to(DTYPES[dtype]).contiguous()  # (n_real, E)
                tensors[f"{key}.mask"] = mask.to(torch.uint8).contiguous()  # (S,)
            name = f"captions-{start // CAPTIONS_PER_FILE:05d}.safetensors"
            save_file(tensors, str(tmp / name), metadata={"format": CACHE_FORMAT})
            files.append(name)
        info = {
            "format": CACHE_FORMAT,
            "encoder": text_cfg.encoder,
            "max_length": text_cfg.max_length,
            "d_text": d_text,
            "dtype": dtype,
            "captions": [caption_key(c) for c in wanted],
            "files": files,
        }
        write_json(tmp / CACHE_FILE, info)
        write_provenance(
            tmp,
            "text_cache",
            asdict(text_cfg),
            None,
            cpu_numerics=True,
            dtype=dtype,
            n_captions=len(wanted),
            **stand_ins.provenance_fields(
                stand_ins_of_captions or {}, {f"text encoder {text_cfg.encoder}": encoder_stand_in}
            ),
        )
    return folder


class TextCache:
    """Read side of a cache folder: captions -> TextEncoding, like TextEncoder.encode. Files open lazily (mmap)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        info = read_cache_info(self.folder)
        if info is None:
            raise UserFacingError(
                f"text cache {self.folder}: {CACHE_FILE} not found; build it with "
                "`ssmttm text-cache` (or delete the folder to rebuild it)"
            )
        self.info = info
        self.max_length = int(info["max_length"])
        self.hidden_size = int(info["d_text"])
        self._handles: dict[str, Any] | None = None  # caption sha -> open safetensors file

    def __getstate__(self) -> dict[str, Any]:  # open files do not pickle (DDP spawn, DataLoader workers)
        return {**self.__dict__, "_handles": None}

    def _index(self) -> dict[str, Any]:
        if self._handles is None:
            from safetensors import safe_open

            self._handles = {}
            for name in self.info["files"]:
                handle = safe_open(str(self.folder / name), framework="pt", device="cpu")
                for key in handle.keys():
                    if not key.endswith(".mask"):
                        self._handles[key] = handle
        return self._handles

    def __contains__(self, caption: str) -> bool:
        return caption_key(caption) in self._index()

    def encode(self, captions: list[str]) -> TextEncoding:
        """captions (B) -> hidden (B, max_length, d_text) float32 zero at padding, mask (B, max_length) bool."""
        index = self._index()
        hidden = torch.zeros(len(captions), self.max_length, self.hidden_size)
        mask = torch.zeros(len(captions), self.max_length, dtype=torch.bool)
        for i, caption in enumerate(captions):
            key = caption_key(caption)
            handle = index.get(key)
            if handle is None:
                raise UserFacingError(
                    f"text cache {self.folder} has no encoding of caption {caption[:60]!r}; the "
                    "shards changed since it was built: rebuild it with `ssmttm text-cache`"
                )
            mask[i] = handle.get_tensor(f"{key}.mask").bool()
            hidden[i, mask[i]] = handle.get_tensor(key).float()
        return TextEncoding(hidden, mask)

    def uncond(self, batch_size: int = 1) -> TextEncoding:
        return self.encode([UNCOND_PROMPT]).expand(batch_size)


def text_cache(
    shards_dir: str | Path,
    text_cfgs: TextConfig | Sequence[TextConfig],
    out_dir: str | Path,
    encoder: Any | None = None,
) -> list[Path]:
    """The `text_cache` stage: encode every caption of the shards into `out_dir/<key>/`, one folder per distinct
    cache key among `text_cfgs` (the LM's text setting, then the refiner's); returns those folders.

    `encoder` (tests) replaces the configured encoder of every setting. `out_dir/provenance.json` records the
    settings, the shards folder and the hash of its `_manifest.json`. `out_dir` is replaced whole when complete; a
    cache of the previous `out_dir` that covers the captions is hard-linked into the new one, not encoded again.
    """
    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    configs = [text_cfgs] if isinstance(text_cfgs, TextConfig) else list(text_cfgs)
    distinct: dict[str, TextConfig] = {}
    for cfg in configs:
        distinct.setdefault(cache_key(cfg), cfg)
    captions = shard_captions(shards_dir)
    manifest = shards_dir / MANIFEST_FILE
    # One atomic folder, as every stage output: a kill leaves the previous complete `out_dir` (or none), never one
    # with some caches and no provenance. The caches of the previous `out_dir` that still cover the captions are
    # hard-linked into the new one rather than encoded again.
    with atomic_dir(out_dir) as tmp:
        upstream = stand_ins.inherited([shards_dir])
        built = [
            build_text_cache(captions, cfg, tmp, encoder=encoder, reuse_root=out_dir, stand_ins_of_captions=upstream)
            for cfg in distinct.values()
        ]
        write_provenance(
            tmp,
            "text_cache",
            asdict(configs[0]),
            None,
            cpu_numerics=True,
            shards=str(shards_dir),
            shards_manifest_sha256=sha256_file(manifest) if manifest.is_file() else None,
            cache=built[0].name,
            caches={key: asdict(cfg) for key, cfg in distinct.items()},
            n_captions=len(captions),
            **stand_ins.provenance_fields(stand_ins.inherited([shards_dir, *built])),
        )
    return [out_dir / folder.name for folder in built]


# --------------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", default="data/tokenize", help="token shards folder (default: data/tokenize)")
    parser.add_argument(
        "--out",
        default="data/text_cache",
        help="cache root; each cache goes to OUT/<key>/ (default: data/text_cache); `ssmttm train-lm --text-cache OUT` "
        "and `ssmttm train-refiner --text-cache OUT` read it",
    )


def run_from_args(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    require_token_shards(args.shards, "run `ssmttm tokenize` first or pass --shards with its output folder")
    for folder in text_cache(args.shards, params_text_configs(params), args.out):
        print(folder)
    return 0
